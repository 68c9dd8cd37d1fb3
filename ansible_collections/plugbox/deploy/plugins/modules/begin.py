#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: begin
short_description: Open a deploy or a rollback on the host; plugbox takes its lock and waits for the next step
version_added: "0.1.0"
description:
  - Starts, detached, the relay of the host's plugbox (C(plugbox --relay)), which starts C(plugbox --serve)
    and holds it open for the later steps of this deploy (M(plugbox.deploy.step)), then asks plugbox for a
    deploy or a rollback of several hosts, as C(plug) does.
  - For a deploy, plugbox takes the lock on C(deploy/) and answers with its newest version and its live one;
    it then waits for the version's name. For a rollback, it answers with its live version, that version's
    previous one and every version it has, and waits for the version to go to.
  - The relay's socket is C(deploy/.relay/socket) in the home, mode 0600 in a directory of mode 0700.
    When no step comes for O(idle_timeout) seconds, the relay closes plugbox's input, and plugbox does
    what it does when C(plug) goes away - before the switch it removes the new version, after it, it finishes.
  - A second deploy of the same home meanwhile is refused in one line.
options:
  home:
    description:
      - The service's home. Default E(PLUGBOX_HOME), else the login's E(HOME).
    type: path
  command:
    description: What to open.
    type: str
    choices: [deploy, rollback]
    default: deploy
  config:
    description: The text of the project's C(plugbox.toml), which travels with the version.
    type: str
  origin:
    description: Who deploys, from which machine and source, and why - kept in the version's record.
    type: dict
  user:
    description: Who is at the keyboard, for the host's log (E(PLUGBOX_USER)).
    type: str
  wait_lock:
    description: When another command holds the lock, wait up to this many seconds for it.
    type: float
    default: 0
  refresh:
    description: A rollback by the version's refresh hook instead of stop and start.
    type: bool
    default: false
  idle_timeout:
    description: Seconds without any step after which the relay ends the deploy.
    type: float
    default: 1800
  env_set:
    description:
      - An environment change instead of a deploy - the new version is made from the live version's files
        with these values set (C(plug env set)). Values are never shown, logged or returned.
    type: dict
  env_unset:
    description: An environment change - these names unset (C(plug env unset)).
    type: list
    elements: str
requirements:
  - Python 3.11 or newer on the host, and the plugbox zipapp (M(plugbox.deploy.bootstrap)).
attributes:
  check_mode:
    description: Takes the lock; skipped in check mode.
    support: none
  diff_mode:
    description: No diff.
    support: none
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Open the deploy
  plugbox.deploy.begin:
    config: "{{ lookup('ansible.builtin.file', 'plugbox.toml') }}"
  register: opened
"""

RETURN = r"""
newest:
  description: For a deploy, the newest version on the host, or null.
  returned: success
  type: str
live:
  description: The live version, or null.
  returned: success
  type: str
previous:
  description: For a rollback, the live version's previous one, or null.
  returned: success
  type: str
versions:
  description: For a rollback, every version on the host.
  returned: success
  type: list
  elements: str
home:
  description: The service's home, absolute.
  returned: always
  type: str
output:
  description: What plugbox said meanwhile, line by line.
  returned: always
  type: list
  elements: str
unchanged:
  description: The live version was made from the same artifact - the host made nothing, and the deploy ends there.
  returned: when true
  type: bool
rc:
  description: plugbox's exit status when it refused, else 0.
  returned: always
  type: int
"""

import os
import sys

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
            command=dict(type="str", choices=["deploy", "rollback"], default="deploy"),
            config=dict(type="str"),
            origin=dict(type="dict"),
            user=dict(type="str"),
            wait_lock=dict(type="float", default=0),
            refresh=dict(type="bool", default=False),
            idle_timeout=dict(type="float", default=1800),
            env_set=dict(type="dict", no_log=True),
            env_unset=dict(type="list", elements="str"),
        ),
        supports_check_mode=False,
    )
    params = module.params
    try:
        path = find_zipapp(params["home"], None)
        load(path)
    except PlugboxMissing as error:
        module.fail_json(msg=str(error), rc=127)

    from plugbox_server import protocol as P
    from plugbox_server import relay
    from plugbox_server.errors import PlugboxError

    home = home_of(params["home"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if params["user"]:
        env["PLUGBOX_USER"] = params["user"]
    deploy = params["command"] == "deploy"
    change = deploy and bool(params["env_set"] or params["env_unset"])
    values = {name: str(value) for name, value in (params["env_set"] or {}).items()}
    request = P.request(params["command"], home, gated=True, wait_lock=params["wait_lock"] or None,
                        config=params["config"] if deploy and not change else None,
                        env_set=values or None, env_unset=params["env_unset"] or None,
                        origin=params["origin"] if deploy else None,
                        refresh=params["refresh"] or None)
    try:
        relay.start([sys.executable, path], home, params["idle_timeout"], env=env)
        got = relay.exchange(home, request, until=(P.NEWEST if deploy else P.READY,))
    except PlugboxError as error:
        module.fail_json(msg=str(error), rc=error.code, home=home, output=[])
    answer = got.last() or {}
    key = P.NEWEST if deploy else P.READY
    if deploy and P.exit_code(answer) == 0 and answer.get(getattr(P, "UNCHANGED", "unchanged")):
        # The live version was made from the same artifact: the host made nothing and ends.
        module.exit_json(changed=False, rc=0, home=home, unchanged=True, live=answer.get("name"),
                         output=got.said, msg="the live version %s has this artifact already" % answer.get("name"))
    if key not in answer:
        module.fail_json(msg=answer.get(P.ERROR) or "plugbox ended without an answer",
                         rc=P.exit_code(answer) if P.EXIT in answer else 1, home=home, output=got.said)
    state = answer[key]
    if deploy:
        module.exit_json(changed=False, rc=0, home=home, newest=state.get("name"), live=state.get("live"),
                         output=got.said)
    module.exit_json(changed=False, rc=0, home=home, live=state.get("live"), previous=state.get("previous"),
                     versions=state.get("versions"), output=got.said)


if __name__ == "__main__":
    main()
