# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""plugbox.deploy.bootstrap: plugbox on the host, installed where it is missing or
older, as `plug bootstrap` installs it; then what plugbox.deploy.status says.

Runs on the controller: asks the host (plugbox.deploy.status), and where plugbox
is missing or is another version, copies the zipapp (built by plugbox.deploy.project)
over Ansible's own connection and runs plug's own install script on it
(plugbox_client.argv.remote_install: ~/.local/bin/plugbox of the login, and the
layout in the home).
"""

from __future__ import annotations

import shlex

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.plugbox.deploy.plugins.plugin_utils import controller

ARGUMENT_SPEC = dict(
    zipapp=dict(type="path", required=True),
    home=dict(type="str"),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            controller.require()
        except AnsibleError as error:
            return dict(result, failed=True, msg=str(error))
        from plugbox_client import argv as A
        from plugbox_server import __version__
        from plugbox_server import protocol as P

        status_args = dict(allow_missing=True)
        if args["home"]:
            status_args["home"] = args["home"]
        state = self._status(status_args, task_vars)
        if state.get("failed"):
            return dict(result, **state)
        current = state.get("installed") and state.get("plugbox_version") == __version__ \
            and state.get("protocol") == P.NUMBER
        if current:
            return dict(result, changed=False, **state)
        was = state.get("plugbox_version") if state.get("installed") else None
        if self._task.check_mode:
            return dict(result, changed=True, installed=bool(was), would_install=__version__, was_version=was,
                        msg="plugbox %s would be installed" % __version__, live=state.get("live"),
                        home=state.get("home"))

        remote_tmp = self._make_tmp_path()
        try:
            zipapp = self._connection._shell.join_path(remote_tmp, "plugbox")
            self._transfer_file(args["zipapp"], zipapp)
            command = "%s < %s" % (shlex.join(A.remote_install(args["home"])), shlex.quote(zipapp))
            done = self._low_level_execute_command(command, sudoable=False)
        finally:
            self._remove_tmp_path(remote_tmp)
        if done["rc"] != 0:
            said = (done.get("stderr") or "").strip().splitlines()
            return dict(result, failed=True, rc=done["rc"],
                        msg="could not install plugbox: %s" % (said[-1] if said else "exit %d" % done["rc"]))
        installed = [line for line in (done.get("stdout") or "").splitlines() if line]
        state = self._status(status_args, task_vars)
        if state.get("failed") or not state.get("installed"):
            return dict(result, failed=True, msg="plugbox was installed as %s but does not run: %s"
                        % (", ".join(installed), state.get("msg")))
        return dict(result, changed=True, installed_as=installed, was_version=was, **state)

    def _status(self, module_args, task_vars):
        state = self._execute_module(module_name="plugbox.deploy.status", module_args=module_args,
                                     task_vars=task_vars)
        state.pop("invocation", None)
        state.pop("changed", None)
        return state
