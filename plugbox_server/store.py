"""The one module that reads and writes the links in deploy/.

It reads deploy/ into a `chain.Chain`, carries out `chain.Op`s, switches live,
holds the lock and keeps the log. Every link is written as a temporary link in
deploy/ renamed over its final path, then the directory is fsynced, so a kill
leaves each link either old or new (see chain.py for the order of writes).
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import itertools
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from plugbox_server import chain as c
from plugbox_server.errors import Busy, PlugboxError
from plugbox_server.names import is_version_name

_counter = itertools.count()


def os_error(what: str, error: OSError) -> PlugboxError:
    return PlugboxError(f"{what}: {error.strerror or error}")


class Store:
    def __init__(self, home: Path):
        self.home = home.absolute()
        self.deploy = self.home / "deploy"

    # --- reading ------------------------------------------------------------

    def exists(self) -> bool:
        return self.deploy.is_dir()

    def read(self) -> c.Chain:
        chain = c.Chain()
        chain.home_live, chain.home_live_is_link = _readlink(self.home / "live")
        if not self.exists():
            return chain
        # Plain strings, not Path objects: this loop is the only cost that grows
        # with the number of versions.
        with os.scandir(self.deploy) as entries:
            for entry in entries:
                name = entry.name
                if name == c.LIVE:
                    chain.live, chain.live_is_link = _readlink(entry.path)
                elif name.startswith(c.REMOVING):
                    chain.removing[name[len(c.REMOVING):]] = _links(entry.path)
                elif name.startswith((c.TMP_LINK, c.NEW)):
                    chain.leftovers.append(name)
                elif is_version_name(name) and entry.is_dir(follow_symlinks=False):
                    chain.versions[name] = _links(entry.path)
        return chain

    def version_dir(self, name: str) -> Path:
        return self.deploy / name

    # --- writing --------------------------------------------------------------

    def apply(self, ops: list[c.Op]) -> None:
        for op in ops:
            if isinstance(op, c.SetLink):
                self.set_link(op.path, op.target)
            elif isinstance(op, c.Unlink):
                self.unlink(op.path)
            else:
                self.remove_tree(op.path)

    def set_link(self, path: str, target: str) -> None:
        """Point deploy/`path` at `target` by renaming a fresh link over it."""
        final = self.deploy / path
        temporary = self.deploy / f"{c.TMP_LINK}{os.getpid()}-{next(_counter)}"
        try:
            os.symlink(target, temporary)
            os.replace(temporary, final)
        except OSError as error:
            _quietly_unlink(temporary)
            raise os_error(f"could not link {_shown(final, self.home)} -> {target}", error)
        _fsync_dir(final.parent)

    def unlink(self, path: str) -> None:
        final = self.deploy / path
        try:
            os.unlink(final)
        except FileNotFoundError:
            return
        except OSError as error:
            raise os_error(f"could not remove {_shown(final, self.home)}", error)
        _fsync_dir(final.parent)

    def remove_tree(self, path: str) -> None:
        """Delete deploy/`path`; links inside are removed, never followed."""
        target = self.deploy / path
        try:
            if target.is_symlink() or not target.is_dir():
                target.unlink(missing_ok=True)
            else:
                shutil.rmtree(target)
        except OSError as error:
            raise os_error(f"could not delete {_shown(target, self.home)}", error)
        _fsync_dir(self.deploy)

    def make_deploy(self) -> None:
        try:
            self.deploy.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise os_error(f"could not create {self.deploy}", error)

    def make_version(self, name: str, previous: str | None, fill=None) -> None:
        """Create the version `name`, whole, with its previous link (and what `fill(dir)` writes)."""
        building = self.deploy / f"{c.NEW}{name}"
        try:
            building.mkdir()
            if previous:
                os.symlink(c.link_to(previous), building / "previous")
            if fill:
                fill(building)
            _fsync_dir(building)
            os.rename(building, self.deploy / name)
        except OSError as error:
            raise os_error(f"could not create version deploy/{name}", error)
        _fsync_dir(self.deploy)

    def begin_remove(self, name: str) -> None:
        """The commit point of a remove: from here on, check --repair finishes it."""
        try:
            os.rename(self.deploy / name, self.deploy / f"{c.REMOVING}{name}")
        except OSError as error:
            raise os_error(f"could not remove deploy/{name}", error)
        _fsync_dir(self.deploy)

    def switch_live(self, name: str | None) -> None:
        """Point deploy/live at `name` (the commit point), and HOME/live at deploy/live."""
        if name is None:
            self.unlink(c.HOME_LIVE)
            self.unlink(c.LIVE)
            return
        self.set_link(c.LIVE, name)
        home_live, is_link = _readlink(self.home / "live")
        if is_link and home_live != c.HOME_LIVE_TARGET:
            self.set_link(c.HOME_LIVE, c.HOME_LIVE_TARGET)

    # --- the lock and the log -------------------------------------------------

    @contextmanager
    def lock(self, command: str):
        """Hold the exclusive lock on deploy/ for the whole command, or fail at once."""
        path = self.deploy / c.LOCK
        try:
            # O_CLOEXEC (Python's default) keeps the lock from services that hooks start.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise os_error(f"could not open {_shown(path, self.home)}", error)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise os_error(f"could not lock {_shown(path, self.home)}", error)
                raise Busy(f"deploy/ is locked by {_holder_of(fd)}",
                           "try again when it has finished") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} (plugbox {command}) since {utc_now()}\n".encode())
            yield
        finally:
            os.close(fd)

    def holder(self) -> str | None:
        """Who holds the lock now, if anyone; takes nothing and creates nothing."""
        try:
            fd = os.open(self.deploy / c.LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except OSError:
            return _holder_of(fd)
        finally:
            os.close(fd)

    def append_log(self, command: str, before: str | None, after: str | None, outcome: str) -> None:
        user = os.environ.get("PLUGBOX_USER") or _user()
        fields = [utc_now(), user, command, before or "-", after or "-", outcome]
        line = "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n"
        try:
            fd = os.open(self.deploy / c.LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # the log is a record, never a reason to fail a command that succeeded

    def read_log(self) -> list[list[str]]:
        try:
            text = (self.deploy / c.LOG).read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line.split("\t") for line in text.splitlines() if line]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _holder_of(fd: int) -> str:
    """What the lock file, open on `fd` at its start, says of the command holding it."""
    return os.read(fd, 4096).decode(errors="replace").strip() or "another command"


def _readlink(path: str | Path) -> tuple[str | None, bool]:
    """(text of the link, True), (None, True) when absent, (None, False) when not a link."""
    try:
        return os.readlink(path), True
    except FileNotFoundError:
        return None, True
    except OSError as error:
        if error.errno == errno.EINVAL:
            return None, False
        raise


def _links(version: str) -> c.Links:
    previous, _ = _readlink(version + "/previous")
    after, _ = _readlink(version + "/next")
    return c.Links(previous, after)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _quietly_unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _shown(path: Path, home: Path) -> str:
    try:
        return str(path.relative_to(home))
    except ValueError:
        return str(path)
