#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: step
short_description: One step of a deploy or rollback that M(plugbox.deploy.begin) opened on the host
version_added: "0.1.0"
description:
  - Hands the host's plugbox, through the relay M(plugbox.deploy.begin) started, the message of one step
    of a deploy of several hosts, and returns plugbox's answer and what it printed meanwhile (its
    messages, the hooks' output). The steps, in order, are those of C(plug deploy) with several hosts.
  - C(name) - the new version's name, the same on every host; plugbox makes the staging directory and
    answers with its path (upload into it with M(plugbox.deploy.upload)). For an environment change,
    plugbox fills the version from live's files itself, runs post_upload and answers C(prepared).
  - C(uploaded) - the upload is complete; plugbox puts the version in place and runs its post_upload.
  - C(release) - the release step (C([hooks] release)), once per deploy, on one host.
  - C(switch) - stop or refresh, switch, start, check. When the check fails, plugbox switches back by
    itself, and the task fails.
  - C(commit) - keep the switch; C(revert) - switch back a version that came up well.
  - C(abort) - call the deploy off; before the switch, the new version is removed. Without an open
    session, nothing to do.
  - C(version) - for a rollback, the version to go to (O(value)).
  - C(end) - close plugbox's input, as C(plug) going away does.
options:
  home:
    description:
      - The service's home. Default E(PLUGBOX_HOME), else the login's E(HOME).
    type: path
  step:
    description: The step.
    type: str
    required: true
    choices: [name, uploaded, release, switch, commit, revert, abort, version, end]
  value:
    description: The version name, for O(step=name) and O(step=version).
    type: str
requirements:
  - A deploy or rollback opened by M(plugbox.deploy.begin) on the host.
attributes:
  check_mode:
    description: Every step but O(step=abort) changes the host; skipped in check mode.
    support: none
  diff_mode:
    description: O(step=commit) and O(step=version) return the live version before and after.
    support: full
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Switch
  plugbox.deploy.step:
    step: switch
"""

RETURN = r"""
answer:
  description: The payload of plugbox's answer (for O(step=name), the staging directory's C(path) and the C(live) version).
  returned: success
  type: dict
live:
  description: After O(step=commit) or O(step=version), the live version.
  returned: when known
  type: str
was:
  description: After O(step=commit) or O(step=version), the version that was live before.
  returned: when known
  type: str
output:
  description: What plugbox said meanwhile, line by line (its messages and the hooks' output).
  returned: always
  type: list
  elements: str
answered:
  description: Which answer plugbox gave (C(upload), C(prepared), C(released), C(switched)).
  returned: success, before the end
  type: str
rc:
  description: plugbox's exit status when it failed or refused, else 0.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.plugbox.deploy.plugins.module_utils.plugbox import (
    PlugboxMissing,
    find_zipapp,
    home_of,
    load,
    steps,
)

ENDING = ("abort", "end")   # steps that mean "no more": nothing open is not a failure


def main():
    module = AnsibleModule(
        argument_spec=dict(
            home=dict(type="path"),
            step=dict(type="str", required=True,
                      choices=["name", "uploaded", "release", "switch", "commit", "revert", "abort",
                               "version", "end"]),
            value=dict(type="str"),
        ),
        supports_check_mode=False,
    )
    step, value = module.params["step"], module.params["value"]
    try:
        load(find_zipapp(module.params["home"], None))
    except PlugboxMissing as error:
        module.fail_json(msg=str(error), rc=127, output=[])

    from plugbox_server import protocol as P
    from plugbox_server import relay
    from plugbox_server.errors import PlugboxError

    table = steps()
    if step == "release" and "release" not in table:
        module.exit_json(changed=False, rc=0, output=[], answer={"ran": False,
                         "why": "the plugbox on this host has no release step"})
    message, until, end = table[step]
    home = home_of(module.params["home"])
    try:
        got = relay.exchange(home, message(value) if message else None, until=until, end=end)
    except relay.NoSession as error:
        if step in ENDING:
            module.exit_json(changed=False, rc=0, output=[], msg=str(error))
        module.fail_json(msg="%s; see the host's deploy/.log (plugbox log)" % error, rc=error.code, output=[])
    except PlugboxError as error:
        module.fail_json(msg=str(error), rc=error.code, output=[])

    answer = got.last() or {}
    wanted = [key for key in until if key in answer and key != P.EXIT]
    if wanted:
        module.exit_json(changed=step != "release" or bool(answer[wanted[0]].get("ran")),
                         answer=answer[wanted[0]], answered=wanted[0], output=got.said, rc=0)
    if P.EXIT not in answer:
        module.fail_json(msg="plugbox ended (exit %s) without answering the step %s" % (got.ended, step),
                         output=got.said, rc=got.ended or 1)
    code = P.exit_code(answer)
    if step in ENDING:
        # Called off: plugbox says why it stopped, which is what was asked.
        module.exit_json(changed=False, msg=answer.get(P.ERROR) or "ended", output=got.said, rc=0)
    if code != 0:
        module.fail_json(msg=answer.get(P.ERROR) or "plugbox failed (exit %d)" % code, output=got.said, rc=code)
    live, was = answer.get("name"), answer.get("was")
    diff = {"before": "live: %s\n" % (was or "none"), "after": "live: %s\n" % (live or "none")}
    module.exit_json(changed=live != was, live=live, was=was, diff=diff, output=got.said, rc=0)


if __name__ == "__main__":
    main()
