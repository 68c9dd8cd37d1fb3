"""The upload: what a version is made of, and rsync sending it into the staging
directory on the host, hard-linking what the live version already has.

Reads the project's files (to check what will be uploaded); an artifact is
unpacked by artifact.py into a scratch directory, which is then sent as any
tree is. Runs rsync through transport.py, with the argv from argv.py; counts
what rsync did from its itemized output, and, when asked to show progress,
from its progress lines.
"""

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plugbox_client import argv as A
from plugbox_client import artifact as artifacts
from plugbox_client import transport
from plugbox_client.config import Config
from plugbox_server.errors import PlugboxError
from plugbox_server.layout import CONFIG, OWNED


@dataclass(frozen=True)
class Contents:
    """What a version is made of: rsync's sources and the patterns they leave out;
    for an artifact, what it was (its tree unpacked in a scratch directory)."""

    paths: list[str]
    exclude: tuple[str, ...] = ()
    artifact: artifacts.Artifact | None = None

    @property
    def checksum(self) -> bool:
        """Compare contents, not size and mtime: an archive's mtimes are whole seconds
        (or one fixed time, in a reproducible build), so a same-size change would
        pass for unchanged; see argv.rsync_upload."""
        return self.artifact is not None


def artifact_of(config: Config, given: Path | None) -> Path | None:
    """The artifact to deploy: `given` (plug deploy --artifact), which wins over
    [build], else [build] artifact; None for a tree."""
    if given is not None:
        return given
    return config.project / config.artifact if config.artifact is not None else None


def contents(config: Config, given: Path | None = None,
             scratch: Callable[[], Path] | None = None) -> Contents:
    """What the version is made of, checked now that prepare has run: the artifact
    (`given`, or [build]'s), unpacked into the directory `scratch()` makes, or the
    tree [build] names."""
    path = artifact_of(config, given)
    if path is None:
        return Contents(sources(config), config.exclude + home_excludes(config))
    # A name no link in the archive can guess, to come back into the tree from above
    # it (`../tree/x`); made with the umask's mode, as a directory of the project
    # would be: rsync gives it to the version.
    tree = scratch() / secrets.token_hex(8)
    tree.mkdir()
    return Contents([f"{tree}/"], (), artifacts.unpack(path, tree))


def sources(config: Config) -> list[str]:
    """rsync's sources for a version of a tree, checked now that prepare has run.

    The version's plugbox.toml is not among them: the host writes it from the
    project's file, whatever that file is named and whatever version_dir holds.
    """
    found = []
    project = config.project
    if config.version_dir is not None:
        directory = project / config.version_dir
        if not directory.is_dir():
            raise PlugboxError(f"[build] version_dir: {directory} is not a directory",
                               "does prepare make it? nothing was sent")
        for name in OWNED:
            if name != CONFIG and ((directory / name).exists() or (directory / name).is_symlink()):
                raise PlugboxError(
                    f"{directory / name}: the version would have its own top-level {name!r}, which plugbox owns",
                    "rename it or leave it out; nothing was sent")
        found.append(str(directory) + "/")
    else:
        for path in config.upload:
            source = project / path
            if not (source.exists() or source.is_symlink()):
                raise PlugboxError(f"[build] upload: {source}: no such file or directory",
                                   "does prepare make it? nothing was sent")
            found.append(str(source))
    return found


def home_excludes(config: Config) -> tuple[str, ...]:
    """With host "local", a home inside what is uploaded would be uploaded into itself:
    rsync patterns, anchored at the transfer's root, that leave it out."""
    if not config.local or config.home is None:
        return ()
    home = Path(config.home).resolve()
    if config.version_dir is not None:
        roots = [(config.project / config.version_dir, None)]
    else:
        roots = [(config.project / path, Path(path).name) for path in config.upload]
    patterns = []
    for root, name in roots:  # the home being a root itself is refused by config.py
        root = root.resolve()
        if root in home.parents:
            inside = home.relative_to(root).as_posix()
            patterns.append(f"/{name}/{inside}" if name else f"/{inside}")
    return tuple(patterns)


_ITEM = re.compile(r"([<>ch.*])([fdLDS])(.{9}) (\d+) (.*)")
_STAT = re.compile(r"(Total bytes sent|Total transferred file size): ([\d,]+)")
# --info=progress2: bytes sent so far, percent, rate, time; "(xfr#N, to-chk=...)" once
# the Nth file sent is complete. --info=flist2: the number of entries, up front.
_PROGRESS = re.compile(r"\s*([\d,]+)\s+\d+%\s+(\S+/s)\s+[\d:]+(?:\s+\(xfr#(\d+),.*)?")
_CONSIDER = re.compile(r"\s*(\d+) files? to consider")


SHOWN = 20  # the names of files sent that a dry run lists


