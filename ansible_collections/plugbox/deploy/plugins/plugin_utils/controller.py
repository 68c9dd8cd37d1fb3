# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""plugbox on the controller: the action plugins and filters build, upload and decide
with plug's own code, imported from the Python that runs Ansible.

The collection itself needs nothing beyond ansible-core; the controller needs
plugbox installed in Ansible's Python (`python -m pip install plugbox` with that
python), which is what builds the hosts' plugbox and knows plugbox.toml.
"""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleError


def require():
    """Import plugbox's client, or refuse in one line that says where to install it."""
    try:
        import plugbox_client.config  # noqa: F401
        import plugbox_server  # noqa: F401
    except ImportError:
        raise AnsibleError(
            "plugbox is not installed in the Python that runs Ansible (%s): install it there, "
            "`%s -m pip install plugbox`; plugbox.deploy builds the hosts' plugbox and uploads with it"
            % (sys.executable, sys.executable)) from None


def config(project):
    """The project's plugbox.toml (PROJECT, or PROJECT/plugbox.toml), read as plug reads it,
    the inventory saying where; AnsibleError with plug's one line when it is refused."""
    require()
    from plugbox_client.config import load_config
    from plugbox_server.errors import PlugboxError
    from plugbox_server.layout import CONFIG

    path = os.path.join(project, CONFIG) if os.path.isdir(project) else project
    try:
        return load_config(_path(path), engine=True)
    except PlugboxError as error:
        raise AnsibleError(str(error)) from None


def _path(path):
    from pathlib import Path

    return Path(os.path.abspath(os.path.expanduser(path)))
