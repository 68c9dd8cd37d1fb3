"""`plugbox --relay PROTOCOL HOME SECONDS`: one `plugbox --serve` held open between
the tasks of an engine that reaches the host once per step (Ansible).

plug keeps one ssh connection, and so one `plugbox --serve`, for a whole deploy;
an engine runs each step as its own module, and a module ends with its task. The
relay bridges the two, with no deploy logic of its own: the first module of a
deploy starts it (detached, in a session of its own), it starts `plugbox --serve`
(the same plugbox, the same python) with pipes, and every module of that deploy,
this first one included, hands it one of protocol.py's messages for plugbox and
reads plugbox's answers. plugbox holds its lock from the making of the version
to the end of the switch exactly as it does for plug, and when the relay closes
its input it does exactly what it does when plug goes away: before the switch it
removes the new version (nothing changed), after it, it finishes.

The socket is HOME/deploy/.relay/socket (layout.RELAY), mode 0600, in a directory
of mode 0700 that only the login may enter; a lock file beside it makes the relay
the only one of this home (a second deploy is refused there, before plugbox's own
lock is even asked). A client connects and writes one JSON line:

    {"send": MESSAGE or null, "end": true|false, "until": [KEY, ...]}

The relay writes MESSAGE to plugbox's input (then, with "end", closes it) and
answers, one JSON line each, what plugbox has said since the last reader left and
says from now on: {"said": LINE} for a line of its standard error (its messages,
the hooks' output), {"message": MESSAGE} for one of its protocol messages, until
a message that has one of the KEYs; then it closes the connection, keeping what
comes next for the next reader. After plugbox's exit message, the same client
hears the rest and {"ended": EXIT STATUS} once plugbox has ended, and by then the
relay has let go of the home.

The relay ends when plugbox has ended and a reader has had all it said, or when no
client has come for SECONDS (the idle bound of a deploy): it then closes
plugbox's input, lets it finish, and ends; nothing it holds outlives it.

Standard library only, like the --serve path.
"""

from __future__ import annotations

import collections
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from plugbox_server import layout
from plugbox_server import protocol as P
from plugbox_server.errors import USAGE, Busy, PlugboxError, exit_for

ARG = "--relay"
SEND, END, UNTIL = "send", "end", "until"        # what a client asks
SAID, MESSAGE, ENDED = "said", "message", "ended"  # what the relay answers
READY = "ready"
START_WAIT = 30.0      # seconds the first module waits for the relay to be up
ASK_WAIT = 30.0        # seconds the relay waits for a connected client to ask
WRITE_WAIT = 60.0      # seconds a write to a client may block
DEFAULT_IDLE = 1800.0  # seconds without any client before the relay ends the deploy
_SUN_PATH = 107        # the longest path a unix socket's address holds


class NoSession(PlugboxError):
    """No relay answers for this home: no deploy session is open there."""


def directory(home: Path) -> Path:
    return Path(home) / layout.DEPLOY / layout.RELAY


def socket_path(home: Path) -> Path:
    path = directory(home) / layout.RELAY_SOCKET
    if len(os.fsencode(str(path))) > _SUN_PATH:
        raise PlugboxError(f"{path}: the path is too long for a unix socket",
                           "give the service a shorter home")
    return path


# --- the client side: what the engine's modules call ------------------------------


def start(plugbox: list[str], home: Path, idle: float = DEFAULT_IDLE,
          env: dict[str, str] | None = None) -> int:
    """Start the relay for `home`, detached; return its pid once it is up.

    `plugbox`: how to run this plugbox ([python, zipapp]). Raises PlugboxError with
    the relay's own line (and its exit status) when it could not start: another
    relay holds the home (BUSY), or the home is unusable.
    """
    argv = [*plugbox, ARG, str(P.NUMBER), str(home), f"{idle:g}"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd="/", env=env, start_new_session=True)
    try:
        line = b""
        deadline = time.monotonic() + START_WAIT
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
                process.kill()
                raise PlugboxError(f"the relay in {home} did not start within {START_WAIT:g} s")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    finally:
        process.stdout.close()
    text = line.decode(errors="replace").strip()
    if text == READY:
        return process.pid
    code = process.wait(10)
    text = text.splitlines()[0] if text else f"exit {code}"
    raise PlugboxError(text.removeprefix("plugbox: "), code=code or 1)


