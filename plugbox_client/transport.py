"""Runs things: the only module of plug that starts processes (and the only user of `sh`).

Every plug command that works on the host talks to one `plugbox --serve` process
there, a `Session`: over ssh, the session is also the master connection
(ControlMaster=yes, ControlPersist=no), so the master lives exactly as long as the
session, and whatever else the command runs on the host rides on it (`ride`:
rsync's `-e`, `plug exec`, `plug ssh`, bootstrap's install): one login per
command. For host = "local", plugbox runs here. The exchange is protocol.py's,
JSON lines on the session's stdin and stdout; the host's messages and hook output
come on its stderr, which plug passes on line by line.

Nothing started here outlives plug: on Linux, ssh, rsync and a local plugbox get
SIGTERM when plug dies (PR_SET_PDEATHSIG), even by SIGKILL; the end of plug's
side of the pipe is the end of the session on the host, which then finishes or
undoes what it was doing, and a command run by `plug exec` ends with its
connection (see plugbox exec). The control socket is a name in the temporary
directory that ssh itself creates and removes.

The one exception is asked for: with keep_connection (or PLUG_KEEP_CONNECTION),
the master is kept that many seconds after the command, at a control path of its
own per destination (%C) in a directory of this user's alone, where the next
command finds it and logs in no more; `plug disconnect` closes it. ssh then runs
the master in the background and every session, the plugbox --serve one
included, rides it as a mux client: a session still ends as plug does, and
what it ran on the host with it; only the connection waits.

ssh reads plug's own ssh_config (next to this file), which includes the user's
~/.ssh/config first and then sets ConnectTimeout and ServerAliveInterval, so a
dead host fails within seconds while the user's settings still win. Extra ssh
arguments (tests, unusual setups) come from the environment and go on every ssh
plug runs, after plug's own connection options (ControlPath, ControlMaster, which
they cannot override) and before the host:

    PLUG_SSH_CONFIG=FILE     use FILE instead of ~/.ssh/config (`ssh -F FILE`);
                             plug's defaults then follow as -o options
    PLUG_SSH_OPTIONS=ARGS    more ssh arguments, split like a shell splits words,
                             e.g. "-p 2222 -i /path/key -o UserKnownHostsFile=/path/known
                                   -o StrictHostKeyChecking=yes"
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from plugbox_client import argv as A
from plugbox_client.config import Config
from plugbox_server import protocol
from plugbox_server.errors import COMMAND_NOT_FOUND, CONNECTION_FAILED, USAGE, PlugboxError
from plugbox_server.names import login

if TYPE_CHECKING:
    from pathlib import Path  # (not imported at run time before ssh starts: see config.Config)

CAPTURE = "capture"
DEVNULL = os.devnull


class Result(NamedTuple):
    code: int
    stdout: str = ""


def run(argv: list[str], *, cwd: Path | None = None, out=None, err=None,
        stdin: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run argv to its end and return its exit status (killed by signal N: 128+N).

    `out`: None passes stdout to the terminal; CAPTURE keeps it in Result.stdout; a
    callable gets it line by line, a line ending at a newline or a carriage
    return (rsync's progress rewrites its line with \\r); a Path receives it.
    `err`: None passes stderr to the terminal, a callable gets it line by line
    (each with its newline), a Path receives it. `stdin`: the terminal's, or the
    file given.

    sh runs it, but for a callable `out` (rsync's upload): see _run_reading.
    """
    _found(argv[0])  # not found: one line
    if callable(out):
        return _run_reading(argv, out, cwd=cwd, err=err, stdin=stdin, env=env)
    import sh  # only the commands that run something pay for it (~38 ms)

    with contextlib.ExitStack() as files:
        kwargs = dict(
            _ok_code=range(256), _return_cmd=True, _decode_errors="replace",
            _cwd=str(cwd) if cwd else None,
            _env={**os.environ, **env} if env else None,
            _in=files.enter_context(open(stdin, "rb")) if stdin is not None else 0,
            _err=err if callable(err) else files.enter_context(open(err, "wb")) if err is not None else 2,
        )
        if out is CAPTURE:  # sh reads it: through a pipe, not the pty it would make by default
            kwargs["_tty_out"] = False
        else:
            kwargs["_out"] = files.enter_context(open(out, "wb")) if out is not None else 1
        running = sh.Command(argv[0])(*argv[1:], _bg=True, _bg_exc=False,
                                      _preexec_fn=_die_with_parent, **kwargs)
        try:
            done = running.wait()
        except sh.ErrorReturnCode as e:  # only a signal gets here, given _ok_code
            return Result(128 - e.exit_code if e.exit_code < 0 else e.exit_code)
        except BaseException:
            # Ctrl-C or plug's end: stop it and let it say its last word before plug does.
            with contextlib.suppress(Exception):
                running.process.terminate()
            with contextlib.suppress(BaseException):
                running.wait(timeout=5)
            raise
    return Result(done.exit_code, done.stdout.decode("utf-8", "replace") if out is CAPTURE else "")


