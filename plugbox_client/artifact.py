"""Artifacts: a file a build made, deployed instead of a tree.

An archive (ARCHIVES, told by its name) becomes the version's files; any other
file (a .pyz, a .whl, a static binary) becomes the version's one file, under its
own name, its mode kept. `unpack` makes that tree in a directory of plug's own
(transport.scratch), on this machine, so that rsync sends it as it sends any
tree: each member keeps its mtime and its mode, and a member that did not change
between two builds is found unchanged and hard-linked from the live version.

Reads the artifact; writes only into the directory it is given, whose name no
member can know (upload.contents), so that no link can leave it and come back
in. A member that could write outside the version, or that is not a plain file,
directory or link inside it, is refused before anything is sent, naming the
member. Who refuses what:

- tarfile's data filter (`tarfile.data_filter`), for tar and zip alike (a zip
  member is put to it as the TarInfo it would be): a link whose target is
  absolute or leads outside the version (judged against the tree as it stands
  when the link is made), a hard link to a file outside, a device or fifo.
  Its other work is kept too: no owner is set, and a file's mode loses its
  group and other write bits.
- here, what the filter lets through on purpose: an absolute name (the filter
  strips the leading / and puts the member inside; an artifact holding one was
  built wrong), setuid and setgid bits (the filter clears them silently);
  what it judges too late: a `..` in a name (the filter looks only at where
  the whole name lands: `../x/../tree/f` lands inside a destination named
  tree, after tarfile has made the directory x beside it; no archive tool
  writes a `..` into a name); what it does not know: the names plugbox owns at
  the top of a version (layout.OWNED); and what it cannot see member by member:
  a name that comes twice, a member under a link, and where each link leads
  once the tree is complete. Links are made last (as GNU tar delays them), so
  no member is ever written through one; then every link is resolved in the
  finished tree, as the host will have it (its `previous` and `next` leading
  out), where a later link may have changed what an earlier one leads to
  (`a -> b/..` made before `b -> .` passes the filter, and leads out once
  both exist).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from plugbox_server.errors import PlugboxError
from plugbox_server.layout import LINKS, OWNED

TARS = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2")
ZIPS = (".zip",)
ARCHIVES = TARS + ZIPS
_HINT = "build the artifact without it; nothing was sent"


@dataclass(frozen=True)
class Artifact:
    """What the record keeps of an artifact, and what it became."""

    name: str        # its file name
    sha256: str      # of its bytes, hex
    archive: bool    # an archive, unpacked; else the version's one file
    files: int       # regular files in the version

    @property
    def short(self) -> str:
        """How plug names it in a line: `app.tar.gz (sha256 3f9c2a1b4d5e)`."""
        return f"{self.name} (sha256 {self.sha256[:12]})"


class Refused(PlugboxError):
    """The artifact, or one of its members, cannot become a version."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


def unpack(path: Path, tree: Path) -> Artifact:
    """Make the empty directory `tree` the version's files from the artifact at `path`."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"artifact {path} is not a file", "name the file the build made; nothing was sent")
        with open(path, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as error:
        raise Refused(f"artifact {path}: {error.strerror}",
                      "does the build make it? nothing was sent") from None
    name = path.name
    archive = is_archive(name)
    if archive:
        if not hasattr(tarfile, "data_filter"):
            raise Refused("unpacking an archive safely needs tarfile's data filter, "
                          "in Python 3.11.4 and newer", "run plug with a newer python3; nothing was sent")
        if name.lower().endswith(ZIPS):
            _unpack_zip(path, tree)
        else:
            _unpack_tar(path, tree)
        files = _check_tree(name, tree)
    else:
        _single(path, st, tree)
        files = 1
    return Artifact(name, sha256, archive, files)


# --- the rules, for a member of either kind of archive -----------------------------

class _Rules:
    """The refusals of this module's docstring for one archive, member by member,
    in the order the members are made (links last), then tarfile's data filter."""

    def __init__(self, artifact: str, tree: Path, links: set[str]):
        self.artifact = artifact
        self.tree = str(tree)
        self.links = links           # the normalised names of the archive's symbolic links
        self.seen: dict[str, bool] = {}  # normalised name -> is a directory
        self.current: str | None = None

    def refuse(self, name: str, why: str) -> Refused:
        return Refused(f"{self.artifact}: member {name!r} {why}", _HINT)

    def __call__(self, member: tarfile.TarInfo, dest: str = "") -> tarfile.TarInfo:
        self.current = name = member.name
        if name.startswith("/"):
            raise self.refuse(name, "is an absolute path")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            # The filter judges only where the whole name lands: `../x/../tree/f` lands
            # inside a destination named tree, after tarfile has made the directory x
            # beside it. No archive tool writes a `..` into a name.
            raise self.refuse(name, "has '..' in its path")
        if parts and parts[0] in OWNED:
            raise self.refuse(name, f"would replace the version's own {parts[0]}, which plugbox owns")
        if not member.isdir() and name.split("/")[-1] in ("", "."):
            raise self.refuse(name, "is named as a directory, but is not one")
        for bit, what in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid")):
            if member.mode & bit:
                raise self.refuse(name, f"has the {what} bit")
        normal = "/".join(parts) or "."
        if normal in self.seen and not (member.isdir() and self.seen[normal]):
            raise self.refuse(name, "comes twice in the archive")
        self.seen[normal] = member.isdir()
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.links:
                raise self.refuse(name, f"lies under the link {'/'.join(parts[:i])!r}")
        if member.islnk() and posixpath.normpath(member.linkname) in self.links:
            raise self.refuse(name, "is a hard link to a symbolic link")
        try:
            return tarfile.data_filter(member, self.tree)
        except tarfile.FilterError as error:
            raise self.refuse(name, _filtered(error)) from None


