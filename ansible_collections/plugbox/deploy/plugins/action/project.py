# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""plugbox.deploy.project: what a deploy needs from the controller, once: plugbox.toml
read, [build] prepare run, plugbox built for the hosts, who deploys and from what."""

from __future__ import annotations

import hashlib
import os
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.plugbox.deploy.plugins.plugin_utils import controller

ARGUMENT_SPEC = dict(
    project=dict(type="path", required=True),
    message=dict(type="str"),
    artifact=dict(type="path"),
    build=dict(type="bool", default=True),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            config = controller.config(args["project"])
        except AnsibleError as error:
            return dict(result, failed=True, msg=str(error))

        from pathlib import Path

        from plugbox_client import bootstrap, driver, upload
        from plugbox_server import __version__
        from plugbox_server import protocol as P
        from plugbox_server.errors import PlugboxError

        said = []
        text = config.path.read_text(encoding="utf-8")
        given = Path(os.path.abspath(args["artifact"])) if args["artifact"] else None
        contents = None
        try:
            # As plug: an artifact given was built already, and prepare does not run.
            if args["build"] and not self._task.check_mode and given is None:
                chunks = []
                try:
                    driver.prepare(config, "any host", out=lambda text: chunks.append(text.rstrip("\n") + "\n"),
                                   err=chunks.append)
                finally:
                    said += "".join(chunks).splitlines()
            zipapp = None
            if args["build"]:
                os.makedirs(C.DEFAULT_LOCAL_TMP, exist_ok=True)
                zipapp = str(bootstrap.build(Path(tempfile.mkdtemp(prefix="plugbox-", dir=C.DEFAULT_LOCAL_TMP),
                                                  "plugbox")))
                # What every host's version is made of, once: an artifact unpacked here.
                made = upload.contents(config, given, lambda: Path(tempfile.mkdtemp(
                    prefix="plugbox-artifact-", dir=C.DEFAULT_LOCAL_TMP)))
                contents = dict(paths=made.paths, exclude=list(made.exclude),
                                artifact=vars(made.artifact) if made.artifact else None)
            origin = driver.origin(config, args["message"], made.artifact if contents else None)
        except PlugboxError as error:
            return dict(result, failed=True, msg=str(error), output=said)
        result.update(
            changed=False,
            config_path=str(config.path),
            config_text=text,
            config_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            home=config.home,
            release=bool(config.hooks.get("release")),
            release_host=getattr(config, "release_host", None),
            origin=origin,
            user=origin["user"],
            zipapp=zipapp,
            contents=contents,
            plugbox_version=__version__,
            protocol=P.NUMBER,
            output=said,
        )
        return result