@dataclass
class Count:
    """What rsync did, counted from its itemized lines and --stats; and, with
    `progress`, how far it has got, given to progress(count) every 0.1 s at most."""

    sent: int = 0          # regular files whose data was transferred
    sent_size: int = 0     # their total size
    linked: int = 0        # regular files hard-linked from the live version
    copied: int = 0        # regular files copied locally (same data, other attributes)
    wire_bytes: int = 0    # bytes rsync sent, protocol included
    changes: list[str] = field(default_factory=list)  # in a dry run: what differs, as itemized
    names: list[str] = field(default_factory=list)  # the files sent (the first SHOWN)
    dry_run: bool = False
    progress: Callable[["Count"], None] | None = None
    entries: int = 0       # entries rsync has itemized: files, directories, links
    total: int | None = None  # entries it considers, once it has said (with --no-inc-recursive, at once)
    transferred: int = 0   # bytes of file data sent so far, by rsync's progress
    rate: str = ""         # its transfer rate, as it writes it ("4.89MB/s")
    _flight: tuple[int, int] | None = field(default=None, repr=False)  # (bytes at its start, size)
    _shown: float = field(default=0.0, repr=False)

    def line(self, line: str) -> None:
        item = _ITEM.fullmatch(line)
        if item:
            kind, ftype, changes = item.group(1), item.group(2), item.group(3)
            if ftype == "f":
                if kind in "<>":
                    self.sent += 1
                    self.sent_size += int(item.group(4))
                    if len(self.names) < SHOWN:
                        self.names.append(item.group(5))
                    self._flight = (self.transferred, int(item.group(4)))  # its data comes now
                elif kind == "h" or (kind == "." and self.dry_run and not changes.strip()):
                    self.linked += 1
                elif kind in ".c":
                    self.copied += 1
            if kind != "*":  # not a deletion: an entry of the version
                self.entries += 1
            if self.dry_run and _differs(kind, ftype, changes, item.group(5)):
                self.changes.append(f"{kind}{ftype}{changes} {item.group(5)}")
            self._progress()
            return
        if self.progress is not None and self._progress_line(line):
            return
        stat = _STAT.match(line)
        if stat and stat.group(1) == "Total bytes sent":
            self.wire_bytes = int(stat.group(2).replace(",", ""))

    def _progress_line(self, line: str) -> bool:
        progress = _PROGRESS.fullmatch(line)
        if progress:
            self.transferred = int(progress.group(1).replace(",", ""))
            self.rate = progress.group(2)
            if progress.group(3) is not None and int(progress.group(3)) >= self.sent:
                self._flight = None  # the last file sent is complete
            self._progress()
            return True
        consider = _CONSIDER.fullmatch(line)
        if consider:
            self.total = int(consider.group(1))
            self._progress()
            return True
        return False

    def completed(self) -> float:
        """Entries done, the one being sent counted by the share of its bytes sent."""
        if self._flight is None:
            return float(self.entries)
        start, size = self._flight
        share = min(max(self.transferred - start, 0) / size, 1.0) if size else 1.0
        return self.entries - 1 + share

    def _progress(self, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if final or now - self._shown >= 0.1:
            self._shown = now
            self.progress(self)

    def done(self) -> None:
        """rsync has finished, successfully: every entry is in place."""
        self._flight = None
        self.total = self.entries = max(self.entries, self.total or 0)
        self._progress(final=True)

    def files(self) -> str:
        files = "file" if self.sent == 1 else "files"
        text = f"{self.sent} {files} sent ({human(self.sent_size)}), {self.linked} hard-linked"
        if self.copied:
            text += f", {self.copied} copied"
        return text


def _differs(kind: str, ftype: str, changes: str, name: str) -> bool:
    """Whether an itemized line of a dry run against live says the upload differs.

    Not a deletion: what post_upload made in live is deleted there too (see
    unchanged). Not the times of directories and links, which post_upload
    touches; every other change of a file, a directory or a link is one.
    """
    if kind == "*" or name in (".", "./"):
        return False
    left = set(changes) - {".", " "}
    if ftype in "dL" and kind == "." and left <= {"t", "T"}:
        return False
    return kind != "." or bool(left)


def unchanged(count: Count, live_files: int | None) -> bool:
    """Whether a dry run against the live version found the upload's files as live
    has them: nothing to send or change, and as many files as live had when it
    was uploaded (the plugbox.toml the host writes into every version counts
    one), so that none was removed here since."""
    files = count.sent + count.linked + count.copied
    return not count.changes and live_files is not None and files + 1 == live_files


def human(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def rsync(what: Contents, dest: str, *, config: Config, rsh: str | None, link_dest: str | None = None,
          dry_run=False, progress: Callable[[Count], None] | None = None, prefix: str = "",
          said: list[str] | None = None) -> Count:
    """rsync `what` to `dest` (already host:path, or a local path), counting as it goes;
    `progress(count)`: told how far it has got, every 0.1 s at most.

    What rsync says on stderr is shown once it has ended, each line after `prefix`
    (its host's name, with several): never when plug was interrupted, whose one
    line says it all (rsync's own words then are its noise about the signal).
    With `said`, its lines go there instead (an engine reports them its own way).
    """
    argv = A.rsync_upload(
        what.paths, dest, link_dest=link_dest, shared=config.shared,
        exclude=what.exclude, rsh=rsh, dry_run=dry_run, checksum=what.checksum,
        progress=progress is not None,
    )
    count = Count(dry_run=dry_run, progress=progress)
    chunks: list[str] = []
    code = transport.run(argv, out=count.line, err=chunks.append).code
    lines = "".join(chunks).splitlines()
    if said is not None:
        said.extend(lines)
    else:
        for line in lines:
            transport.show(f"{prefix}{line}")
    if code != 0:
        raise PlugboxError(f"rsync exited with {code}" + (" (see its messages above)" if said is None else ""))
    count.done()
    return count
