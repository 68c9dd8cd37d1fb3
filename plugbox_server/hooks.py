"""A version's plugbox.toml as the host reads it, the running of its hooks, and of
the command of `plugbox exec`.

Reads a version's own plugbox.toml through layout.settings (the rules both sides
share: hooks, timeouts, shared paths, [env], [release]); makes the shared links without ever following a link; runs hook
lines with /bin/sh -c, each in a process group of its own, their output read
from a pipe and passed on to the caller and to the kept record as it comes.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import time
from pathlib import Path

from plugbox_server.errors import COMMAND_NOT_FOUND, COMMAND_NOT_RUN, HookFailed, PlugboxError
from plugbox_server.layout import CONFIG, DEFAULT_TIMEOUTS, Checker, Settings, settings
from plugbox_server.output import relay, say

# subprocess, selectors, signal and tomllib are imported where a hook runs or a
# plugbox.toml is read: a command that does neither (a status, a rollback of a
# version without hooks) pays for none of them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Seconds between the TERM sent to a hook past its time and the KILL.
GRACE = 5
# At most this much is read from a pipe that a hook left to a process still writing.
_DRAIN = 1 << 20


def load(version_dir: Path, shown: str) -> Settings:
    """Read and check the version's plugbox.toml (none: no hooks); `shown` is how
    errors name the file. The rules are the client's own (layout.settings)."""
    try:
        with open(version_dir / CONFIG, "rb") as f:
            return parse(f.read(), shown)
    except FileNotFoundError:
        return Settings()
    except OSError as error:
        raise PlugboxError(f"{shown}: {error.strerror}")


def parse(text: bytes, shown: str) -> Settings:
    """Check a plugbox.toml's text as load() does."""
    import tomllib

    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PlugboxError(f"{shown}: not valid TOML: {error}", "fix it and deploy again")
    return settings(data, Checker(shown))


class _Link(Exception):
    """A component of a path is a link, or not a directory: nothing is made through it."""

    def __init__(self, upto: str, mode: int):
        self.upto = upto
        self.what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"


def _walk(base_fd: int, parts: list[str], make: bool) -> int | None:
    """A descriptor of the directory base/parts, each component opened without following
    a link (and made when `make`); None when one is missing and not `make`."""
    fd = os.dup(base_fd)
    try:
        for i, part in enumerate(parts):
            if make:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except FileNotFoundError:
                if make:
                    raise
                os.close(fd)
                return None
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise _Link("/".join(parts[: i + 1]),
                            os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode) from None
            os.close(fd)
            fd = inner
        return fd
    except BaseException:
        os.close(fd)
        raise


