"""`plugbox --serve PROTOCOL`: the machine-facing mode that plug drives, one process per plug command.

Like `rsync --server`, it is started by the client over ssh (or directly, for a
local home) and speaks on stdin/stdout; people and scripts use the typer CLI, and
both call the same functions of operations.py and report.py and leave through
the same errors.exit_for. The exchange is protocol.py's.

Standard library only: this path never imports typer. Whatever happens, the
exchange ends with an exit message and this process with its code, never with a
traceback.

It starts lean: the hello goes out before anything but this module (and the
protocol's constants) is imported; then each command imports what it needs, when
it runs (operations and report bring the chain and the store, hooks bring
subprocess only when a hook runs, record brings hashlib only to hash): a status
never loads what a deploy needs. bench/startup.py measures it.
"""

from __future__ import annotations

import os
import sys

from plugbox_server import __version__, output
from plugbox_server import protocol as P
from plugbox_server.errors import OK, REFUSED, USAGE, Aborted, PlugboxError, Reverted, exit_for, for_caller

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: pathlib is imported once the hello is sent
    from pathlib import Path


def _send(message: dict) -> None:
    _say(P.encode(message))


def _say(line: bytes) -> None:
    try:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
    except (OSError, ValueError):  # the caller has gone; the command goes on regardless
        output.the_caller_went_away()


def _receive() -> dict | None:
    """The next message from the client; None at the end of its input."""
    try:
        line = sys.stdin.buffer.readline()
    except (OSError, ValueError):
        return None
    return P.decode(line, "the client") if line else None


class _Inbox:
    """stdin once the request (and the upload) is settled, read by a thread: the
    later messages of a gated deploy queue up, and the end of input means the
    caller has gone (plugbox then says nothing more), whichever step is running."""

    def __init__(self):
        import queue
        import threading

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
                        message = P.decode(line)
                    except P.ProtocolError:
                        message = {}
                    self.messages.put(message)
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


# --- the commands, each: (home, request, out) -> extra fields of the exit message ----
# Each imports what it needs when it runs (see the module's docstring).

def _operations():
    from plugbox_server import operations

    return operations


def _report():
    from plugbox_server import report

    return report


def _gone_or(answer: dict | None, otherwise: str) -> str:
    return "the caller went away" if answer is None else otherwise


_host = {"rsync": False}  # what main() found on this host


def _deploy(home: Path, request: dict, out) -> dict:
    operations = _operations()
    inbox: list[_Inbox] = []     # made at the end of the upload (or when there is none)
    name_of: list[str] = []      # the new version's name, once known
    change = (request["env_set"], request["env_unset"]) if request["env_set"] or request["env_unset"] else None

    def the_inbox() -> _Inbox:
        if not inbox:
            inbox.append(_Inbox())
        return inbox[0]

    def name_for(newest: str | None, live: str | None) -> str:
        _send({P.NEWEST: {"name": newest, "live": live}})
        answer = _receive()
        if answer is None or not isinstance(answer.get(P.NAME), str):
            raise Aborted("the deploy was called off before the upload: "
                          + _gone_or(answer, "another host failed"), "nothing changed")
        name_of.append(answer[P.NAME])
        return answer[P.NAME]

    def upload(name: str, staging: Path, live: str | None) -> None:
        name_of[:] = [name]
        _send({P.UPLOAD: {"name": name, "path": str(staging.absolute()), "live": live}})
        answer = _receive()
        if answer != {P.UPLOADED: True}:
            raise Aborted(f"the upload of {name} did not complete: "
                          + _gone_or(answer, "the caller gave up"), "nothing changed")
        the_inbox()  # read by the gates; its end: the caller has gone

    def before_stop(release) -> None:
        _send({P.PREPARED: {"name": name_of[0]}})
        answer = the_inbox().get()
        if answer == {P.RELEASE: True}:  # this host runs the release step for all of them
            _send({P.RELEASED: release()})
            answer = the_inbox().get()
        if answer != {P.SWITCH: True}:
            raise Aborted("the switch was called off: " + _gone_or(answer, "another host failed"),
                          "nothing switched")

    def after_check() -> None:
        _send({P.SWITCHED: {"name": name_of[0]}})
        if the_inbox().get() == {P.REVERT: True}:
            raise Reverted("plug asked to switch back: another host failed")
        # {"commit": true}, or the caller gone after the switch: the switch stays

    gates = dict(name_for=name_for, before_stop=before_stop, after_check=after_check) \
        if request["gated"] else {}
    if change:  # no upload: the host fills the version itself, from live's files
        if not request["gated"]:
            the_inbox()  # its end: the caller has gone
        name, live = operations.change_environment(home, *change, origin=request["origin"],
                                                   wait=request["wait_lock"], **gates)
        return {"name": name, "was": live}
    if not _host["rsync"]:  # the upload needs it: refused before anything is made
        raise PlugboxError("rsync is not installed on this host",
                           "install rsync there (apt-get install rsync); nothing changed")
    config = request["config"]
    name, live = operations.deploy(
        home, upload, config=config.encode() if config is not None else None,
        origin=request["origin"], wait=request["wait_lock"], force=request["force"], **gates)
    if name is None:  # the live version has this artifact already
        return {"name": live, "was": live, P.UNCHANGED: True}
    return {"name": name, "was": live}