@dataclass
class Exchange:
    """What the relay handed one client: plugbox's messages and lines, in order."""

    messages: list[dict] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    ended: int | None = None   # plugbox's exit status, when it has ended

    def last(self) -> dict | None:
        return self.messages[-1] if self.messages else None


def exchange(home: Path, send: dict | None = None, until: tuple[str, ...] = (),
             end: bool = False) -> Exchange:
    """Hand the relay of `home` one message for plugbox (or none), and read until
    plugbox answers with one of `until` (or its exit message, or its end).
    NoSession when no relay answers there."""
    path = socket_path(home)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            client.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NoSession(f"no deploy session is open in {home}",
                            "it ended, or was never opened") from None
        client.sendall(_line({SEND: send, END: end, UNTIL: list(until)}))
        got = Exchange()
        with client.makefile("rb") as answers:
            for raw in answers:
                answer = P.decode(raw, "the relay")
                if SAID in answer:
                    got.said.append(str(answer[SAID]))
                elif MESSAGE in answer and isinstance(answer[MESSAGE], dict):
                    got.messages.append(answer[MESSAGE])
                elif ENDED in answer:
                    got.ended = answer[ENDED] if isinstance(answer[ENDED], int) else 1
        return got
    finally:
        client.close()


def _line(message: dict) -> bytes:
    return (json.dumps(message) + "\n").encode()


# --- the relay itself -----------------------------------------------------------------


