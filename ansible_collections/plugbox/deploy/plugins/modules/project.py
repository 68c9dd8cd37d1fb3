#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: project
short_description: Read the project's plugbox.toml, run its prepare, and build plugbox for the hosts, on the controller
version_added: "0.1.0"
description:
  - Runs on the controller, once per deploy (C(run_once)). Reads C(plugbox.toml) as C(plug) does - the
    inventory, not C(host) or C(hosts), says where - runs C([build] prepare) in the project's directory (not in
    check mode), builds the plugbox zipapp the hosts get, and says who deploys, from which machine and source.
  - Needs plugbox installed in the Python that runs Ansible, and refuses in one line without it.
  - This is an action plugin; the module file only documents it.
options:
  project:
    description: The project's directory (its C(plugbox.toml)), or the file itself.
    type: path
    required: true
  message:
    description: Why - kept in each version's record and the hosts' logs.
    type: str
  artifact:
    description:
      - An artifact to deploy (C(plug deploy --artifact)), built already - prepare does not run. Default
        C([build] artifact) of C(plugbox.toml), if any.
    type: path
  build:
    description: Run prepare, build the zipapp, and unpack the artifact; false only reads C(plugbox.toml).
    type: bool
    default: true
attributes:
  check_mode:
    description: Reads and builds plugbox, runs no prepare.
    support: full
  diff_mode:
    description: No diff.
    support: none
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: The project, once
  plugbox.deploy.project:
    project: /src/hello
  run_once: true
  register: project
"""

RETURN = r"""
config_path:
  description: The C(plugbox.toml) read.
  returned: success
  type: str
config_text:
  description: Its text, which travels with the version.
  returned: success
  type: str
home:
  description: The home C(plugbox.toml) names, or null.
  returned: success
  type: str
release:
  description: Whether C(plugbox.toml) has a release step (C([hooks] release)).
  returned: success
  type: bool
release_host:
  description: C([release] host) of C(plugbox.toml), or null.
  returned: success
  type: str
zipapp:
  description: The plugbox zipapp built for the hosts.
  returned: when O(build)
  type: str
contents:
  description: What every version is made of - rsync's sources and excludes, and the artifact unpacked (its name, sha256, files).
  returned: when O(build)
  type: dict
origin:
  description: Who deploys, from which machine, revision and branch, and why.
  returned: success
  type: dict
output:
  description: What prepare printed.
  returned: always
  type: list
  elements: str
"""