def _lstat_at(fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def link_shared(home: Path, version_dir: Path, config: Settings, shown: str) -> None:
    """Link each shared path of the version into HOME/shared/, created empty on first use.

    Every component is opened relative to the one before it, never following a
    link: an upload holding `data -> /elsewhere` never makes plugbox create or
    remove anything there (invariant 6).
    """
    if not config.shared:
        return
    try:
        home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        version_fd = os.open(version_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                             | os.O_CLOEXEC)
    except OSError as error:
        raise PlugboxError(f"could not open {shown}: {error.strerror}") from None
    try:
        # Refuse before making anything, so that a refusal changes nothing.
        for path_text in config.shared:
            parts = path_text.split("/")
            _refuse_links(version_fd, parts, shown, path_text, uploaded=True)
            _refuse_links(home_fd, ["shared", *parts], "shared", path_text, uploaded=False)
        for path_text in config.shared:
            parts = path_text.split("/")
            try:
                store_fd = _walk(home_fd, ["shared", *parts], make=True)
                os.close(store_fd)
                parent_fd = _walk(version_fd, parts[:-1], make=True)
                try:
                    if _lstat_at(parent_fd, parts[-1]) is not None:
                        os.unlink(parts[-1], dir_fd=parent_fd)  # a link: checked above
                    target = posixpath.relpath(posixpath.join("/", "shared", path_text),
                                               posixpath.join("/", "deploy", "V", *parts[:-1]))
                    os.symlink(target, parts[-1], dir_fd=parent_fd)
                finally:
                    os.close(parent_fd)
            except _Link as link:
                raise PlugboxError(f"{shown}/{path_text}: {link.upto} is {link.what}; "
                                   "plugbox never makes a shared path through a link")
            except OSError as error:
                raise PlugboxError(f"could not link {shown}/{path_text} -> shared/{path_text}: "
                                   f"{error.strerror}")
    finally:
        os.close(home_fd)
        os.close(version_fd)


def _refuse_links(base_fd: int, parts: list[str], shown: str, path_text: str,
                  uploaded: bool) -> None:
    try:
        parent_fd = _walk(base_fd, parts[:-1], make=False)
    except _Link as link:
        raise PlugboxError(
            f"{shown}/{path_text}: {shown}/{link.upto} is {link.what}; "
            "plugbox never makes a shared path through a link",
            "leave it out of the upload" if uploaded else f"make {shown}/{link.upto} a directory")
    except OSError as error:
        raise PlugboxError(f"could not read {shown}/{path_text}: {error.strerror}")
    if parent_fd is None:
        return
    try:
        mode = _lstat_at(parent_fd, parts[-1])
    finally:
        os.close(parent_fd)
    if mode is None:
        return
    if uploaded and not stat.S_ISLNK(mode):
        raise PlugboxError(f"{shown}/{path_text}: uploaded, but listed in service.shared",
                           "leave shared paths out of the upload")
    if not uploaded and not stat.S_ISDIR(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
        raise PlugboxError(f"shared/{path_text} is {what}; "
                           "plugbox never makes a shared path through a link",
                           f"make shared/{path_text} a directory")


def run(hook: str, lines: list[str], *, version: str, cwd: Path, env: dict[str, str],
        timeout: float | None = None, keep: "Callable[[bytes], None] | None" = None) -> None:
    """Run the hook's lines in order; the first that fails stops it and raises HookFailed.

    `timeout` (seconds, default DEFAULT_TIMEOUTS) bounds all the lines together;
    `keep` receives everything they print, for the record kept on the host.
    """
    limit = timeout if timeout is not None else DEFAULT_TIMEOUTS[hook]
    deadline = time.monotonic() + limit
    keep = keep or (lambda data: None)
    for line in lines:
        announce = f"{hook} of {version}: {line}"
        say(announce)
        keep(f"--- {announce}\n".encode())
        try:
            returncode, timed_out = _run_line(line, cwd, env, deadline, keep)
        except OSError as error:
            failure = f"{hook} of {version} could not run {line!r}: {error.strerror}"
            keep(f"--- {failure}\n".encode())
            raise HookFailed(failure) from None
        if timed_out:
            failure = (f"{hook} of {version} failed: {line!r} was still running when the "
                       f"{hook} time limit of {limit:g} s ran out, and was killed")
        elif returncode != 0:
            how = (f"was killed by signal {-returncode}" if returncode < 0
                   else f"exited {returncode}")
            failure = f"{hook} of {version} failed: {line!r} {how}"
        else:
            continue
        keep(f"--- {failure}\n".encode())
        raise HookFailed(failure)


def _run_line(line: str, cwd: Path, env: dict[str, str], deadline: float,
              keep: "Callable[[bytes], None]") -> tuple[int, bool]:
    """Run one line in a new session; pass its output on; (exit status, timed out)."""
    import selectors
    import signal
    import subprocess

    read_fd, write_fd = os.pipe()
    try:
        # A session of its own: past its time the whole group is killed, and no
        # signal meant for plugbox (a hang-up, a Ctrl-C) reaches it.
        process = subprocess.Popen(["/bin/sh", "-c", line], cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                                   start_new_session=True)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)

    def pass_on(chunk: bytes) -> None:
        relay(chunk)
        keep(chunk)

    timed_out = killed = False
    kill_at = 0.0
    pidfd = _pidfd(process.pid)
    selector = selectors.DefaultSelector()
    os.set_blocking(read_fd, False)
    selector.register(read_fd, selectors.EVENT_READ)
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ)
    try:
        while process.poll() is None:
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                _signal_group(process.pid, signal.SIGTERM)
                kill_at = now + GRACE
            if timed_out and not killed and now >= kill_at:
                killed = True
                _signal_group(process.pid, signal.SIGKILL)
            if killed:
                wait = 1.0 if pidfd is not None else 0.1
            else:
                wait = (kill_at if timed_out else deadline) - now
                if pidfd is None:  # no way to hear of the exit: look now and then
                    wait = min(wait, 0.1)
            for key, _ in selector.select(timeout=max(wait, 0.0)):
                if key.fd == read_fd:
                    chunk = _read(read_fd)
                    if chunk:
                        pass_on(chunk)
                    elif chunk == b"":  # every writer has gone: only the exit is left
                        selector.unregister(read_fd)
        # The hook's own process has ended. What it wrote is in the pipe now; a
        # process it left behind may hold the pipe for ever: take what is there
        # and close it, rather than wait for that process to end.
        drained = 0
        while drained < _DRAIN:
            chunk = _read(read_fd)
            if not chunk:
                break
            drained += len(chunk)
            pass_on(chunk)
        if timed_out and not killed:
            _end_group(process.pid, kill_at)
        return process.returncode, timed_out
    except BaseException:
        # plugbox itself is interrupted (Ctrl-C): do not leave the hook running alone.
        _signal_group(process.pid, signal.SIGTERM)
        raise
    finally:
        selector.close()
        os.close(read_fd)
        if pidfd is not None:
            os.close(pidfd)


