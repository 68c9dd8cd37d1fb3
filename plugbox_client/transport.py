"""Runs things: the only module of plug that starts processes (and the only user of `sh`).

Every plug command that works on the host talks to one `plugbox --serve` process
there, a `Session`: over ssh, the session is also the master connection
(ControlMaster=yes, ControlPersist=no), so the master lives exactly as long as
the session, and rsync's `-e` rides on it; for host = "local", plugbox runs here.
The exchange is JSON lines on the session's stdin and stdout (see
plugbox_server/serve.py); the host's messages and hook output come on its
stderr, which plug passes on line by line.

A session cannot outlive plug: on Linux, ssh and rsync get SIGTERM when plug dies
(PR_SET_PDEATHSIG), even by SIGKILL; the end of plug's side of the pipe is the
end of the session on the host, which then finishes or undoes what it was doing.
The control socket is a name in the temporary directory that ssh itself removes.

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

`Local` and `Ssh` run plain commands (bootstrap's install) over a master started
with `ssh -f` and closed with `ssh -O exit`.
"""

import contextlib
import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from plugbox_client import argv as A
from plugbox_client.config import Config
from plugbox_server.errors import PlugboxError

# ssh's own exit status when it could not connect or lost the connection; plug
# exits with it too in that case.
CONNECTION_FAILED = 255
CAPTURE = "capture"
DEVNULL = Path(os.devnull)


@dataclass
class Result:
    code: int
    stdout: str = ""


