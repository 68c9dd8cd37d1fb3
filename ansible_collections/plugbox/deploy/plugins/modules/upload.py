#!/usr/bin/python
# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: upload
short_description: Send a version's files to the host as plug does, or compare them with the live version
version_added: "0.1.0"
description:
  - Runs C(rsync) on the controller with C(plug)'s own arguments - what the project's C(plugbox.toml) uploads
    (C(upload) or C(version_dir)), its C(exclude) patterns, its C(shared) paths left out, plugbox's own names
    protected - over C(ssh) with the connection settings Ansible uses for the host (address, port, user,
    private key file, O(ignore:ansible_ssh_args), O(ignore:ansible_ssh_common_args),
    O(ignore:ansible_ssh_extra_args), host key checking, timeout, and Ansible's own control socket, so that
    rsync rides the connection Ansible already has open).
  - With O(dest), uploads into that directory (the staging directory M(plugbox.deploy.step) C(name) made),
    files unchanged since O(link_dest) hard-linked from there.
  - With O(home), changes nothing - a dry run against the live version O(live) tells whether it already has
    these files. It has them when nothing would be sent or changed, as many files as live had when it was
    uploaded (O(live_files)) would be there, and the project's C(plugbox.toml) is live's
    (O(live_config_sha256)). What post_upload made in live is not counted. Then C(changed) is false.
  - Needs C(rsync) and plugbox (for its C(plugbox_client)) on the controller, C(rsync) on the host, and the
    C(ssh) or C(local) connection plugin.
  - This is an action plugin; the module file only documents it.
options:
  project:
    description: The project's C(plugbox.toml), or the directory that holds it.
    type: path
    required: true
  dest:
    description: The directory on the host that receives the version's files.
    type: str
  link_dest:
    description: A directory on the host to hard-link unchanged files from, relative to O(dest) (C(../LIVE)).
    type: str
  home:
    description: The service's home on the host, absolute; compare with its live version instead of uploading.
    type: str
  live:
    description: The live version to compare with; none means a first deploy.
    type: str
  live_files:
    description: How many files the live version had as uploaded (RV(plugbox.deploy.status#module:live_files)).
    type: int
  live_config_sha256:
    description: The sha256 of the live version's C(plugbox.toml).
    type: str
  live_artifact_sha256:
    description: The sha256 of the artifact the live version was made from, if any.
    type: str
  contents:
    description:
      - What the version is made of, as M(plugbox.deploy.project) returns it (RV(plugbox.deploy.project#module:contents)).
        With an artifact, the comparison is the host's own - live was made from the same artifact (its sha256).
      - Default, the tree the project's C(plugbox.toml) uploads.
    type: dict
attributes:
  check_mode:
    description: An upload becomes C(rsync --dry-run); a comparison changes nothing in any mode.
    support: full
  diff_mode:
    description: A comparison shows what a deploy would change, file by file.
    support: full
requirements:
  - rsync on the controller and on the host; plugbox in the Python that runs Ansible.
notes:
  - "Privilege escalation (C(become)) is refused: the files would belong to the login, not to the user become names."
  - Password authentication is refused; use a key.
author:
  - Plugbox developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Upload into the staging directory, unchanged files hard-linked from live
  plugbox.deploy.upload:
    project: /src/hello
    dest: /home/hello/deploy/.new-20261121T090000Z
    link_dest: ../20261120T100000Z
"""

RETURN = r"""
unchanged:
  description: With O(home), whether the live version already has these files.
  returned: when comparing
  type: bool
changes:
  description: With O(home), what differs, as rsync itemizes it (at most 200 lines).
  returned: when comparing
  type: list
  elements: str
sent:
  description: How many files were sent (new or changed).
  returned: when uploading
  type: int
linked:
  description: How many files were hard-linked from O(link_dest).
  returned: when uploading
  type: int
"""
