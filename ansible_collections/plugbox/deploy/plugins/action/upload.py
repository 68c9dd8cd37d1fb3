# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""plugbox.deploy.upload: rsync from the controller to the host, unchanged files hard-linked.

Runs on the controller; see plugins/modules/upload.py for the options and
plugin_utils/ssh.py for how the ssh command is derived from the connection.
"""

from __future__ import annotations

import re
import shlex
import subprocess

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.plugbox.deploy.plugins.plugin_utils import ssh

MAX_LINK_DEST = 20   # rsync's own limit on --link-dest directories
# An itemized line (rsync -i); rsync says other things on stdout ("created directory X").
ITEM = re.compile(r"^([<>ch.][fdLDSp]|\*)")

ARGUMENT_SPEC = dict(
    src=dict(type="path", required=True),
    dest=dict(type="str", required=True),
    link_dest=dict(type="list", elements="str", default=[]),
    exclude=dict(type="list", elements="str", default=[]),
    delete=dict(type="bool", default=False),
    rsync_path=dict(type="str", default="rsync"),
)


def rsync_argv(src, dest, target, link_dest=(), exclude=(), delete=False, rsync_path="rsync",
               dry_run=False):
    """The rsync command line: SRC's contents into DEST on the host of TARGET."""
    argv = ["rsync", "-a", "--modify-window=-1", "-ii", "--out-format=%i %n%L"]
    if not target.is_local:
        # -e is split by rsync itself, which reads shell-like quotes as plug relies on too.
        argv += ["--protect-args", "-e", shlex.join(target.ssh), "--rsync-path", rsync_path]
    if dry_run:
        argv.append("--dry-run")
    if delete:
        argv.append("--delete")
    argv += ["--link-dest=%s" % path for path in link_dest]
    argv += ["--exclude=%s" % pattern for pattern in exclude]
    return [*argv, "--", src.rstrip("/") + "/", target.remote_path(dest)]


def count(items):
    """(sent, linked, changed) from rsync's itemized lines (`%i %n`, with -ii).

    The first letter says what was done: < > sent, c created, h hard-linked,
    * deleted (the rest of the line is a message), . nothing but maybe attributes,
    which the letters after the file type name (dots and spaces: none changed).
    """
    sent = linked = 0
    changed = False
    for line in items:
        code = line.split(" ", 1)[0] if not line.startswith("*") else "*"
        if code[:2] == "hf":
            linked += 1
        elif code[:2] in ("<f", ">f"):
            sent += 1
        if code[0] != "." or code[2:].strip(". "):
            changed = True
    return sent, linked, changed


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if len(args["link_dest"]) > MAX_LINK_DEST:
            return dict(result, failed=True, msg="at most %d link_dest directories" % MAX_LINK_DEST)
        try:
            target = ssh.target(self._connection, self._play_context)
        except AnsibleError as error:
            return dict(result, failed=True, msg=str(error))
        src = self._loader.path_dwim(args["src"])
        argv = rsync_argv(src, args["dest"], target, args["link_dest"], args["exclude"],
                          args["delete"], args["rsync_path"], dry_run=self._task.check_mode)
        result["cmd"] = argv
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", check=False)
        except FileNotFoundError:
            return dict(result, failed=True, msg="rsync is not installed on the controller")
        result["rc"] = done.returncode
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()
            return dict(result, failed=True, stderr=done.stderr,
                        msg="rsync to %s failed (exit %d): %s" % (
                            target.remote_path(args["dest"]), done.returncode,
                            said[-1] if said else "no message"))
        items = [line for line in done.stdout.splitlines() if ITEM.match(line)]
        sent, linked, changed = count(items)
        result.update(changed=changed, sent=sent, linked=linked, items=items)
        return result
