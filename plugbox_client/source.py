"""Where a version comes from: the git revision, branch and state of the project.

Runs git through transport.run (read-only commands: rev-parse, status), never
writes. Outside a git checkout, or without git, there is nothing to tell: {}.
"""

from pathlib import Path

from plugbox_client import transport
from plugbox_server.errors import PlugboxError


def describe(project: Path) -> dict:
    """{"revision", "branch", "dirty"} of the checkout `project` is in, or {}.

    branch is None on a detached HEAD; dirty is True when the working tree or
    the index has uncommitted changes (untracked files count: they may be
    uploaded).
    """
    revision = _git(project, "rev-parse", "--verify", "-q", "HEAD")
    if not revision:
        return {}
    branch = _git(project, "symbolic-ref", "-q", "--short", "HEAD")
    status = _git(project, "status", "--porcelain", "--untracked-files=normal", allow_empty=True)
    return {"revision": revision, "branch": branch or None,
            "dirty": None if status is None else bool(status.strip())}


def _git(project: Path, *args: str, allow_empty: bool = False) -> str | None:
    try:
        result = transport.run(["git", "-C", str(project), *args], out=transport.CAPTURE,
                               err=transport.DEVNULL)
    except PlugboxError:  # git is not installed
        return None
    if result.code != 0:
        return None
    text = result.stdout.strip()
    return text if text or allow_empty else None