class _Serve:
    """`plugbox --serve` with pipes; what it says, in one queue, stdout and stderr alike."""

    def __init__(self, plugbox: list[str], home: Path):
        self.process = subprocess.Popen([*plugbox, *P.ARGS], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=home)
        self.events: collections.deque = collections.deque()
        self.changed = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
                        threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, messages: bool) -> None:
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            event = {SAID: text}
            if messages:
                try:
                    event = {MESSAGE: P.decode(raw, "plugbox")}
                except P.ProtocolError:
                    pass
            with self.changed:
                self.events.append(event)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(_line(message))
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # plugbox has ended: the reader gets its last words and its end

    def end_input(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def finished(self) -> bool:
        return self.process.poll() is not None and not any(r.is_alive() for r in self.readers)

    def next(self, seconds: float) -> dict | None:
        with self.changed:
            if not self.events:
                self.changed.wait(seconds)
            return self.events.popleft() if self.events else None


class Relay:
    def __init__(self, home: Path, idle: float, plugbox: list[str]):
        from plugbox_server.store import Store

        self.home = home
        self.idle = idle
        self.directory = Store(home).make_private_dir(layout.RELAY)
        self.lock = _own_lock(self.directory / layout.RELAY_LOCK, home, idle)
        path = socket_path(home)
        try:
            path.unlink()   # a socket left by a relay that was killed
        except FileNotFoundError:
            pass
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.server.bind(str(path))
        finally:
            os.umask(old)
        self.server.listen(8)
        self.path = path
        try:
            self.serve = _Serve(plugbox, home)
        except BaseException:
            path.unlink()
            raise

    def run(self) -> int:
        """Answer clients one at a time until plugbox has ended and said all, or the
        idle bound has run out; see the module's docstring."""
        self.server.settimeout(1.0)
        last = time.monotonic()
        ending = False
        try:
            while not (self.serve.finished() and not self.serve.events):
                try:
                    conn, _ = self.server.accept()
                except (socket.timeout, TimeoutError):
                    idle_for = time.monotonic() - last
                    if self.serve.finished():
                        if ending or idle_for > self.idle:
                            break
                    elif idle_for > self.idle and not ending:
                        self.serve.end_input()  # plugbox does what it does when plug goes away
                        ending = True
                    continue
                with conn:
                    if self._answer(conn):
                        # The home is free before this client hears the end: a deploy
                        # right after this one finds no relay in its way.
                        self._close()
                last = time.monotonic()
        finally:
            self._close()
        return 0

    def _close(self) -> None:
        if self.lock is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        self.server.close()
        self.serve.end_input()
        self.serve.process.wait()
        os.close(self.lock)
        self.lock = None

    def _answer(self, conn: socket.socket) -> bool:
        """One client: its message to plugbox, then what plugbox says until the client
        has its answer. True when plugbox has ended and the client has had all."""
        conn.settimeout(ASK_WAIT)
        try:
            with conn.makefile("rb") as asked:
                ask = P.decode(asked.readline(1 << 20), "the client")
        except (OSError, P.ProtocolError):
            return False
        send, until = ask.get(SEND), set(ask.get(UNTIL) or ())
        if isinstance(send, dict):
            self.serve.send(send)
        if ask.get(END) is True:
            self.serve.end_input()
        conn.settimeout(WRITE_WAIT)
        while True:
            event = self.serve.next(1.0)
            if event is None:
                if self.serve.finished() and not self.serve.events:
                    _write(conn, {ENDED: self.serve.process.returncode})
                    return True
                if _hung_up(conn):
                    return False
                continue
            if not _write(conn, event):
                self.serve.events.appendleft(event)  # for the next reader
                return False
            # After the exit message, plugbox ends: this client hears that too.
            if MESSAGE in event and P.EXIT not in event[MESSAGE] and until.intersection(event[MESSAGE]):
                return False


def _write(conn: socket.socket, event: dict) -> bool:
    try:
        conn.sendall(_line(event))
        return True
    except OSError:
        return False


def _hung_up(conn: socket.socket) -> bool:
    """Whether the client has gone (it never writes after its one line)."""
    try:
        if select.select([conn], [], [], 0)[0]:
            return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
    return False


def _own_lock(path: Path, home: Path, idle: float) -> int:
    """Hold the relay's lock of this home for the relay's life; Busy when another holds it."""
    import fcntl

    from plugbox_server.names import utc_now

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another relay"
        os.close(fd)
        raise Busy(f"a deploy session is open in {home} ({holder})",
                   "it ends with its deploy, or when no step has come for its idle time") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"relay pid {os.getpid()} since {utc_now()}, idle limit {idle:g} s\n".encode())
    return fd


def _own_command() -> list[str]:
    """How this plugbox was started, for the serve process: the same python, the same plugbox."""
    here = sys.argv[0]
    if os.path.basename(here) == "__main__.py":  # python -m plugbox_server
        return [sys.executable, "-m", "plugbox_server"]
    return [sys.executable, os.path.abspath(here)]


def main(argv: list[str]) -> int:
    """The relay's process: up (says READY on stdout, then lets go of it), or one line and its code."""
    if len(argv) != 3 or argv[0] != str(P.NUMBER):
        print(f"plugbox: {ARG} {' '.join(argv[:1]) or 'without a protocol'}: this plugbox speaks "
              f"protocol {P.NUMBER}; {P.BOOTSTRAP_HINT}", flush=True)
        return USAGE
    try:
        idle = float(argv[2])
        if not idle > 0:
            raise ValueError
    except ValueError:
        print(f"plugbox: {ARG}: {argv[2]!r} is not a number of seconds above 0", flush=True)
        return USAGE
    try:
        relay = Relay(Path(layout.home_from(argv[1])).absolute(), idle, _own_command())
    except (Exception, KeyboardInterrupt) as error:
        known = exit_for(error)
        code, text = known if known else (1, f"failed: {type(error).__name__}: {error}")
        print(f"plugbox: {text}", flush=True)
        return code
    print(READY, flush=True)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return relay.run()
