#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bootstrap
short_description: Install plugbox on the host where it is missing or another version, as plug bootstrap does
version_added: "0.1.0"
description:
  - Asks the host's plugbox (M(plugbox.deploy.status)); where there is none, or it is another version than the
    controller's, copies the zipapp O(zipapp) over Ansible's connection and runs C(plug bootstrap)'s own install
    on the host - C(~/.local/bin/plugbox) of the login, and C(deploy/), C(shared/) and C(config/) in the home.
    The host needs Python 3.11 or newer and rsync, and is refused in one line without them.
  - Returns what M(plugbox.deploy.status) returns, after the install.
  - This is an action plugin; the module file only documents it.
options:
  zipapp:
    description: The plugbox zipapp built on the controller (M(plugbox.deploy.project) RV(plugbox.deploy.project#module:zipapp)).
    type: path
    required: true
  home:
    description: The service's home. Default E(PLUGBOX_HOME), else the login's E(HOME).
    type: str
attributes:
  check_mode:
    description: Says whether it would install, and installs nothing.
    support: full
  diff_mode:
    description: No diff.
    support: none
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Plugbox on every host
  plugbox.deploy.bootstrap:
    zipapp: "{{ project.zipapp }}"
"""

RETURN = r"""
installed_as:
  description: Where plugbox was installed, when it was.
  returned: changed
  type: list
  elements: str
was_version:
  description: The version of plugbox the host had before, or null.
  returned: changed
  type: str
"""
