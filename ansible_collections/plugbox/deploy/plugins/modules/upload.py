#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: upload
short_description: rsync a directory of the controller into a directory on the host, hard-linking unchanged files
version_added: "0.1.0"
description:
  - Runs C(rsync) on the controller, over C(ssh) with the connection settings Ansible uses for the host
    (address, port, user, private key file, O(ignore:ansible_ssh_args), O(ignore:ansible_ssh_common_args),
    O(ignore:ansible_ssh_extra_args), host key checking, timeout, and Ansible's own control socket, so that
    rsync rides the connection Ansible already has open).
  - With O(link_dest), a file that is the same in a C(link_dest) directory on the host is hard-linked from
    there instead of sent, as C(rsync --link-dest) does.
  - Needs C(rsync) on the controller and on the host, and the C(ssh) or C(local) connection plugin.
  - This is an action plugin; the module file only documents it.
options:
  src:
    description:
      - The directory on the controller whose contents are sent. A relative path is taken from the playbook's directory.
    type: path
    required: true
  dest:
    description:
      - The directory on the host that receives them; relative to the login's home unless absolute.
      - Its parent must exist.
    type: str
    required: true
  link_dest:
    description:
      - Directories on the host to hard-link unchanged files from (C(rsync --link-dest)), at most 20.
      - A relative one is taken from O(dest), as rsync does.
    type: list
    elements: str
    default: []
  exclude:
    description: rsync exclude patterns.
    type: list
    elements: str
    default: []
  delete:
    description: Delete files in O(dest) that O(src) does not have.
    type: bool
    default: false
  rsync_path:
    description: The rsync to run on the host.
    type: str
    default: rsync
attributes:
  check_mode:
    description: Can run in check mode.
    support: full
    details: rsync C(--dry-run); nothing is changed on the host.
  diff_mode:
    description: No diff.
    support: none
requirements:
  - rsync on the controller and on the host.
notes:
  - "Privilege escalation (C(become)) is refused: the files would belong to the login, not to the user become names."
  - Password authentication is refused; use a key.
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Upload a new tree next to the live one, sharing every unchanged file with it
  plugbox.deploy.upload:
    src: build/
    dest: deploy/.new-20261121T090000Z
    link_dest:
      - ../live
"""

RETURN = r"""
cmd:
  description: The rsync command that ran, as a list.
  returned: always
  type: list
  elements: str
sent:
  description: How many files were sent (new or changed).
  returned: success
  type: int
linked:
  description: How many files were hard-linked from a O(link_dest) directory.
  returned: success
  type: int
items:
  description: rsync's itemized list of changes (C(--itemize-changes)), one line per file, unchanged ones included.
  returned: success
  type: list
  elements: str
"""
