# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""plugbox.deploy.upload: a version's files sent to the host as plug sends them, or
compared with the live version there.

Runs on the controller: plug's own upload (plugbox_client.upload: what the project's
plugbox.toml uploads, its excludes, shared paths left out, plugbox's own names
protected) over ssh with the connection settings Ansible uses for the host and
its control socket (plugin_utils/ssh.py). See plugins/modules/upload.py for the
options.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.plugbox.deploy.plugins.plugin_utils import controller, ssh

DIFF_LINES = 200   # what --diff shows of a large change

ARGUMENT_SPEC = dict(
    project=dict(type="path", required=True),
    dest=dict(type="str"),
    link_dest=dict(type="str"),
    home=dict(type="str"),
    live=dict(type="str"),
    live_files=dict(type="int"),
    live_config_sha256=dict(type="str"),
    live_artifact_sha256=dict(type="str"),
    contents=dict(type="dict"),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC, mutually_exclusive=[("dest", "home")],
            required_one_of=[("dest", "home")], required_by={"link_dest": "dest", "live": "home"})
        try:
            config = controller.config(args["project"])
            target = ssh.target(self._connection, self._play_context)
        except AnsibleError as error:
            return dict(result, failed=True, msg=str(error))
        if args["home"] is not None:
            return self._compare(result, config, target, args)
        return self._upload(result, config, target, args)

    def _contents(self, config, args):
        """What the version is made of: as plugbox.deploy.project found it, else the tree of plugbox.toml."""
        from plugbox_client import artifact, upload

        given = args["contents"]
        if not given:
            return upload.contents(config)
        made = given.get("artifact")
        return upload.Contents(list(given["paths"]), tuple(given.get("exclude") or ()),
                               artifact.Artifact(**made) if made else None)

    def _rsync(self, config, target, dest, args, link_dest=None, dry_run=False):
        """plug's rsync; (count, None) or (None, the failure's message)."""
        from plugbox_client import upload
        from plugbox_server.errors import PlugboxError

        rsh = None if target.is_local else shlex.join(target.ssh)
        said = []
        try:
            count = upload.rsync(self._contents(config, args), target.remote_path(dest), config=config, rsh=rsh,
                                 link_dest=link_dest, dry_run=dry_run, said=said)
        except PlugboxError as error:
            return None, "%s%s" % (error.message, (": " + said[-1]) if said else "")
        return count, None

    def _upload(self, result, config, target, args):
        from plugbox_client import upload

        count, failure = self._rsync(config, target, args["dest"].rstrip("/") + "/", args, args["link_dest"],
                                     dry_run=self._task.check_mode)
        if failure:
            return dict(result, failed=True, msg="upload to %s failed: %s" % (target.remote_path(args["dest"]),
                                                                              failure))
        return dict(result, changed=True, sent=count.sent, linked=count.linked, copied=count.copied,
                    bytes_sent=count.sent_size, wire_bytes=count.wire_bytes, msg=count.files())

    def _compare(self, result, config, target, args):
        """Whether the live version already has these files (and this plugbox.toml):
        a dry run against it, which changes nothing anywhere."""
        from plugbox_client import upload
        from plugbox_server.layout import DEPLOY
        from plugbox_server.names import validate_version

        text = config.path.read_bytes()
        same_config = hashlib.sha256(text).hexdigest() == args["live_config_sha256"]
        if not args["live"]:
            return dict(result, changed=True, unchanged=False, msg="no live version: the first deploy",
                        diff=dict(before="live: none\n", after="live: a new version\n"))
        validate_version(args["live"])
        made = (args["contents"] or {}).get("artifact")
        if made:  # as the host decides it: the live version was made from this artifact
            same = made["sha256"] == args["live_artifact_sha256"]
            return dict(result, changed=not same, unchanged=same, changes=[] if same else [made["name"]],
                        msg="the live version %s was made from %s" % (args["live"], made["name"]) if same else
                        "the live version %s was not made from %s" % (args["live"], made["name"]))
        count, failure = self._rsync(config, target, posixpath.join(args["home"], DEPLOY, args["live"]) + "/",
                                     args, dry_run=True)
        if failure:
            return dict(result, failed=True, msg="could not compare with %s: %s" % (args["live"], failure))
        same = same_config and upload.unchanged(count, args["live_files"])
        changes = list(count.changes)
        if not same_config:
            changes.insert(0, "plugbox.toml differs")
        files = count.sent + count.linked + count.copied + 1
        if args["live_files"] is not None and files != args["live_files"]:
            changes.append("%d files here, %d in live as uploaded" % (files, args["live_files"]))
        result.update(changed=not same, unchanged=same, changes=changes[:DIFF_LINES],
                      msg="the live version %s has these files" % args["live"] if same else
                      "differs from the live version %s: %s" % (args["live"], count.files()))
        if not same:
            shown = changes[:DIFF_LINES] + (["... %d more" % (len(changes) - DIFF_LINES)]
                                            if len(changes) > DIFF_LINES else [])
            result["diff"] = dict(prepared="live version %s, and what a deploy would change:\n%s\n"
                                  % (args["live"], "\n".join(shown)))
        return result