def _run_reading(argv: list[str], out, *, cwd: Path | None, err, stdin: Path | None,
                 env: dict[str, str] | None) -> Result:
    """run() with `out` a callable, given each line as it comes: rsync's upload.
    (subprocess, not sh: sh's unbuffered mode calls back once per byte, which
    rsync's thousands of lines and its \\r-rewritten progress would make slow, and
    an interrupted upload must stop rsync's own ssh with it.) It runs in a process
    group of its own, which plug stops whole when it is interrupted (a Ctrl-C on
    the terminal reaches plug alone). A callable `err` gets the lines of stderr,
    read by a thread of their own."""
    import re
    import subprocess

    with contextlib.ExitStack() as files:
        process = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **env} if env else None, stdout=subprocess.PIPE,
            stdin=files.enter_context(open(stdin, "rb")) if stdin is not None else None,
            stderr=(subprocess.PIPE if callable(err) else
                    files.enter_context(open(err, "wb")) if err is not None else None),
            preexec_fn=_die_with_parent, process_group=0)
        said = None
        if callable(err):
            said = threading.Thread(target=lambda: [err(line.decode("utf-8", "replace"))
                                                    for line in process.stderr], daemon=True)
            said.start()
        try:
            pending = b""
            while chunk := os.read(process.stdout.fileno(), 65536):
                *lines, pending = re.split(rb"[\r\n]", pending + chunk)
                for line in lines:
                    out(line.decode("utf-8", "replace"))
            if pending:
                out(pending.decode("utf-8", "replace"))
            code = process.wait()
            if said is not None:
                said.join(5)
        except BaseException:
            # Ctrl-C or plug's end: stop it, and what it started (its group of its own:
            # rsync's ssh would hold the connection, and plug, until the host side ends).
            with contextlib.suppress(Exception):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(BaseException):
                process.wait(timeout=5)
            raise
        finally:
            process.stdout.close()
            if said is not None:
                said.join(1)
                # Still reading: a child of the command (rsync's ssh) holds stderr open. Closing
                # it now would wait for that read (the reader's lock); it closes with plug.
                if not said.is_alive():
                    process.stderr.close()
    return Result(128 - code if code < 0 else code)


def _found(name: str) -> None:
    """Refuse in one line a program that is not on PATH; flush our own output before
    it writes its own."""
    import shutil

    if shutil.which(name) is None:
        raise PlugboxError(f"{name}: not found on this machine", f"install {name}")
    sys.stdout.flush()
    sys.stderr.flush()