def _end_group(pid: int, kill_at: float) -> None:
    """After a TERM: the rest of the hook's group has until `kill_at`, then KILL."""
    import signal

    while time.monotonic() < kill_at:
        if not _group_alive(pid):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. A zombie does not count: where
    nothing reaps orphans (a container's init), it would otherwise count for ever."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = os.scandir("/proc")
    except OSError:
        return True
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
                return True
    return False


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _read(fd: int) -> bytes | None:
    """What the pipe holds now: bytes, b"" at its end, None when nothing is there yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` ends (Linux 5.3), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def run_attached(argv: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run argv with plugbox's own stdin, stdout and stderr, and return its status
    (killed by signal N: 128+N); what `plugbox exec` and `plugbox shell` do for plug.

    The command ends when its caller goes away: when the reader of stdout is gone
    (plug's ssh connection ended, or a terminal hung up) it gets HUP, then TERM,
    then KILL, with every process of its group; a signal to plugbox is passed on.
    Without a terminal it runs in a session of its own, so that its whole group
    can be ended; on a terminal it stays in plugbox's, where the terminal's own
    signals (a Ctrl-C) reach it.
    """
    import contextlib
    import select
    import signal
    import subprocess

    terminal = os.isatty(0) and os.isatty(1)
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=not terminal)
    except FileNotFoundError:
        raise PlugboxError(f"{argv[0]!a}: command not found on this host", code=COMMAND_NOT_FOUND) from None
    except OSError as error:
        raise PlugboxError(f"could not run {argv[0]!a}: {error.strerror}", code=COMMAND_NOT_RUN) from None

    def send(signum: int) -> None:
        if terminal:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        else:
            _signal_group(process.pid, signum)

    def pass_on(signum, frame) -> None:
        if not terminal or signum != signal.SIGINT:  # a terminal's Ctrl-C reached it already
            send(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, pass_on)
    poller = select.poll()
    poller.register(1, 0)  # no event asked for: POLLERR and POLLHUP come all the same
    pidfd = _pidfd(process.pid)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    try:
        ending = iter((signal.SIGHUP, signal.SIGTERM, signal.SIGKILL))
        gone = False
        while process.poll() is None:
            events = dict(poller.poll(100 if pidfd is None or gone else 1000))
            if events.get(1, 0) & (select.POLLERR | select.POLLHUP) and not gone:
                gone = True
                poller.unregister(1)
            if gone:  # the caller has gone: end the command, more firmly each second
                signum = next(ending, None)
                if signum is not None:
                    send(signum)
                    deadline = time.monotonic() + 1
                    while process.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.02)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if not terminal and gone:
        _signal_group(process.pid, signal.SIGKILL)  # what the command left behind
    code = process.returncode
    return 128 - code if code < 0 else code


def environment(home: Path, version: str, version_dir: Path, previous: str | None,
                values: dict[str, str] | None = None) -> dict[str, str]:
    """What a hook (and plugbox exec) gets: plugbox's own environment, the version's
    (`values`, from `plug env set` and [env]), and the PLUGBOX_* variables."""
    env = dict(os.environ)
    env.update(values or {})
    env.update(PLUGBOX_HOME=str(home), PLUGBOX_VERSION=version,
               PLUGBOX_VERSION_DIR=str(version_dir), PLUGBOX_PREVIOUS=previous or "")
    return env
