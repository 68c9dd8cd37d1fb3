"""One exception base for every expected failure, with its exit code.

The CLI catches PlugboxError alone and prints `plugbox: <message>` (plus the hint,
when there is one) on stderr; anything else is a bug and keeps its traceback.
"""

import os
import re

# Exit codes; 2 is bad usage (typer's own), 255 belongs to ssh and is never used.
REFUSED = 1      # refused or failed, nothing changed; also: `check` found problems
USAGE = 2
BUSY = 3         # another plugbox command holds the lock on deploy/
HOOK_FAILED = 4  # a hook failed; nothing was switched, or live was switched back
REVERT_FAILED = 5  # a hook failed and bringing the previous version back failed too
# `plugbox exec` could not start its command: the statuses a shell gives.
COMMAND_NOT_RUN = 126
COMMAND_NOT_FOUND = 127


class PlugboxError(Exception):
    code = REFUSED

    def __init__(self, message: str, hint: str | None = None, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class Busy(PlugboxError):
    code = BUSY


class HookFailed(PlugboxError):
    code = HOOK_FAILED


class Aborted(PlugboxError):
    """The caller went away (or gave up) before the upload was complete."""


class Reverted(HookFailed):
    """The caller asked to switch back a version that came up well: another host
    of the same deploy failed, and the fleet must not stay split."""


# The plug command that does what a hint's plugbox command does. plug sets
# PLUGBOX_CLIENT=plug: its user, on another machine, types plug, not plugbox.
_PLUG_COMMANDS = {
    "plugbox status": "plug status",
    "plugbox check": "plug check",
    "plugbox check --repair": "plug check --repair",
    "plugbox rollback-to VERSION": "plug rollback VERSION",
    "plugbox upgrade-to VERSION": "plug deploy",
}


def for_caller(text: str) -> str:
    """`text` with its `plugbox ...` hints named as the caller would type them."""
    if os.environ.get("PLUGBOX_CLIENT") != "plug":
        return text
    return re.sub(r"`(plugbox [^`]*)`", lambda m: f"`{_PLUG_COMMANDS.get(m[1], m[1])}`", text)