def foreground(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run argv on this terminal, with plug's own stdin, stdout and stderr (no pipe, no
    pty in between), and return its exit status (killed by signal N: 128+N).

    A Ctrl-C reaches it directly, as it does plug: plug waits for its end, then
    raises KeyboardInterrupt (whatever status the interrupted child chose, ssh's
    255 included). SIGTERM or SIGHUP to plug (a KeyboardInterrupt, see main.py)
    stops the child first. (subprocess, not sh's _fg, which spawns without a way
    to make the child die with plug.)
    """
    import subprocess

    _found(argv[0])  # not found: one line
    interrupted = []
    # A handler, not SIG_IGN, which the child would inherit through exec.
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        process = subprocess.Popen(argv, env={**os.environ, **env} if env else None,
                                   preexec_fn=_die_with_parent)
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:
                interrupted.append(True)
                process.terminate()
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def scratch():
    """A private temporary directory (0700) for the length of a command, removed at
    its end; should plug be killed, by a watcher that outlives it only by the
    moment it takes to notice (it removes the directory once its end of a pipe
    from plug closes, which plug's end, even by SIGKILL, does). The watcher is in
    a session of its own, so a Ctrl-C or a job's kill of plug's group spares it."""
    import shutil
    import subprocess
    import tempfile

    directory = tempfile.mkdtemp(prefix="plug-")
    watcher = None
    try:
        watcher = subprocess.Popen(["sh", "-c", 'read _; exec rm -rf -- "$1"', "plug-scratch", directory],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        pass  # no sh: plug still removes it at its end
    try:
        from pathlib import Path

        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if watcher is not None:
            with contextlib.suppress(OSError):
                watcher.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watcher.wait(5)


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    if _prctl:
        _prctl[0](1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _libc_prctl() -> list:
    """libc's prctl, looked up once here, before the first fork, rather than in
    every child (each would import ctypes again: a few ms before its exec)."""
    try:
        import ctypes

        return [ctypes.CDLL(None, use_errno=True).prctl]
    except (OSError, AttributeError):
        return []  # not Linux: the end of plug's pipe still ends the session


_prctl = _libc_prctl()


_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # plug's own handlers: see main.py


class _Started:
    """A process with pipes for its stdin, stdout and stderr, started by fork and
    exec, that dies with plug: what a Session talks to (ssh, or a local plugbox).

    Not subprocess.Popen: plug starts its sessions before it loads anything it can
    do without, and subprocess (with selectors, locale ...) costs that start a
    few milliseconds. What Popen does that a session needs is here: the child's
    other descriptors closed, SIGPIPE back to its default, a failed exec raised
    as OSError (by started()), wait with a time limit (None: still running),
    terminate and kill.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        parent = os.getpid()
        stdin, self._stdin = os.pipe()      # (not inherited: os.pipe's are close-on-exec)
        self._stdout, stdout = os.pipe()
        self._stderr, stderr = os.pipe()
        failed, failing = os.pipe()
        # Until its exec, the child runs plug's python with plug's signal handlers: a
        # SIGTERM then (close() of a session just started) would raise in the child.
        # So they wait, blocked, until the child has set every disposition to what
        # exec would leave (SIG_DFL; for SIGPIPE and SIGXFSZ, which python ignores,
        # as Popen does).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            self.pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in (stdin, self._stdin, self._stdout, stdout, self._stderr, stderr, failed, failing):
                os.close(fd)
            raise
        if self.pid == 0:  # the child: nothing here may return or raise into plug's code
            try:
                for signum in (*_HANDLED, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                _die_with_parent()
                if os.getppid() != parent:  # plug died before that took effect
                    os._exit(1)
                ends = [stdin, stdout, stderr]
                if min(ends) < 3:  # plug was started with 0, 1 or 2 closed: move them out of the way
                    import fcntl

                    ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in ends]
                for target, fd in enumerate(ends):
                    os.dup2(fd, target)
                os.closerange(3, failing)
                os.closerange(failing + 1, os.sysconf("SC_OPEN_MAX"))
                if env is None:
                    os.execvp(argv[0], argv)
                os.execvpe(argv[0], argv, env)
            except OSError as error:
                os.write(failing, str(error.errno).encode())
            finally:
                os._exit(127)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (stdin, stdout, stderr, failing):
            os.close(fd)
        self.returncode: int | None = None
        self._reaping = threading.Lock()
        try:  # readable once it has ended (Linux 5.3), and for good: waits need no polling
            self._ended = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._ended = None
        self._failed: int | None = failed
        self._program = argv[0]
        self.stdin = os.fdopen(self._stdin, "wb")
        self.stdout = os.fdopen(self._stdout, "rb")
        self.stderr = os.fdopen(self._stderr, "rb")

    def started(self) -> None:
        """Return once its program runs; OSError (and it has ended) if it could not
        be run. (Apart from the fork, so that several start before any is waited for.)"""
        if self._failed is None:
            return
        with os.fdopen(self._failed, "rb") as said:
            why = said.read()  # empty: exec succeeded (the pipe closed with it)
        self._failed = None
        if why:
            self.wait(None)
            code = int(why)
            raise OSError(code, os.strerror(code), self._program)

    def wait(self, seconds: float | None) -> int | None:
        """Its exit status (-N: killed by signal N) once it has ended, within `seconds`
        (None: however long it takes); None if it is still running then."""
        deadline = None if seconds is None else time.monotonic() + seconds
        pause = 0.0005
        while True:
            with self._reaping:
                if self.returncode is not None:
                    return self.returncode
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
                    return self.returncode
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if self._ended is not None:
                import select

                poll = select.poll()
                poll.register(self._ended, select.POLLIN)
                poll.poll(None if left is None else max(1, int(left * 1000)))
            else:
                time.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, 0.05)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def local_plugbox(home: str) -> list[str]:
    """The plugbox to run on this machine (host = "local"), in the order FIND_PLUGBOX
    looks on a host: HOME's own copy, the login's, PATH; and here, the package plug
    came with."""
    for installed in (os.path.join(home, ".local", "bin", "plugbox"),
                      os.path.join(os.path.expanduser("~"), ".local", "bin", "plugbox")):
        if os.access(installed, os.X_OK):
            return [installed]
    import shutil

    found = shutil.which("plugbox")
    return [found] if found else [sys.executable, "-m", "plugbox_server"]


