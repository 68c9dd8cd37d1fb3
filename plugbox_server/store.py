"""The one module that writes deploy/ itself: its links, its versions' coming and
going, the lock, the log and the kept hook output. (A version's record is
record.py's; its shared links are hooks.py's.)

It reads deploy/ into a `chain.Chain`, carries out `chain.Op`s, makes versions in
staging directories, switches live, holds the lock and keeps the log. Every link
is written as a temporary link in deploy/ renamed over its final path, then the
directory is fsynced, so a kill leaves each link either old or new (see chain.py
for the order of writes). Its names come from layout.py.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path

from plugbox_server import __version__
from plugbox_server import chain as c
from plugbox_server import inuse
from plugbox_server import layout as L
from plugbox_server.errors import Busy, PlugboxError
from plugbox_server.names import utc_now, who, who_at
from plugbox_server.output import say

_counter = itertools.count()


def os_error(what: str, error: OSError) -> PlugboxError:
    return PlugboxError(f"{what}: {error.strerror or error}")


# Every file plugbox writes (or shows) is opened with these: never through a link,
# never blocking on a FIFO put in its place, never inherited by hooks.
_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OUTPUT_LIMIT = 1 << 20  # bytes of kept hook output per file, .output and .output.1


class Store:
    def __init__(self, home: "Path | str"):
        self.home = Path(home).absolute()
        self.deploy = self.home / L.DEPLOY
        if self.home.exists() and not self.home.is_dir():
            raise PlugboxError(f"{self.home}: the home is not a directory",
                               "give the service's home with --home DIR or PLUGBOX_HOME")

    # --- reading ------------------------------------------------------------

    def exists(self) -> bool:
        return self.deploy.is_dir()

    def read(self, records: bool = True) -> c.Chain:
        """deploy/ as a Chain: one scandir of deploy/, whatever its size; each version's
        links are read when first asked for (chain.Versions). With `records`, the
        names in deploy/.plugbox/ too (chain.records): what `check` compares with
        the versions; a command that only needs its leftovers cleared leaves it."""
        chain = c.Chain(records=set() if records else None)
        chain.home_live, chain.home_live_is_link = _readlink(self.home / L.HOME_LIVE)
        if not self.exists():
            return chain
        deploy = str(self.deploy)
        directories = []
        # Plain strings, not Path objects, and a version's name checked only when it
        # is asked for: this loop is the only cost that grows with the number of versions.
        with os.scandir(deploy) as entries:
            for entry in entries:
                name = entry.name
                if name[0] != ".":
                    if name == L.LIVE:
                        chain.live, chain.live_is_link = _readlink(entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        directories.append(name)
                elif name.startswith(L.REMOVING):
                    chain.removing[name[len(L.REMOVING):]] = _links(entry.path)
                elif name.startswith((L.TMP_LINK, L.NEW)):
                    chain.leftovers.append(name)
                elif name in L.BOOKKEEPING_FILES and not entry.is_file(follow_symlinks=False):
                    chain.odd_files.append(name)
                elif name == L.RECORDS and records and entry.is_dir(follow_symlinks=False):
                    chain.records = set(os.listdir(entry.path))
        chain.versions = c.Versions(directories, lambda name: _links(f"{deploy}/{name}"))
        return chain

    def read_live(self) -> str | None:
        """The text of deploy/live, or None."""
        try:
            return _readlink(self.deploy / L.LIVE)[0]
        except OSError:
            return None

    def version_dir(self, name: str) -> Path:
        return self.deploy / name

    # --- writing --------------------------------------------------------------

    def apply(self, ops: list[c.Op]) -> None:
        """Carry out `ops` in order, with one fsync per directory touched.

        The links are made durable before the first deletion, so a crash never
        leaves a link to a version already gone.
        """
        links: set[Path] = set()
        deleted: set[Path] = set()
        try:
            for op in ops:
                if isinstance(op, c.SetLink):
                    links.add(self.set_link(op.path, op.target, sync=False))
                elif isinstance(op, c.Unlink):
                    links.add(self.unlink(op.path, sync=False))
                else:
                    _fsync_all(links)  # empties it: the links are durable once
                    deleted.add(self.remove_tree(op.path, sync=False))
        finally:
            _fsync_all(links | deleted)

    def set_link(self, path: str, target: str, sync: bool = True) -> Path:
        """Point deploy/`path` at `target` by renaming a fresh link over it."""
        final = self.deploy / path
        temporary = self.deploy / f"{L.TMP_LINK}{os.getpid()}-{next(_counter)}"
        try:
            os.symlink(target, temporary)
            os.replace(temporary, final)
        except OSError as error:
            _quietly_unlink(temporary)
            raise os_error(f"could not link {_shown(final, self.home)} -> {target}", error)
        if sync:
            _fsync_dir(final.parent)
        return final.parent

    def unlink(self, path: str, sync: bool = True) -> Path:
        final = self.deploy / path
        try:
            os.unlink(final)
        except FileNotFoundError:
            return final.parent
        except OSError as error:
            raise os_error(f"could not remove {_shown(final, self.home)}", error)
        if sync:
            _fsync_dir(final.parent)
        return final.parent

    def remove_tree(self, path: str, sync: bool = True) -> Path:
        """Delete deploy/`path`; links inside are removed, never followed, nor one on
        the way to it (a deploy/.plugbox that is a link: its records are not plugbox's)."""
        import shutil

        target = self.deploy / path
        parent = target.parent
        while parent != self.deploy:
            if parent.is_symlink():
                return self.deploy
            parent = parent.parent
        try:
            if target.is_symlink() or not target.is_dir():
                target.unlink(missing_ok=True)
            else:
                # rmtree works from directory descriptors and never follows a link.
                shutil.rmtree(target)
        except OSError as error:
            raise os_error(f"could not delete {_shown(target, self.home)}", error)
        if sync:
            _fsync_dir(self.deploy)
        return self.deploy

    def remove_versions(self, chain: c.Chain, names: list[str]) -> None:
        """Remove `names` in one pass: rename all (the commit point), re-point, delete.

        If the disk refuses before any link was re-pointed (a full disk: each
        link needs an inode), the versions are renamed back and nothing changed.
        """
        renamed: list[str] = []
        try:
            for name in names:
                os.rename(self.deploy / name, self.deploy / f"{L.REMOVING}{name}")
                renamed.append(name)
        except OSError as error:
            self._rename_back(renamed)
            raise os_error(f"could not remove deploy/{names[len(renamed)]}", error)
        _fsync_dir(self.deploy)
        _, ops = c.plan_remove(chain, names)
        links = [op for op in ops if not isinstance(op, c.RemoveTree)]
        if links:
            try:
                self.apply(links[:1])
            except PlugboxError as error:
                self._rename_back(renamed)
                raise PlugboxError(f"{error.message}; nothing removed") from None
        self.apply(ops[1:] if links else ops)

    def _rename_back(self, names: list[str]) -> None:
        for name in names:
            try:
                os.rename(self.deploy / f"{L.REMOVING}{name}", self.deploy / name)
            except OSError:
                pass  # left for check --repair, which finishes the remove
        if names:
            _fsync_dir(self.deploy)

    def make_deploy(self) -> None:
        self._refuse_links()
        try:
            self.deploy.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise os_error(f"could not create {self.deploy}", error)

    def make_private_dir(self, name: str) -> Path:
        """deploy/NAME as a directory of this login's alone (mode 0700), made if
        missing; refused when it is a link, not a directory, or another's."""
        self.make_deploy()
        path = self.deploy / name
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise os_error(f"could not create {_shown(path, self.home)}", error)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PlugboxError(f"{_shown(path, self.home)} is not a directory of this login's own",
                               "remove it; plugbox makes it again")
        os.chmod(path, 0o700)
        return path

    def make_version(self, name: str, previous: str | None, fill=None) -> None:
        """Create the version `name`, whole, with its previous link (and what `fill(dir)` writes)."""
        building = self.make_staging(name, previous)
        if fill:
            try:
                fill(building)
            except BaseException:
                self.remove_staging(name)
                raise
        self.commit_staging(name)

    def staging_dir(self, name: str) -> Path:
        return self.deploy / f"{L.NEW}{name}"

    def make_staging(self, name: str, previous: str | None, config: bytes | None = None) -> Path:
        """deploy/.new-NAME with its previous link (and plugbox.toml): not yet a version.

        A record already there for the new name (deploy/.plugbox/NAME) is no
        version's, since the name is new (left by hand, or by an older plugbox that
        removed records last): it goes first, so that nothing of it is taken for
        the new version's."""
        building = self.staging_dir(name)
        self._remove_record(name)
        try:
            building.mkdir()
        except OSError as error:
            raise os_error(f"could not create version deploy/{name}", error)
        try:
            if previous:
                os.symlink(c.link_to(previous), building / L.PREVIOUS)
            if config is not None:
                self._put_config(building, previous, config)
        except OSError as error:
            self.remove_staging(name)
            raise os_error(f"could not create version deploy/{name}", error)
        return building

    def _put_config(self, building: Path, previous: str | None, config: bytes) -> None:
        """Write plugbox.toml into `building`: a hard link to the previous version's
        when it is the same, as rsync --link-dest does for the other files."""
        target = building / L.CONFIG
        if previous:
            before = self.deploy / previous / L.CONFIG
            try:
                fd = os.open(before, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    same = os.read(fd, len(config) + 1) == config
                finally:
                    os.close(fd)
                if same:
                    os.link(before, target, follow_symlinks=False)
                    return
            except OSError:
                pass  # no such file, or a link: write a fresh one
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, config)
        finally:
            os.close(fd)

    def link_uploaded(self, source: str, building: Path, entries: list[list]) -> None:
        """Fill `building` with the version `source`'s files as uploaded (`entries`, its
        manifest, parents first, plugbox.toml among them): directories made, files
        hard-linked, links copied. Never what post_upload made, which a hard link
        would share and a rerun would overwrite in place: a file changed since the
        upload (written in place) is refused, naming it."""
        origin = self.deploy / source
        for entry in entries:
            kind, relative = entry[0], entry[1]
            if relative.startswith("/") or ".." in relative.split("/"):
                raise PlugboxError(f"deploy/.plugbox/{source}/manifest names {relative!a}, outside the version")
            there, here = origin / relative, building / relative
            try:
                if kind == "d":
                    os.mkdir(here)
                    os.chmod(here, entry[2])
                elif kind == "l":
                    os.symlink(entry[2], here)
                elif kind == "f":
                    st = os.lstat(there)
                    if (stat.S_ISREG(st.st_mode) and (st.st_ino, st.st_size, st.st_mtime_ns)
                            == (entry[5], entry[3], entry[4])):
                        os.link(there, here, follow_symlinks=False)
                    else:
                        raise PlugboxError(
                            f"deploy/{source}/{relative} changed since it was uploaded (written in place, "
                            "by post_upload or by hand): the new version cannot share it",
                            "deploy instead, which uploads it afresh; nothing changed")
            except OSError as error:
                raise os_error(f"could not make deploy/{building.name}/{relative}", error)

    def commit_staging(self, name: str) -> None:
        """The version appears under its name, whole: the commit point of its making."""
        building = self.staging_dir(name)
        try:
            _fsync_dir(building)
            os.rename(building, self.deploy / name)
        except OSError as error:
            # Out of inodes, say: what this command made must not block the next one.
            self.remove_staging(name)
            raise os_error(f"could not create version deploy/{name}", error)
        _fsync_dir(self.deploy)

    def remove_staging(self, name: str) -> None:
        """Delete deploy/.new-NAME, and the record made for it, for certain: what still
        writes into it (an rsync whose caller went away, renaming its temporary files
        as it goes) is stopped, and the deletion goes on past entries that vanish
        under it, until the directory is gone. A failure here (the disk refusing)
        is left to the next command, which clears leftovers before anything else."""
        import signal

        building = self.staging_dir(name)
        # The record first: a kill between the two leaves .new-NAME, which the next
        # command clears, never a record without its version (see chain.leftovers).
        self._remove_record(name)
        for attempt in range(50):
            if not os.path.lexists(building):
                break
            if attempt:
                for process in inuse.users(str(self.deploy), [building.name]).get(building.name, []):
                    try:
                        os.kill(process.pid, signal.SIGKILL)
                    except OSError:
                        pass
                time.sleep(0.1)
            _remove_tree(building)

    def _remove_record(self, name: str) -> None:
        """Delete deploy/.plugbox/NAME (record.py's), never through a link: when
        deploy/.plugbox is one, nothing (record.py refuses to write there)."""
        if not os.path.islink(self.deploy / L.RECORDS):
            _remove_tree(self.deploy / L.RECORDS / name)

    def clear_leftovers(self, chain: c.Chain) -> list[str]:
        """Finish or clear what interrupted commands left (chain.Problem.leftover), under
        the lock; return what was done, one line each."""
        done = []
        for problem in c.leftovers(chain):
            for op in problem.repair:
                if isinstance(op, c.RemoveTree) and op.path.startswith(L.NEW):
                    self.remove_staging(op.path[len(L.NEW):])
                else:
                    self.apply([op])
            done.append(problem.message)
        return done

    def switch_live(self, name: str | None) -> None:
        """Point deploy/live at `name` (the commit point), and HOME/live at deploy/live."""
        if name is None:
            self.unlink(L.HOME_LIVE_FROM_DEPLOY)
            self.unlink(L.LIVE)
            return
        self.set_link(L.LIVE, name)
        home_live, is_link = _readlink(self.home / L.HOME_LIVE)
        if is_link and home_live != L.HOME_LIVE_TARGET:
            self.set_link(L.HOME_LIVE_FROM_DEPLOY, L.HOME_LIVE_TARGET)

    # --- the lock and the log -------------------------------------------------

    @contextmanager
    def lock(self, command: str, wait: float = 0):
        """Hold the exclusive lock on deploy/ for the whole command; if another
        command holds it, wait up to `wait` seconds for it, then fail."""
        self._refuse_links()
        path = self.deploy / L.LOCK
        fd = self._open_own(L.LOCK, os.O_RDWR | os.O_CREAT)
        waited_said = False
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise os_error(f"could not lock {_shown(path, self.home)}", error)
                holder = _holder_of(fd)
                os.lseek(fd, 0, os.SEEK_SET)
                if time.monotonic() >= deadline:
                    hint = ("it did not finish in time" if wait else
                            "try again when it has finished, or wait for it with --wait-lock SECONDS")
                    raise Busy(f"deploy/ is locked by {holder}", hint) from None
                if wait and not waited_said:
                    say(f"waiting up to {wait:g} s for the lock: deploy/ is locked by {holder}")
                    waited_said = True
                time.sleep(0.1)
            for name in (L.LOG, L.OUTPUT):
                self._refuse_odd(name)
            try:
                os.ftruncate(fd, 0)
                # Who holds it and where from, for whoever it turns away: "ada@laptop (plugbox
                # deploy, pid 4242, since ...)"; the machine is plug's when plug asked.
                os.write(fd, f"{who_at()} (plugbox {command}, pid {os.getpid()}, since {utc_now()})\n"
                         .encode())
            except OSError:
                pass  # a full disk: the lock holds all the same, only its holder is unnamed
            yield
        finally:
            os.close(fd)

    def _refuse_links(self) -> None:
        """deploy/ must be a directory of the home, not a link to somewhere else."""
        if self.deploy.is_symlink():
            raise PlugboxError(f"{_shown(self.deploy, self.home)} is a symbolic link; "
                               "plugbox writes nothing outside the home",
                               "make it a directory (mount a disk there rather than link one)")

    def _refuse_odd(self, name: str) -> None:
        path = self.deploy / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise _not_regular(path, self.home, mode)

    def _open_own(self, name: str, flags: int, what: str = "open") -> int:
        """Open a bookkeeping file of deploy/: a regular file, never through a link."""
        path = self.deploy / name
        try:
            fd = os.open(path, flags | _SAFE, 0o644)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
                raise _not_regular(path, self.home, None) from None
            raise os_error(f"could not {what} {_shown(path, self.home)}", error)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise _not_regular(path, self.home, mode)
        return fd

    def holder(self) -> str | None:
        """Who holds the lock now, if anyone; takes nothing and creates nothing."""
        try:
            fd = self._open_own(L.LOCK, os.O_RDONLY)
        except PlugboxError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except OSError:
            return _holder_of(fd)
        finally:
            os.close(fd)

    def append_log(self, command: str, before: str | None, after: str | None, outcome: str) -> None:
        fields = [utc_now(), who(), command, before or "-", after or "-", outcome]
        line = "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n"
        try:
            fd = self._open_own(L.LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except (OSError, PlugboxError):
            pass  # the log is a record, never a reason to fail a command that succeeded

    def read_log(self) -> list[list[str]]:
        text = self._read_own(L.LOG).decode(errors="replace")
        return [line.split("\t") for line in text.splitlines() if line]

    def _read_own(self, name: str) -> bytes:
        try:
            fd = self._open_own(name, os.O_RDONLY, "read")
        except PlugboxError:
            if not os.path.lexists(self.deploy / name):
                return b""
            raise
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as error:
            raise os_error(f"could not read deploy/{name}", error)

    # --- the kept output of hooks -------------------------------------------------

    def output_record(self, command: str) -> "OutputRecord":
        return OutputRecord(self, command)

    def read_output(self) -> bytes:
        """The kept hook output, oldest first: deploy/.output.1, then deploy/.output."""
        return self._read_own(L.OUTPUT_OLD) + self._read_own(L.OUTPUT)


class OutputRecord:
    """deploy/.output: what the hooks of commands printed, kept on the host.

    Each command's part starts with a heading (time, command, plugbox's
    version), written when its first hook runs. When the file passes
    OUTPUT_LIMIT it becomes .output.1 (replacing the one before), so the record
    stays under about twice that. Writing it never fails a command or a hook.
    """

    def __init__(self, store: Store, command: str):
        self.store = store
        self.command = command
        self.fd: int | None = None
        self.size = 0
        self.broken = False

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            if self.fd is None:
                self._open(f"=== {utc_now()} plugbox {self.command} (plugbox {__version__})\n")
            elif self.size + len(data) > OUTPUT_LIMIT:
                self.close()
                os.replace(self.store.deploy / L.OUTPUT, self.store.deploy / (L.OUTPUT_OLD))
                self._open(f"=== {utc_now()} plugbox {self.command}, continued\n")
            self.size += os.write(self.fd, data)
        except (OSError, PlugboxError):
            self.broken = True  # a full disk, say: the caller still sees the output
            self.close()

    def _open(self, heading: str) -> None:
        self.fd = self.store._open_own(L.OUTPUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.size = os.fstat(self.fd).st_size
        if self.size > OUTPUT_LIMIT:
            os.close(self.fd)
            self.fd = None
            os.replace(self.store.deploy / L.OUTPUT, self.store.deploy / (L.OUTPUT_OLD))
            self.fd = self.store._open_own(L.OUTPUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            self.size = 0
        self.size += os.write(self.fd, heading.encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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
    previous, _ = _readlink(f"{version}/{L.PREVIOUS}")
    after, _ = _readlink(f"{version}/{L.NEXT}")
    return c.Links(previous, after)


def _not_regular(path: Path, home: Path, mode: int | None) -> PlugboxError:
    what = ("a symbolic link" if mode is None or stat.S_ISLNK(mode) else
            "a directory" if stat.S_ISDIR(mode) else "not a regular file")
    return PlugboxError(f"{_shown(path, home)} is {what}, not a file of plugbox's own; "
                        "plugbox never writes through a link",
                        "move it out of deploy/ and run the command again")


def _remove_tree(path: Path) -> None:
    """rmtree that goes on past entries that vanish while it walks (another
    process renaming or deleting them); never follows a link out of `path`."""
    import shutil

    def vanished(function, failed, info) -> None:
        if not isinstance(info[1], FileNotFoundError):
            raise info[1]

    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, onerror=vanished)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # left: the next attempt, or the next command, takes it


def _fsync_all(directories: set[Path]) -> None:
    for directory in sorted(directories):
        _fsync_dir(directory)
    directories.clear()


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