def _filtered(error: tarfile.FilterError) -> str:
    """Why tarfile's data filter refused a member, in plug's words."""
    member = error.tarinfo
    if isinstance(error, tarfile.AbsolutePathError):
        return "is an absolute path"
    if isinstance(error, tarfile.OutsideDestinationError):
        return "would land outside the version"
    if isinstance(error, tarfile.AbsoluteLinkError):
        return f"is a link to an absolute path, {member.linkname!r}"
    if isinstance(error, tarfile.LinkOutsideDestinationError):
        return f"is a link leading outside the version, to {member.linkname!r}"
    if isinstance(error, tarfile.SpecialFileError):
        kind = ("a character device" if member.ischr() else "a block device" if member.isblk()
                else "a fifo" if member.isfifo() else "a special file")
        return f"is {kind}, not a file, directory or link"
    return str(error)


def _links_last(members: list, is_link) -> list:
    return [m for m in members if not is_link(m)] + [m for m in members if is_link(m)]


# --- tar -----------------------------------------------------------------------------

def _unpack_tar(path: Path, tree: Path) -> None:
    rules = None
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.errorlevel = 2  # every error raises, none is only logged
            members = tar.getmembers()
            rules = _Rules(path.name, tree, {posixpath.normpath(m.name) for m in members if m.issym()})
            tar.extractall(tree, members=_links_last(members, tarfile.TarInfo.issym), filter=rules)
    except Refused:
        raise
    # (KeyError: a hard link to a member that the archive does not have.)
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as error:
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if rules is not None and rules.current is not None:
            raise rules.refuse(rules.current, f"could not be unpacked: {why}") from None
        raise Refused(f"artifact {path}: not a tar archive plug can read: {why}",
                      "check how it is built; nothing was sent") from None


# --- zip -----------------------------------------------------------------------------

def _unpack_zip(path: Path, tree: Path) -> None:
    """zipfile reads; the rules above judge (the data filter on each member as the
    TarInfo it would be); this writes, keeping each member's mode and mtime, which
    zipfile's own extract does not (nor does it make links)."""
    rules = None
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [(info, _as_tarinfo(archive, info)) for info in archive.infolist()]
            rules = _Rules(path.name, tree,
                           {posixpath.normpath(member.name) for _, member in entries if member.issym()})
            directories = []
            for info, member in _links_last(entries, lambda entry: entry[1].issym()):
                member = rules(member)
                target = os.path.join(tree, member.name)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    directories.append((target, member.mtime))
                elif member.issym():
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.symlink(member.linkname, target)
                else:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600)
                    with os.fdopen(fd, "wb") as out, archive.open(info) as data:
                        shutil.copyfileobj(data, out)
                    os.chmod(target, member.mode)
                    os.utime(target, (member.mtime, member.mtime))
            for target, mtime in reversed(directories):  # after what was made inside them
                os.utime(target, (mtime, mtime))
    except Refused:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as error:
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if rules is not None and rules.current is not None:
            raise rules.refuse(rules.current, f"could not be unpacked: {why}") from None
        raise Refused(f"artifact {path}: not a zip archive plug can read: {why}",
                      "check how it is built; nothing was sent") from None


