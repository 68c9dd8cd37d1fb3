# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""Decisions a deploy or rollback of several hosts makes once, on the controller, with
plug's own code: one version name for all, one version to roll back to."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.plugbox.deploy.plugins.plugin_utils import controller


def new_version_name(newest):
    """The new version's name, after every host's newest (a list; nulls ignored)."""
    controller.require()
    from plugbox_server.errors import PlugboxError
    from plugbox_server.names import new_version_name as name

    try:
        return name([n for n in newest if n])
    except PlugboxError as error:
        raise AnsibleFilterError(str(error)) from None


def rollback_target(states, version=None):
    """{"target": NAME} or {"error": TEXT}: the version every host goes to, from each
    host's {"live", "previous", "versions"} (a dict by host)."""
    controller.require()
    from plugbox_client.driver import rollback_target as target
    from plugbox_server.errors import PlugboxError

    try:
        return {"target": target({host: (s.get("live"), s.get("previous"), set(s.get("versions") or ()))
                                  for host, s in states.items()}, version or None)}
    except PlugboxError as error:
        return {"error": str(error)}


class FilterModule:
    def filters(self):
        return {"new_version_name": new_version_name, "rollback_target": rollback_target}