def _temporary_directory() -> str:
    """The temporary directory as tempfile chooses it (TMPDIR, TEMP or TMP when it is
    a directory plug may write in, else /tmp), without importing tempfile (and
    random, shutil ... with it) before ssh starts."""
    for name in ("TMPDIR", "TEMP", "TMP"):
        directory = os.environ.get(name)
        if directory and os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK):
            return os.path.abspath(directory)
    return "/tmp"


def _control_path() -> str:
    """A fresh socket name that ssh creates and removes itself (short: sun_path)."""
    directory = _temporary_directory()
    if len(directory) > 60:
        directory = "/tmp"
    return os.path.join(directory, f"plug-{os.getpid()}-{os.urandom(4).hex()}")


# A socket's path has at most 107 bytes, and ssh binds a kept master's at its name
# plus 17 (then renames it): the directory has what the name, %C (40 hex digits)
# and the jump's hash, leave.
_KEPT_ROOM = 107 - 17 - len("/") - 40 - len("-12345678")


def _kept_directory(make: bool = True) -> str | None:
    """The directory where the masters plug keeps listen: this user's alone (0700),
    plug/ in XDG_RUNTIME_DIR, else plug-UID in the temporary directory (or in /tmp,
    when those are too long for a socket's path). None when it is not there and
    not `make`."""
    uid = os.getuid()
    for parent, name in ((os.environ.get("XDG_RUNTIME_DIR"), "plug"), (_temporary_directory(), f"plug-{uid}"),
                         ("/tmp", f"plug-{uid}")):
        if parent and os.path.isabs(parent) and len(os.path.join(parent, name)) <= _KEPT_ROOM:
            break
    directory = os.path.join(parent, name)
    if make:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise PlugboxError(f"could not make {directory} for the kept connection: {error.strerror}",
                               "set PLUG_KEEP_CONNECTION=0 to keep none") from None
    try:
        found = os.lstat(directory)
    except FileNotFoundError:
        return None
    if not (stat.S_ISDIR(found.st_mode) and found.st_uid == uid and not found.st_mode & 0o077):
        raise PlugboxError(f"{directory} is not a directory of this user's alone (mode 0700), where plug "
                           "keeps its connections", "remove it, or set PLUG_KEEP_CONNECTION=0 to keep none")
    return directory


_DEFAULTS = os.path.join(os.path.dirname(__file__), "ssh_config")


class HostGone(PlugboxError):
    """The session ended without a last word: the connection was lost, or never made."""

    code = CONNECTION_FAILED


