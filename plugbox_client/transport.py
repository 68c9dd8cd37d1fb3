"""Runs things: the only module of plug that starts processes (and the only user of `sh`).

Two transports share one small interface, so deploy.py never asks where the host is:

- `Local` (host = "local"): plugbox runs on this machine, rsync copies locally.
- `Ssh`: every remote step rides one ssh connection. Entering the transport starts a
  master connection (ControlMaster) whose socket lives in a private temporary
  directory; ssh commands and rsync's `-e` reuse it; leaving the transport closes it
  (`ssh -O exit`) and removes the directory. Jump hosts go to `-J`. The user's own
  ~/.ssh/config applies as usual: plug passes no -F of its own.

Extra ssh arguments (tests, unusual setups) come from the environment and go on every
ssh plug runs, the master, the commands and rsync's `-e`, after plug's own connection
options (ControlPath, ControlMaster, which they cannot override) and before the host,
so they win over ~/.ssh/config:

    PLUG_SSH_CONFIG=FILE     use FILE instead of ~/.ssh/config (`ssh -F FILE`)
    PLUG_SSH_OPTIONS=ARGS    more ssh arguments, split like a shell splits words,
                             e.g. "-p 2222 -i /path/key -o UserKnownHostsFile=/path/known
                                   -o StrictHostKeyChecking=yes"

Output of remote commands is never captured unless the caller needs it as data
(`plugbox next-version`, `plugbox status --json`): hook output streams straight to
the terminal. stderr always passes through.
"""

import contextlib
import getpass
import os
import shutil
import sys
import tempfile
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
    import sh  # 40 ms: only the commands that run something pay for it

    try:
        command = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise PlugboxError(f"{argv[0]}: not found on this machine", f"install {argv[0]}") from None
    sys.stdout.flush()
    sys.stderr.flush()
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
        try:
            done = command(*argv[1:], **kwargs)
        except sh.ErrorReturnCode as e:  # only a signal gets here, given _ok_code
            return Result(128 - e.exit_code if e.exit_code < 0 else e.exit_code)
    stdout = done.stdout.decode("utf-8", "replace") if out is CAPTURE else ""
    return Result(done.exit_code, stdout)


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

    try:
        command = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise PlugboxError(f"{argv[0]}: not found on this machine", f"install {argv[0]}") from None
    sys.stdout.flush()
    sys.stderr.flush()
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