def _rollback(home: Path, request: dict, out) -> dict:
    operations = _operations()
    choose = None  # a rollback of several hosts: the caller chooses for all of them
    if request["gated"]:
        def choose(live: str | None, previous: str | None, versions: list[str],
                   named: str | None) -> str | None:
            _send({P.READY: {"live": live, "previous": previous, "versions": versions, "version": named}})
            answer = _receive()
            if answer is None or P.VERSION not in answer:
                raise Aborted("the rollback was called off: " + _gone_or(answer, "another host refused"),
                              "nothing changed")
            _Inbox()
            version = answer[P.VERSION]
            return version if isinstance(version, str) and version else None
    else:
        _Inbox()
    live, was = operations.rollback_to(home, request["version"], request["refresh"],
                                       wait=request["wait_lock"], choose=choose, rev=request["rev"])
    return {"name": live, "was": was}


def _confirm(request: dict):
    """With "confirm" in the request: the plan of a remove or prune, sent to the caller
    under the lock; it goes ahead on {"commit": true}, anything else calls it off."""
    def confirm(plan) -> None:
        _send({P.PLAN: {"remove": plan.remove, "lines": _report().plan_lines(plan, kept=True)}})
        answer = _receive()
        if answer != {P.COMMIT: True}:
            raise Aborted("called off: " + _gone_or(answer, "not confirmed"), "nothing removed")
        _Inbox()

    if request["confirm"] and not request["dry_run"]:
        return confirm
    _Inbox()
    return None


def _remove(home: Path, request: dict, out) -> dict:
    _report().remove(home, request["versions"], out, rev=request["rev"], dry_run=request["dry_run"],
                  confirm=_confirm(request))
    return {}


def _prune(home: Path, request: dict, out) -> dict:
    _report().prune(home, request["keep"], out, dry_run=request["dry_run"], confirm=_confirm(request))
    return {}


COMMANDS = {
    "deploy": _deploy,
    "rollback": _rollback,
    "remove": _remove,
    "status": lambda home, request, out: _report().status(home, request["json"], out, request["brief"],
                                                          request["all"]),
    "verify": lambda home, request, out: _report().verify(home, request["version"], out, request["rev"]),
    "log": lambda home, request, out: _report().log(home, out, request["output"], request["count"],
                                                    request["since"]),
    "prune": _prune,
    "check": lambda home, request, out: _report().check(home, request["repair"], out),
    "env": lambda home, request, out: _report().env(home, request["action"], request["names"],
                                                    request["versions"], out),
    "hello": lambda home, request, out: {"home": str(home.absolute())},
}
assert set(COMMANDS) == set(P.COMMANDS)


def _which(program: str) -> bool:
    """Whether `program` is on PATH, as shutil.which finds it (without importing shutil)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return True
    return False


def main(argv: list[str]) -> int:
    _host["rsync"] = _which("rsync")
    _say(P.hello_line(__version__, sys.version.split()[0], _host["rsync"]))
    import io
    from pathlib import Path

    from plugbox_server import layout, names, record

    if argv != [str(P.NUMBER)]:
        asked = argv[0] if argv else "none"
        message = (f"plug speaks protocol {asked}, this plugbox {__version__} speaks {P.NUMBER}; "
                   f"{P.BOOTSTRAP_HINT}")
        print(f"plugbox: {message}", file=sys.stderr)
        _send(P.exit_message(USAGE, message))
        return USAGE
    output.messages_to_stderr()
    out = io.StringIO()
    try:
        message = _receive()
        if message is None:
            return REFUSED  # the caller went away before it asked anything
        request = P.read_request(message)
        origin = record.checked_origin(request["origin"])
        names.called_from(origin.get("user"), origin.get("machine"))
        home = Path(layout.home_from(request["home"]))
        answer = COMMANDS[request["command"]](home, request, out) or {}
        _send(P.exit_message(OK, out=out.getvalue(), **answer))
        if request["hold"]:  # the client still uses the connection (rsync --dry-run)
            _Inbox().until_the_end()
        return OK
    except (Exception, KeyboardInterrupt) as error:
        known = exit_for(error)
        code, text = known if known else (REFUSED, f"failed: {type(error).__name__}: {error}")
        output.say(for_caller(text), err=True)
        _send(P.exit_message(code, text, out.getvalue()))
        return code