class Session:
    """One `plugbox --serve` on the host (or, with serve=False, a connection that
    only holds the master for `ride`); see the module's docstring."""

    def __init__(self, config: Config, prefix: str = "", serve: bool = True, confirm: bool = True):
        self.config = config
        self.local = config.local
        self.label = "this machine" if self.local else config.host
        self.prefix = prefix
        self.serve = serve
        self.hello: dict | None = None
        self.said: deque[str] = deque(maxlen=20)  # its last lines on stderr
        self._held: list[str] | None = []          # stderr lines held back until hello
        self._lock = threading.Lock()
        self.quiet = False                          # stop passing stderr on (plug is leaving)
        self.env = A.plugbox_env(login())
        self.base: list[str] = []
        self.process = None
        if self.local:
            if not serve:
                return  # nothing to hold: what rides runs here
            argv = [*local_plugbox(config.home), *protocol.ARGS]
            env = {**os.environ, **self.env}
        else:
            keep = config.keep_connection
            control = A.kept_control_path(_kept_directory(), config.jump) if keep else _control_path()
            self.base = A.ssh_base(control, config.jump, A.ssh_extra(os.environ), _DEFAULTS)
            remote = A.remote_serve(config.home, self.env["PLUGBOX_USER"]) if serve else A.HOLD
            argv = A.ssh_session(self.base, config.host, remote, keep)
            env = None
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            self.process = _Started(argv, env)
        except OSError as error:
            raise PlugboxError(f"could not run {argv[0]}: {error.strerror}", f"install {argv[0]}") from None
        self._relay: threading.Thread | None = None
        if confirm:
            self.confirm()

    def confirm(self) -> None:
        """Once its program runs, pass on what it says on stderr; a PlugboxError if it
        could not be run. (`confirm=False` leaves it to the caller: start_ahead starts
        every host's first, then confirms each.)"""
        if self.process is None or self._relay is not None:
            return
        try:
            self.process.started()
        except OSError as error:
            raise PlugboxError(f"could not run {error.filename}: {error.strerror}",
                               f"install {error.filename}") from None
        self._relay = threading.Thread(target=self._pass_on_stderr, daemon=True)
        self._relay.start()

    # --- what the host says on stderr -----------------------------------------

    def _pass_on_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                self.said.append(line)
                if self._held is not None:
                    self._held.append(line)
                    continue
            self._show(line)

    def _show(self, line: str) -> None:
        if self.quiet:
            return
        show(f"{self.prefix}{line}")

    def _greeted(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
        for line in held:
            self._show(line)

    # --- the exchange ------------------------------------------------------------

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(protocol.encode(message))
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # the session has ended: receive() says how

    def receive(self) -> dict:
        """The host's next message; HostGone if the session ends first."""
        self.greet()
        line = self.process.stdout.readline()
        if not line:
            raise self._gone()
        return protocol.decode(line, f"plugbox on {self.label}")

    def request(self, message: dict) -> dict:
        """Send one request and return the host's next message."""
        self.send(message)
        return self.receive()

    def greet(self) -> dict:
        """plugbox's hello, read once: who it is, and what the host has. (A session
        that only holds the connection says one empty line instead, once it runs.)"""
        if self.hello is not None:
            return self.hello
        line = self.process.stdout.readline()
        if not self.serve:
            if not line:
                raise self._gone(before_hello=True)
            self.hello = {}
            self._greeted()
            return self.hello
        try:
            hello = json.loads(line)[protocol.HELLO]
            number = hello["protocol"]
        except (ValueError, KeyError, TypeError):
            if not line:
                raise self._gone(before_hello=True) from None
            raise self._not_matching(f"plugbox on {self.label} does not speak plug's protocol") from None
        if number != protocol.NUMBER:
            raise self._not_matching(f"plugbox {hello.get('plugbox')} on {self.label} speaks protocol "
                                     f"{number}, this plug speaks {protocol.NUMBER}")
        self.hello = hello
        self._greeted()
        return hello

    def _not_matching(self, message: str) -> PlugboxError:
        self.quiet = True
        return PlugboxError(message, protocol.BOOTSTRAP_HINT, code=USAGE)

    def _gone(self, before_hello: bool = False) -> PlugboxError:
        """What it means that the session ended without a last word."""
        code = self.wait(10)
        if self._relay is not None:
            self._relay.join(2)
        said = [line for line in self.said if line.strip()]
        last = said[-1] if said else ""
        if before_hello and code == COMMAND_NOT_FOUND:
            return PlugboxError(f"plugbox is not installed on {self.label}", "run `plug bootstrap`")
        if before_hello and code == CONNECTION_FAILED and not self.local:
            return HostGone(f"could not connect to {self.label}: " + (last or "ssh exited with 255"),
                            f"check the host in plugbox.toml and that `ssh {self.label}` works")
        if before_hello and code == USAGE:
            return self._not_matching(f"plugbox on {self.label} does not speak plug's protocol")
        if before_hello and last.startswith("plugbox: "):  # it could not start: a python too old
            self.quiet = True
            return PlugboxError(f"plugbox on {self.label} could not start: {last[len('plugbox: '):]}")
        if before_hello:
            self._greeted()
        if code == CONNECTION_FAILED or code is None:
            return HostGone(f"lost the connection to {self.label}" + (f": {last}" if last else ""))
        return HostGone(f"plugbox on {self.label} stopped without finishing (exit {code})"
                        + (f": {last}" if last else ""))

    # --- what rides on the connection -----------------------------------------------

    def ride(self, remote: list[str], *, tty: bool = False, stdin: Path | None = None,
             capture: bool = False, out=None, err=None) -> Result:
        """Run `remote` (a host-side argv) on the host over this connection: on this
        terminal; or with `capture` its stdout kept, or `out`/`err` given its lines
        (see run), `stdin` read from a file. With host "local", it runs here, told
        plugbox_env as on a host."""
        if self.local:
            argv, env = remote, self.env
        else:
            self.greet()  # the master is up: what rides on it never logs in again
            argv, env = A.ssh_ride(self.base, self.config.host, remote, tty), None
        if capture or stdin is not None or out is not None or err is not None:
            return run(argv, out=CAPTURE if capture else out, err=err, stdin=stdin, env=env)
        # (on this terminal: nothing captured, the person sees what the host says)
        return Result(foreground(argv, env))

    def plugbox(self, args: list[str], **how) -> Result:
        """plugbox with `args` on the host (found as FIND_PLUGBOX finds it), over `ride`."""
        if self.local:
            return self.ride([*local_plugbox(self.config.home), *A.plugbox_args(self.config.home, args)],
                             **how)
        return self.ride(A.remote_plugbox(self.config.home, args, self.env["PLUGBOX_USER"]), **how)

    @property
    def rsh(self) -> str | None:
        """rsync's -e: ssh over this connection (None: rsync runs here, no ssh)."""
        return None if self.local else A.rsync_rsh(self.base)

    def destination(self, path: str) -> str:
        """rsync's destination for `path` on the host."""
        return A.destination(None if self.local else self.config.host, path)

    # --- the end ---------------------------------------------------------------

    def ended(self, seconds: float) -> bool:
        """Whether the session has ended (within `seconds`), its connection with it."""
        return self.wait(seconds) is not None

    def wait(self, seconds: float) -> int | None:
        if self.process is None:
            return 0
        return self.process.wait(seconds)

    def end_input(self) -> None:
        """The host sees the end of its input: before the switch it undoes, after it finishes."""
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def close(self, seconds: float = 5) -> int | None:
        """End the session: the host sees the end of its input; ssh is stopped if it lingers."""
        if self.process is None:
            return 0
        self.end_input()
        code = self.wait(seconds)
        if code is None:
            self.process.terminate()
            code = self.wait(2)
            if code is None:
                self.process.kill()
                code = self.wait(2)
        if self._relay is not None:
            self._relay.join(1)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def disconnect(config: Config) -> bool:
    """Close the master kept for `config`'s host (keep_connection) at once; whether
    there was one."""
    directory = _kept_directory(make=False)
    if config.local or directory is None:
        return False
    base = A.ssh_base(A.kept_control_path(directory, config.jump), config.jump, A.ssh_extra(os.environ), _DEFAULTS)
    said: list[str] = []
    if run(A.ssh_exit(base, config.host), out=CAPTURE, err=said.append).code == 0:
        return True
    why = next((line.strip() for line in reversed(said) if line.strip()), "")
    if "No such file or directory" in why or "Connection refused" in why:  # none, or a stale socket
        return False
    raise PlugboxError(f"could not close the connection kept to {config.host}" + (f": {why}" if why else ""))


_ahead: list[Session] = []  # (a Config is not hashable: its hooks are a dict)


def open_session(config: Config, prefix: str = "") -> Session:
    """The session for `config` (of one host): the one started ahead by plug's
    start-up, or a new one. Sessions started ahead for another config are closed."""
    for ahead in _ahead:
        if ahead.config == config:
            _ahead.remove(ahead)
            ahead.prefix = prefix
            return ahead
    while _ahead:  # started for another config: of no use
        _ahead.pop().close(0)
    return Session(config, prefix)


def start_ahead(config: Config) -> None:
    """Start the sessions now, one per host, so ssh connects while plug loads the rest
    of itself: every host's ssh is started before any is waited for."""
    started = [Session(config.for_host(host), confirm=False) for host in config.hosts]
    _ahead.extend(started)
    try:
        for session in started:
            session.confirm()
    except PlugboxError:
        while _ahead:  # the CLI starts them again, and says why they cannot start
            _ahead.pop().close(0)
        raise


# One line at a time on stderr: several hosts' sessions (threads) pass lines on at once.
_output = threading.Lock()


def show(line: str) -> None:
    """Write one whole line to stderr, never interleaved with another's."""
    with _output:
        try:
            sys.stderr.write(f"{line}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