_KINDS = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE, stat.S_IFIFO: tarfile.FIFOTYPE,
          stat.S_IFSOCK: tarfile.FIFOTYPE, stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFDIR: tarfile.DIRTYPE}


def _as_tarinfo(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tarfile.TarInfo:
    """A zip member as the TarInfo it would be: name, kind, mode, mtime, link target."""
    unix = info.external_attr >> 16 if info.create_system == 3 else 0
    member = tarfile.TarInfo(info.filename.rstrip("/") if info.is_dir() else info.filename)
    member.type = tarfile.DIRTYPE if info.is_dir() else _KINDS.get(stat.S_IFMT(unix), tarfile.REGTYPE)
    member.mode = stat.S_IMODE(unix) or (0o755 if member.isdir() else 0o644)
    member.size = info.file_size
    member.mtime = _mtime(info)
    if member.issym():
        member.linkname = archive.read(info).decode("utf-8", "surrogateescape")
    return member


def _mtime(info: zipfile.ZipInfo) -> int:
    """The member's mtime: from its extended timestamp (UTC, to the second) when it has
    one, as zip(1) writes; else from its DOS time, local and to two seconds."""
    extra = info.extra
    while len(extra) >= 4:
        kind, size = struct.unpack("<HH", extra[:4])
        if kind == 0x5455 and size >= 5 and extra[4] & 1:
            return struct.unpack("<i", extra[5:9])[0]
        extra = extra[4 + size:]
    return int(time.mktime((*info.date_time, 0, 0, -1)))


# --- the finished tree, and the one file ---------------------------------------------

def _check_tree(artifact: str, tree: Path) -> int:
    """Where every link leads, now that all exist, in the version as the host will
    have it: inside it, and not into what plugbox owns there (the version's own
    `previous` and `next` lead out of it, so stand-ins that do are put in their
    place meanwhile); returns the number of regular files."""
    stand_ins = [tree / name for name in LINKS]
    for stand_in in stand_ins:
        os.symlink("..", stand_in)
    try:
        return _links_inside(artifact, tree)
    finally:
        for stand_in in stand_ins:
            stand_in.unlink()


def _links_inside(artifact: str, tree: Path) -> int:
    root = os.path.realpath(tree)
    inside = set()
    links = []
    files = 0
    for directory, dirnames, filenames in os.walk(root):
        for entry in (*dirnames, *filenames):
            full = os.path.join(directory, entry)
            if directory == root and entry in LINKS:
                continue  # a stand-in
            st = os.lstat(full)
            inside.add((st.st_dev, st.st_ino))
            if stat.S_ISLNK(st.st_mode):
                links.append(full)
            elif stat.S_ISREG(st.st_mode):
                files += 1
    root_st = os.stat(root)
    inside.add((root_st.st_dev, root_st.st_ino))
    for full in links:
        name = os.path.relpath(full, root)
        target = os.readlink(full)
        top = posixpath.normpath(posixpath.join(posixpath.dirname(name), target)).split("/")[0]
        if top in OWNED:
            raise Refused(f"{artifact}: member {name!r} is a link into the version's own {top}, "
                          "which plugbox owns", _HINT)
        leads = os.path.relpath(os.path.realpath(full), root)
        if leads == ".." or leads.startswith("../") or leads.split("/")[0] in OWNED:
            raise Refused(f"{artifact}: member {name!r} is a link leading outside the version, "
                          f"to {target!r}", _HINT)
        try:  # what the kernel finds there: something of the tree, when it finds anything
            st = os.stat(full)
        except OSError:
            continue  # it leads nowhere yet (post_upload may make its target)
        if (st.st_dev, st.st_ino) not in inside:
            raise Refused(f"{artifact}: member {name!r} is a link leading outside the version, "
                          f"to {target!r}", _HINT)
    return files


def _single(path: Path, st: os.stat_result, tree: Path) -> None:
    """The version's one file, under the artifact's name, its mode and mtime kept."""
    name = path.name
    if name in OWNED:
        raise Refused(f"artifact {name!r} would replace the version's own {name}, which plugbox owns",
                      "rename it; nothing was sent")
    for bit, what in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid")):
        if st.st_mode & bit:
            raise Refused(f"artifact {path} has the {what} bit", f"chmod {what[3]}-s it; nothing was sent")
    target = tree / name
    try:
        os.link(path, target)  # the same inode: nothing copied (its mode and mtime with it)
    except OSError:
        shutil.copy2(path, target)