def run(argv: list[str], *, cwd: Path | None = None, out=None, err: Path | None = None,
        stdin: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run argv to its end and return its exit status (killed by signal N: 128+N).

    `out`: None passes stdout to the terminal; CAPTURE keeps it in Result.stdout; a
    callable gets it line by line; a Path receives it. `err`: None passes stderr to
    the terminal, a Path receives it. `stdin`: the terminal's, or the file given.
    """
    import sh  # only the commands that run something pay for it

    command = _command(argv[0])
    with contextlib.ExitStack() as files:
        kwargs = dict(
            _ok_code=range(256), _return_cmd=True, _decode_errors="replace",
            _cwd=str(cwd) if cwd else None,
            _env={**os.environ, **env} if env else None,
            _in=files.enter_context(open(stdin, "rb")) if stdin is not None else 0,
            _err=files.enter_context(open(err, "wb")) if err is not None else 2,
        )
        if isinstance(out, Path):
            kwargs["_out"] = files.enter_context(open(out, "wb"))
        elif out is None:
            kwargs["_out"] = 1
        else:  # sh reads it: through a pipe, not the pty it would make by default
            kwargs["_tty_out"] = False
            if callable(out):
                kwargs["_out"] = out
        running = command(*argv[1:], _bg=True, _bg_exc=False, _preexec_fn=_die_with_parent, **kwargs)
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
    stdout = done.stdout.decode("utf-8", "replace") if out is CAPTURE else ""
    return Result(done.exit_code, stdout)


def _command(name: str):
    """sh's command for `name`, our own output flushed before it writes its own."""
    import sh

    try:
        command = sh.Command(name)
    except sh.CommandNotFound:
        raise PlugboxError(f"{name}: not found on this machine", f"install {name}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    return command


def connect(config: Config):
    """The transport for `config`, to be entered with `with`."""
    return Local(config) if config.local else Ssh(config, A.ssh_extra(os.environ))


def local_user() -> str:
    """Who runs plug here: what plugbox's log records for the commands plug runs."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Local:
    """host = "local": plugbox and rsync on this machine, no ssh."""

    rsh = None

    def __init__(self, config: Config):
        self.home = config.home
        self.label = "this machine"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def plugbox(self, args: list[str], *, capture=False) -> Result:
        return run([*self._plugbox(), *A.plugbox_args(self.home, args)], out=CAPTURE if capture else None,
                   env=A.plugbox_env(local_user()))

    def _plugbox(self) -> list[str]:
        # Same order as argv.FIND_PLUGBOX on a remote host: HOME's own copy, the
        # login's (where bootstrap installs it), then PATH; and, here, the package
        # plug came with.
        for installed in (Path(self.home, ".local", "bin", "plugbox"),
                          Path(os.path.expanduser("~"), ".local", "bin", "plugbox")):
            if os.access(installed, os.X_OK):
                return [str(installed)]
        found = shutil.which("plugbox")
        return [found] if found else [sys.executable, "-m", "plugbox_server"]

    def install(self, zipapp: Path) -> Result:
        return run(A.remote_install(self.home), stdin=zipapp)

    def destination(self, path: str) -> str:
        return A.destination(None, path)


class Ssh:
    """Everything over one ssh master connection to config.host."""

    def __init__(self, config: Config, extra: list[str]):
        self.host = config.host
        self.home = config.home
        self.label = config.host
        self.jump = config.jump
        self.extra = extra
        self.base: list[str] = []
        self.directory: str | None = None

    @property
    def rsh(self) -> str:
        return A.rsync_rsh(self.base)

    def __enter__(self):
        self.directory = _private_directory()
        self.base = A.ssh_base(os.path.join(self.directory, "master"), self.jump, self.extra)
        log = Path(self.directory, "master.log")
        try:
            code = run(A.ssh_open(self.base, self.host), out=DEVNULL, err=log).code
            if code != 0:
                said = _last_line(log)
                raise PlugboxError(
                    f"could not connect to {self.host}: " + (said or f"ssh exited with {code}"),
                    "check the host in plugbox.toml and that `ssh " + self.host + "` works",
                    code=CONNECTION_FAILED,
                )
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc):
        try:
            run(A.ssh_close(self.base, self.host), out=DEVNULL, err=DEVNULL)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
        return False

    def plugbox(self, args: list[str], *, capture=False) -> Result:
        remote = A.remote_plugbox(self.home, args, local_user())
        result = run(A.ssh_run(self.base, self.host, remote), out=CAPTURE if capture else None)
        self._check(result)
        return result

    def install(self, zipapp: Path) -> Result:
        result = run(A.ssh_run(self.base, self.host, A.remote_install(self.home)), stdin=zipapp)
        self._check(result)
        return result

    def _check(self, result: Result) -> None:
        if result.code == CONNECTION_FAILED:
            raise PlugboxError(
                f"lost the connection to {self.host} (ssh exited with 255)",
                "see `plug status` once the host answers again",
                code=CONNECTION_FAILED,
            )
        if result.code == A.NOT_INSTALLED:
            raise PlugboxError(f"plugbox is not installed on {self.host}", "run `plug bootstrap`")

    def destination(self, path: str) -> str:
        return A.destination(self.host, path)


def _private_directory() -> str:
    # A unix socket path must stay short (about 100 bytes): fall back to /tmp when
    # TMPDIR is deep.
    directory = tempfile.mkdtemp(prefix="plug-")
    if len(directory) > 80:
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="plug-", dir="/tmp")
    return directory


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# --------------------------------------------------------------------- sessions

PROTOCOL = 1
_DEFAULTS = str(Path(__file__).with_name("ssh_config"))


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the end of plug's pipe still ends the session


def _control_path() -> str:
    """A fresh socket name that ssh creates and removes itself (short: sun_path)."""
    directory = tempfile.gettempdir()
    if len(directory) > 60:
        directory = "/tmp"
    return os.path.join(directory, f"plug-{os.getpid()}-{os.urandom(4).hex()}")


class HostGone(PlugboxError):
    """The session ended without a last word: the connection was lost, or never made."""

    code = CONNECTION_FAILED


class Session:
    """One `plugbox --serve` on the host; see the module's docstring."""

    def __init__(self, config: Config, prefix: str = ""):
        self.config = config
        self.local = config.local
        self.label = "this machine" if self.local else config.host
        self.prefix = prefix
        self.hello: dict | None = None
        self.said: deque[str] = deque(maxlen=20)  # its last lines on stderr
        self._held: list[str] | None = []          # stderr lines held back until hello
        self._lock = threading.Lock()
        self.quiet = False                          # stop passing stderr on (plug is leaving)
        user = local_user()
        if self.local:
            self.control = None
            self.base: list[str] = []
            argv = [*Local(config)._plugbox(), *A.PROTOCOL_ARGS]
            env = {**os.environ, **A.plugbox_env(user)}
        else:
            self.control = _control_path()
            self.base = A.ssh_base(self.control, config.jump, A.ssh_extra(os.environ), _DEFAULTS)
            argv = A.ssh_session(self.base, config.host, A.remote_serve(config.home, user))
            env = None
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent)
        except OSError as error:
            raise PlugboxError(f"could not run {argv[0]}: {error.strerror}", f"install {argv[0]}") from None
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
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # the session has ended: receive() says how

    def receive(self) -> dict:
        """The host's next message; HostGone if the session ends first."""
        if self.hello is None:
            self._receive_hello()
        line = self.process.stdout.readline()
        if not line:
            raise self._gone()
        try:
            return json.loads(line)
        except ValueError:
            raise PlugboxError(f"plugbox on {self.label} answered {line[:80]!r}, which plug does not understand",
                               "run `plug bootstrap` to install the plugbox that matches plug") from None

    def _receive_hello(self) -> None:
        line = self.process.stdout.readline()
        try:
            hello = json.loads(line)["hello"]
            protocol = hello["protocol"]
        except (ValueError, KeyError, TypeError):
            if not line:
                raise self._gone(before_hello=True) from None
            raise self._not_matching(f"plugbox on {self.label} does not speak plug's protocol") from None
        self.hello = hello
        if protocol != PROTOCOL:
            raise self._not_matching(f"plugbox {hello.get('plugbox')} on {self.label} speaks protocol "
                                     f"{protocol}, this plug speaks {PROTOCOL}")
        self._greeted()

    def _not_matching(self, message: str) -> PlugboxError:
        self.quiet = True
        return PlugboxError(message, "run `plug bootstrap` to install the plugbox that matches plug",
                            code=A.USAGE_EXIT)

    def _gone(self, before_hello: bool = False) -> PlugboxError:
        """What it means that the session ended without a last word."""
        code = self.wait(10)
        self._relay.join(2)
        said = [line for line in self.said if line.strip()]
        last = said[-1] if said else ""
        if before_hello and code == A.NOT_INSTALLED:
            return PlugboxError(f"plugbox is not installed on {self.label}", "run `plug bootstrap`")
        if before_hello and code == CONNECTION_FAILED and not self.local:
            return HostGone(f"could not connect to {self.label}: " + (last or "ssh exited with 255"),
                            f"check the host in plugbox.toml and that `ssh {self.label}` works")
        if before_hello and code == A.USAGE_EXIT:
            return self._not_matching(f"plugbox on {self.label} does not speak plug's protocol")
        if before_hello:
            self._greeted()
        if code == CONNECTION_FAILED or code is None:
            return HostGone(f"lost the connection to {self.label}" + (f": {last}" if last else ""))
        return HostGone(f"plugbox on {self.label} stopped without finishing (exit {code})"
                        + (f": {last}" if last else ""))

    def request(self, message: dict) -> dict:
        """Send one request and return the host's next message."""
        self.send(message)
        return self.receive()

    # --- the upload's path -------------------------------------------------------

    @property
    def rsh(self) -> str | None:
        return None if self.local else A.rsync_rsh(self.base)

    def destination(self, path: str) -> str:
        return A.destination(None if self.local else self.config.host, path)

    # --- the end ---------------------------------------------------------------

    def ended(self, seconds: float) -> bool:
        """Whether the session has ended (within `seconds`), its connection with it."""
        return self.wait(seconds) is not None

    def wait(self, seconds: float) -> int | None:
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def end_input(self) -> None:
        """The host sees the end of its input: before the switch it undoes, after it finishes."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def close(self, seconds: float = 5) -> int | None:
        """End the session: the host sees the end of its input; ssh is stopped if it lingers."""
        self.end_input()
        code = self.wait(seconds)
        if code is None:
            self.process.terminate()
            code = self.wait(2)
            if code is None:
                self.process.kill()
                code = self.wait(2)
        self._relay.join(1)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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
    """Start the sessions now (one per host), so ssh connects while plug loads the rest of itself."""
    for host in config.hosts:
        _ahead.append(Session(config.for_host(host)))


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


# ---------------------------------------------------------------- bootstrap, exec, ssh
# The commands that hand this terminal to the host (plug exec, plug ssh) and
# bootstrap's install, for either transport. Kept apart from the classes above,
# which the deploy path uses.

def install_plugbox(host, zipapp: Path, into_home: bool) -> Result:
    """Install the zipapp on the host (see argv.INSTALL_PLUGBOX); stdout: the paths written."""
    remote = A.remote_install(host.home, into_home)
    if isinstance(host, Local):
        return run(remote, stdin=zipapp, out=CAPTURE)
    result = run(A.ssh_run(host.base, host.host, remote), stdin=zipapp, out=CAPTURE)
    host._check(result)
    return result


def foreground(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run argv on this terminal, with plug's own stdin, stdout and stderr (no pipe, no
    pty in between), and return its exit status (killed by signal N: 128+N).

    A Ctrl-C reaches it directly, as it does plug: plug waits for its end and
    passes its status on instead of dying first.
    """
    import signal

    import sh

    command = _command(argv[0])
    # A handler, not SIG_IGN, which the child would inherit through exec.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        command(*argv[1:], _fg=True, _env={**os.environ, **env} if env else None)
        return 0
    except sh.ErrorReturnCode as e:
        return 128 - e.exit_code if e.exit_code < 0 else e.exit_code
    finally:
        signal.signal(signal.SIGINT, previous)


def exec_in_live(host, command: list[str], tty: bool = False) -> int:
    """`plugbox exec -- COMMAND` on the host, on this terminal; returns COMMAND's status."""
    if isinstance(host, Local):
        args = A.plugbox_args(host.home, ["exec", "--", *command])
        return foreground([*host._plugbox(), *args], env=A.plugbox_env(local_user()))
    # Asked first, since any status, NOT_INSTALLED included, may be COMMAND's own.
    host._check(run(A.ssh_run(host.base, host.host, A.remote_locate(host.home)), out=DEVNULL, stdin=DEVNULL))
    remote = A.remote_plugbox(host.home, ["exec", "--", *command], local_user())
    build = A.ssh_terminal if tty else A.ssh_run
    return foreground(build(host.base, host.host, remote))


def shell_in_live(host) -> int:
    """An interactive login shell on the host in HOME/live; returns its exit status."""
    if isinstance(host, Local):
        found = Path(host.home, "live").is_dir()
    else:
        asked = run(A.ssh_run(host.base, host.host, A.remote_has_live(host.home)), out=DEVNULL, stdin=DEVNULL)
        host._check(asked)
        found = asked.code == 0
    if not found:
        where = f"{host.home}/live" if host.home else "~/live"
        raise PlugboxError(f"no live version on {host.label}: {where} does not exist",
                           "deploy one first with `plug deploy`")
    if isinstance(host, Local):
        return foreground(A.remote_shell(host.home))
    return foreground(A.ssh_terminal(host.base, host.host, A.remote_shell(host.home)))
