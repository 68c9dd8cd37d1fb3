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

A deploy to several hosts asks for two phases ("two_phase": true), so that plug
can name the version once for all hosts and switch them together. Once it holds
the lock, plugbox answers {"newest": {"name", "live"}} and waits for
{"name": NAME} (refused unless NAME sorts after every version here); then the
upload as above; after post_upload it answers {"prepared": {"name"}} and waits:
{"switch": true} goes on (stop or refresh, switch, start, check), anything else
or end of input removes the new version, nothing switched. After a good check it
answers {"switched": {"name"}} and waits: {"revert": true} switches back and
brings the previous version up (another host failed), {"commit": true} or end
of input keeps the switch. A rollback of several hosts ("two_phase": true)
answers {"ready": {"live", "previous", "versions"}} under the lock and waits for
{"version": NAME} (null: nothing to do here).
"""

from __future__ import annotations

import io
import json
import os
import queue
import sys
import threading
from pathlib import Path

from plugbox_server import __version__, operations, output, report
from plugbox_server.errors import USAGE, Aborted, PlugboxError, Reverted, for_caller

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


# --- the commands, each: (home, request, out) -> extra fields of the last message ----


class _Inbox:
    """stdin once the request (and the upload) is settled, read by a thread: the
    later messages of a two-phase deploy queue up, and the end of input means the
    caller has gone (plugbox then says nothing more), whichever step is running."""

    def __init__(self):
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        pending = b""
        try:  # os.read, not sys.stdin: a daemon thread must hold no lock at exit
            while chunk := os.read(0, 65536):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        message = {}
                    self.messages.put(message if isinstance(message, dict) else {})
        except OSError:
            pass
        output.the_caller_went_away()
        self.messages.put(None)

    def get(self) -> dict | None:
        return self.messages.get()

    def until_the_end(self) -> None:
        """Wait for the end of the caller's input."""
        while self.get() is not None:
            pass


def _deploy(home: Path, request: dict, out) -> dict:
    two_phase = bool(request.get("two_phase"))
    inbox: list[_Inbox] = []     # made at the end of the upload
    name_of: list[str] = []      # the new version's name, once known

    def name_for(newest: str | None, live: str | None) -> str:
        _send({"newest": {"name": newest, "live": live}})
        answer = _receive()
        if answer is None or not isinstance(answer.get("name"), str):
            raise Aborted("the deploy was called off before the upload: "
                          + ("the caller went away" if answer is None else "another host failed"),
                          "nothing changed")
        return answer["name"]

    def upload(name: str, staging: Path, live: str | None) -> None:
        name_of.append(name)
        _send({"upload": {"name": name, "path": str(staging.absolute()), "live": live}})
        answer = _receive()
        if answer != {"uploaded": True}:
            raise Aborted(f"the upload of {name} did not complete: "
                          + ("the caller went away" if answer is None else "the caller gave up"),
                          "nothing changed")
        inbox.append(_Inbox())  # read by the two phases; its end: the caller has gone

    def before_stop() -> None:
        _send({"prepared": {"name": name_of[0]}})
        answer = inbox[0].get()
        if answer != {"switch": True}:
            raise Aborted("the switch was called off: " + ("the caller went away" if answer is None
                                                           else "another host failed"),
                          "nothing switched")

    def after_check() -> None:
        _send({"switched": {"name": name_of[0]}})
        if inbox[0].get() == {"revert": True}:
            raise Reverted("plug asked to switch back: another host failed")
        # {"commit": true}, or the caller gone after the switch: the switch stays

    config = request.get("config")
    name, live = operations.deploy(
        home, upload, config=config.encode() if isinstance(config, str) else None,
        origin=request.get("origin"), wait=_seconds(request.get("wait_lock")),
        **(dict(name_for=name_for, before_stop=before_stop, after_check=after_check) if two_phase else {}))
    return {"name": name, "was": live}


def _rollback(home: Path, request: dict, out) -> dict:
    choose = None  # a rollback of several hosts: the caller chooses for all of them
    if request.get("two_phase"):
        def choose(live: str | None, previous: str | None, versions: list[str]) -> str | None:
            _send({"ready": {"live": live, "previous": previous, "versions": versions}})
            answer = _receive()
            if answer is None or "version" not in answer:
                raise Aborted("the rollback was called off: "
                              + ("the caller went away" if answer is None else "another host refused"),
                              "nothing changed")
            _Inbox()
            return _text(answer["version"])
    else:
        _Inbox()
    live, was = operations.rollback_to(home, _text(request.get("version")), bool(request.get("refresh")),
                                       wait=_seconds(request.get("wait_lock")), choose=choose)
    return {"name": live, "was": was}


def _remove(home: Path, request: dict, out) -> dict:
    _Inbox()
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
            _Inbox().until_the_end()
        return 0
    except PlugboxError as error:
        output.say(for_caller(str(error)), err=True)
        _send({"exit": error.code, "error": str(error), "out": out.getvalue()})
        return error.code
    except KeyboardInterrupt:
        _send({"exit": 130, "error": "interrupted"})
        return 130
