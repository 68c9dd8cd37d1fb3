#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: status
short_description: The versions Plugbox keeps of a service on the host
version_added: "0.1.0"
description:
  - Reads the versions in O(home)/deploy/ with Plugbox's own code, imported from the plugbox
    zipapp that C(plug bootstrap) installs on the host, and returns what C(plugbox status --json) prints.
  - Changes nothing on the host.
  - Also what a deploy compares with - the live version's number of files as uploaded and the
    sha256 of its C(plugbox.toml) - and whether plugbox is installed at all.
options:
  home:
    description:
      - The service's home, holding C(deploy/).
      - Default, as for C(plugbox) itself, E(PLUGBOX_HOME), else the login's E(HOME).
    type: path
  plugbox:
    description:
      - The plugbox zipapp to import Plugbox from.
      - Default, as C(plug) looks, O(home)/.local/bin/plugbox, then the login's C(~/.local/bin/plugbox).
    type: path
  allow_missing:
    description:
      - Without plugbox on the host, return RV(installed=false) instead of failing.
    type: bool
    default: false
requirements:
  - Python 3.11 or newer on the host.
  - The plugbox zipapp on the host (C(plug bootstrap)).
attributes:
  check_mode:
    description: Can run in check mode; it changes nothing in any mode.
    support: full
  diff_mode:
    description: No diff.
    support: none
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: What is live on each host
  plugbox.deploy.status:
    home: /srv/hello
  register: state

- name: Show it
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ state.live }}"
"""

RETURN = r"""
installed:
  description: Whether a plugbox zipapp was found; with O(allow_missing), nothing else is returned when it is not.
  returned: always
  type: bool
protocol:
  description: The number of the protocol the host's plugbox speaks.
  returned: success
  type: int
live_files:
  description: How many files the live version had as uploaded (its record), or null.
  returned: success
  type: int
live_config_sha256:
  description: The sha256 of the live version's C(plugbox.toml), or null.
  returned: success
  type: str
live_artifact_sha256:
  description: The sha256 of the artifact the live version was made from, or null.
  returned: success
  type: str
home:
  description: The service's home, absolute.
  returned: success
  type: str
  sample: /srv/hello
live:
  description: The name of the live version, or null when there is none.
  returned: success
  type: str
  sample: 20261121T090000Z
versions:
  description: Every version, newest first, as C(plugbox status --json) lists them.
  returned: success
  type: list
  elements: dict
plugbox_version:
  description: The version of the plugbox zipapp that answered.
  returned: success
  type: str
  sample: 0.1.0
plugbox_path:
  description: The plugbox zipapp that answered.
  returned: success
  type: str
  sample: /home/hello/.local/bin/plugbox
"""

import hashlib

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plugbox.deploy.plugins.module_utils.plugbox import (
    PlugboxMissing,
    find_zipapp,
    home_of,
    load,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            home=dict(type="path"),
            plugbox=dict(type="path"),
            allow_missing=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    try:
        path = find_zipapp(module.params["home"], module.params["plugbox"])
        plugbox_server = load(path)
    except PlugboxMissing as error:
        if module.params["allow_missing"] and not module.params["plugbox"]:
            module.exit_json(changed=False, installed=False, msg=str(error))
        module.fail_json(msg=str(error), installed=False)

    from pathlib import Path

    from plugbox_server import layout, operations
    from plugbox_server import protocol as P
    from plugbox_server.errors import PlugboxError

    try:
        home = Path(home_of(module.params["home"]))
        live, rows = operations.status(home)
    except PlugboxError as error:
        module.fail_json(msg=str(error), installed=True, plugbox_path=path)
    record = next((row.record or {} for row in rows if row.name == live), {})
    config = home / layout.DEPLOY / live / layout.CONFIG if live else None
    try:
        with open(config, "rb") as f:
            config_sha256 = hashlib.sha256(f.read()).hexdigest()
    except (OSError, TypeError):
        config_sha256 = None
    module.exit_json(
        changed=False,
        installed=True,
        home=str(home),
        live=live,
        versions=[vars(row) for row in rows],
        live_files=record.get("files"),
        live_config_sha256=config_sha256,
        live_artifact_sha256=record.get("artifact_sha256"),
        plugbox_version=plugbox_server.__version__,
        protocol=P.NUMBER,
        plugbox_path=path,
    )


if __name__ == "__main__":
    main()
