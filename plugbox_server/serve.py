"""`plugbox --serve PROTOCOL`: the machine-facing mode that plug drives, one process per plug command.

Like `rsync --server`, it is started by the client over ssh (or directly, for a
local home) and speaks on stdin/stdout; people and scripts use the typer CLI,
and both call the same functions of operations.py and report.py.

Standard library only: this path never imports typer, so it starts in the time
of a bare python3 plus plugbox's own modules.

The exchange is JSON, one object a line. plugbox speaks first:

    {"hello": {"plugbox": VERSION, "protocol": N}}

and refuses (exit 2) when the client asked for another protocol. The client
sends one request, {"command": ..., "home": ..., ...}. A deploy answers
{"upload": {"name", "path", "live"}} once it holds the lock and has made the
staging directory, then waits for {"uploaded": true}: end of input before that
means the caller has gone, and the staging directory is removed. Every command
ends with {"exit": CODE, ...} (with "out", the text a person would see on
stdout, where the command prints any). Messages and hook output go to stderr,
which the client passes on as it comes.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from pathlib import Path

from plugbox_server import __version__, operations, output, report
from plugbox_server.errors import USAGE, Aborted, PlugboxError, for_caller

PROTOCOL = 1


def _send(message: dict) -> None:
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except OSError:  # the caller has gone; the command goes on regardless
        output.the_caller_went_away()


def _receive() -> dict | None:
    """The next message from the client; None at the end of its input."""
    try:
        line = sys.stdin.readline()
    except OSError:
        return None
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        raise PlugboxError("the client sent something that is not plugbox's protocol",
                           "run `plug bootstrap` to install a matching plugbox", code=USAGE) from None
    if not isinstance(message, dict):
        raise PlugboxError("the client sent something that is not plugbox's protocol", code=USAGE)
    return message


def _watch_for_the_caller_going(daemon: bool = True) -> None:
    """From now on stdin carries nothing: its end means the caller has gone.
    With daemon=False, wait for that end here."""
    def watch():
        try:  # os.read, not sys.stdin: a daemon thread must hold no lock at exit
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        output.the_caller_went_away()

    if not daemon:
        return watch()
    threading.Thread(target=watch, daemon=True).start()


# --- the commands, each: (home, request, out) -> extra fields of the last message ----


def _deploy(home: Path, request: dict, out) -> dict:
    def upload(name: str, staging: Path, live: str | None) -> None:
        _send({"upload": {"name": name, "path": str(staging.absolute()), "live": live}})
        answer = _receive()
        if answer != {"uploaded": True}:
            raise Aborted(f"the upload of {name} did not complete: "
                          + ("the caller went away" if answer is None else "the caller gave up"),
                          "nothing changed")
        _watch_for_the_caller_going()

    config = request.get("config")
    name, live = operations.deploy(
        home, upload, config=config.encode() if isinstance(config, str) else None,
        origin=request.get("origin"), wait=_seconds(request.get("wait_lock")))
    return {"name": name, "was": live}


def _rollback(home: Path, request: dict, out) -> dict:
    _watch_for_the_caller_going()
    live, was = operations.rollback_to(home, _text(request.get("version")), bool(request.get("refresh")),
                                       wait=_seconds(request.get("wait_lock")))
    return {"name": live, "was": was}


def _remove(home: Path, request: dict, out) -> dict:
    _watch_for_the_caller_going()
    operations.remove(home, [str(v) for v in request.get("versions", [])])
    return {}


COMMANDS = {
    "deploy": _deploy,
    "rollback": _rollback,
    "remove": _remove,
    "status": lambda home, request, out: {"live": report.status(home, bool(request.get("json")), out)},
    "verify": lambda home, request, out: report.verify(home, _text(request.get("version")), out),
    "log": lambda home, request, out: report.log(home, out, bool(request.get("output"))),
    "prune": lambda home, request, out: report.prune(home, int(request.get("keep", 5)), out),
    "check": lambda home, request, out: report.check(home, bool(request.get("repair")), out),
    "hello": lambda home, request, out: {"home": str(home.absolute())},
}


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value) -> float:
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0


def main(argv: list[str]) -> int:
    _send({"hello": {"plugbox": __version__, "protocol": PROTOCOL}})
    if argv != [str(PROTOCOL)]:
        asked = argv[0] if argv else "none"
        message = (f"plug speaks protocol {asked}, this plugbox {__version__} speaks {PROTOCOL}; "
                   "run `plug bootstrap` to install the plugbox that matches plug")
        print(f"plugbox: {message}", file=sys.stderr)
        _send({"exit": USAGE, "error": message})
        return USAGE
    output.messages_to_stderr()
    out = io.StringIO()
    try:
        request = _receive()
        if request is None:
            return 1
        command = COMMANDS.get(request.get("command"))
        if command is None:
            raise PlugboxError(f"no command {str(request.get('command'))!a} in protocol {PROTOCOL}",
                               "run `plug bootstrap` to install the plugbox that matches plug", code=USAGE)
        home = operations.home_from(_text(request.get("home")))
        answer = command(home, request, out) or {}
        _send({"exit": 0, "out": out.getvalue(), **answer})
        if request.get("hold"):  # the client still uses the connection (rsync --dry-run)
            _watch_for_the_caller_going(daemon=False)
        return 0
    except PlugboxError as error:
        output.say(for_caller(str(error)), err=True)
        _send({"exit": error.code, "error": str(error), "out": out.getvalue()})
        return error.code
    except KeyboardInterrupt:
        _send({"exit": 130, "error": "interrupted"})
        return 130
