"""Exit codes, the one exception base for expected failures, and the one policy that
turns an exception into an exit code and a line of text.

Both of plugbox's doors (the typer CLI and the machine-facing `--serve` mode) and
plug's CLI leave through `exit_for()`: an expected failure is one line and its code,
never a traceback. Standard library only (the serve path imports this).
"""

import os

# Every exit code plugbox and plug use, in one place.
OK = 0
REFUSED = 1          # refused or failed, nothing changed; also: `check` found problems
USAGE = 2            # bad usage, including a protocol the other side does not speak
BUSY = 3             # another plugbox command holds the lock on deploy/
HOOK_FAILED = 4      # a hook failed; nothing was switched, or live was switched back
REVERT_FAILED = 5    # a hook failed and bringing the previous version back failed too
COMMAND_NOT_RUN = 126     # `plugbox exec` could not start its command (a shell's status)
COMMAND_NOT_FOUND = 127   # no such command; also: no plugbox found on the host
INTERRUPTED = 130         # Ctrl-C, SIGTERM, SIGHUP (128 + SIGINT, as shells report it)
CONNECTION_FAILED = 255   # ssh's own: plug passes it on; plugbox never uses it


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


def exit_for(error: BaseException, interrupted: str = "interrupted") -> tuple[int, str] | None:
    """The exit code and the one line to print for an expected failure; None for a bug.

    A PlugboxError says what it is; an OSError that escaped names its file and the
    OS's reason; an interrupt (Ctrl-C, or SIGTERM/SIGHUP turned into one) is
    INTERRUPTED with the line `interrupted`.
    """
    if isinstance(error, PlugboxError):
        return error.code, str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return REFUSED, f"{where}{error.strerror or error}"
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED, interrupted
    return None


# The plug command that does what a hint's plugbox command does. plug sets
# PLUGBOX_CLIENT=plug: its user, on another machine, types plug, not plugbox.
_PLUG_COMMANDS = {
    "plugbox status": "plug status",
    "plugbox status --all": "plug status --all",
    "plugbox check": "plug check",
    "plugbox check --repair": "plug check --repair",
    "plugbox rollback-to VERSION": "plug rollback VERSION",
    "plugbox upgrade-to VERSION": "plug deploy",
    "plugbox env": "plug env",
}


def for_caller(text: str) -> str:
    """`text` with its `plugbox ...` hints named as the caller would type them."""
    if os.environ.get("PLUGBOX_CLIENT") != "plug":
        return text
    import re  # only when there is an error to show

    return re.sub(r"`(plugbox [^`]*)`", lambda m: f"`{_plug_command(m[1])}`", text)


def _plug_command(command: str) -> str:
    if command in _PLUG_COMMANDS:
        return _PLUG_COMMANDS[command]
    if command.startswith("plugbox rollback-to "):  # with a version named
        return "plug rollback " + command.removeprefix("plugbox rollback-to ")
    return command
