"""What plugbox knows of each version: its record, its manifest, and verify.

Touches only the version's own bookkeeping directory, deploy/.plugbox/NAME/
(beside the version, never inside its tree, which a web server may serve), and
reads the version's tree:

    record.json    who made it, when, from what source, the message, files,
                   bytes, digest, and its history (indented JSON)
    manifest       every entry of the tree as uploaded (JSON, one line), with
                   each file's sha256: what verify compares with
    post-upload    what post_upload added or changed, by stat only
    env            its environment, NAME=VALUE a line (mode 0600; see environment.py)

An older plugbox kept these in deploy/NAME/.plugbox/: they are read there, and
moved the first time a command writes the record.

Each file is written whole to a temporary name beside it, fsynced, renamed over
the old one, and the directory fsynced: a kill leaves the old file or the new
one, never a torn one. Nothing here follows a symbolic link: a version's tree is
walked without following links, and .plugbox itself must be a real directory.

The tree of a version, for the manifest and the digest, is everything in its
directory except what plugbox owns there: `previous`, `next` and `.plugbox`.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from plugbox_server import environment
from plugbox_server.environment import Environment
from plugbox_server.errors import PlugboxError
from plugbox_server.layout import BESIDE_TREE, RECORD_DIR, RECORDS
from plugbox_server.names import utc_now, who

RECORD = "record.json"
MANIFEST = "manifest"
POST_UPLOAD = "post-upload"
ENV = "env"
ORIGIN_KEYS = ("user", "machine", "revision", "branch", "dirty", "message",
               "artifact", "artifact_sha256")
EVENTS = ("live", "away", "failed", "reverted")
_MESSAGE_LIMIT = 2000
_HEX = "0123456789abcdef"


# --- writing ----------------------------------------------------------------------

def create(store, name: str, origin: dict | None = None) -> dict:
    """Write the record of a version being made (it may still be deploy/.new-NAME).

    `origin` is what plug sends: {"user", "machine", "revision", "branch",
    "dirty", "message"}, and for a version made from an artifact its file name
    and sha256, {"artifact", "artifact_sha256"}; by hand it is None and the
    user is PLUGBOX_USER or the login.
    """
    origin = checked_origin(origin or {})
    record = {
        "name": name,
        "created": utc_now(),
        "user": origin.get("user") or who(),
        "machine": origin.get("machine"),
        "revision": origin.get("revision"),
        "branch": origin.get("branch"),
        "dirty": origin.get("dirty"),
        "message": origin.get("message"),
        "artifact": origin.get("artifact"),
        "artifact_sha256": origin.get("artifact_sha256"),
        "sealed": None,
        "files": None,
        "bytes": None,
        "digest": None,
        "history": [],
    }
    _write_json(directory(store, name, make=True), RECORD, record)
    return record


def seal(store, name: str, previous: str | None = None) -> dict:
    """Count and digest the version's tree as uploaded; write its manifest and record.

    A file that is a hard link of one in `previous`'s manifest (same inode, size
    and mtime) takes the digest recorded there: only what rsync sent is hashed.
    """
    version = store.version_dir(name)
    known = {}
    if previous:
        for entry in _read_manifest(directory(store, previous), MANIFEST):
            if entry[0] == "f":
                known[(entry[5], entry[3], entry[4])] = entry[6]
    entries = []
    for kind, relative, st, target in walk(version):
        if kind == "f":
            digest = known.get((st.st_ino, st.st_size, st.st_mtime_ns)) or _hash(version / relative)
            entries.append(["f", relative, stat.S_IMODE(st.st_mode), st.st_size,
                            st.st_mtime_ns, st.st_ino, digest])
        else:
            entries.append(_stat_entry(kind, relative, st, target))
    record = load(store, name) or create(store, name)
    record.update(sealed=utc_now(), files=sum(1 for e in entries if e[0] == "f"),
                  bytes=sum(e[3] for e in entries if e[0] == "f"), digest=digest_of(entries))
    own = directory(store, name, make=True)
    _write_lines(own, MANIFEST, entries)
    _write_json(own, RECORD, record)
    return record


def after_post_upload(store, name: str) -> int:
    """Note, by stat only, what post_upload added or changed; return how many entries."""
    version = store.version_dir(name)
    own = directory(store, name, make=True)
    uploaded = {e[1]: e for e in _read_manifest(own, MANIFEST)}
    added = []
    seen = set()
    for kind, relative, st, target in walk(version):
        seen.add(relative)
        entry = _stat_entry(kind, relative, st, target)
        before = uploaded.get(relative)
        if before is None or not _same_stat(before, entry):
            added.append(entry)
    # "-": an uploaded path post_upload removed.
    added += [["-", path, None] for path in uploaded if path not in seen]
    _write_lines(own, POST_UPLOAD, added)
    return len(added)


def event(store, name: str, what: str, *, command: str | None = None, hook: str | None = None) -> None:
    """Add to the version's history: it went `live`, was switched `away` from, `failed` a
    hook, or was `reverted` (switched back though it came up well: another host failed).

    Never fails the command: the history is a record, not a step of the switch.
    """
    assert what in EVENTS
    try:
        record = load(store, name) or create(store, name)
        entry = {"time": utc_now(), "event": what}
        if command:
            entry["command"] = command
        if hook:
            entry["hook"] = hook
        record["history"].append(entry)
        _write_json(directory(store, name, make=True), RECORD, record)
    except (OSError, PlugboxError):
        pass


def write_environment(store, name: str, env: Environment, change: dict | None = None) -> None:
    """The version's environment: its values in `env` (mode 0600), and in its record
    the names, their sources and the version that last changed each, and for an
    environment change the names set and unset ({"set", "unset"}); never a value."""
    own = directory(store, name, make=True)
    _write(own, ENV, environment.render(env.values), mode=0o600)
    record = load(store, name) or create(store, name)
    record["environment"] = env.known()
    if change:
        record["change"] = change
    _write_json(own, RECORD, record)


def note(store, name: str, key: str, value: dict) -> None:
    """Put `value` (with the time) under `key` of the version's record; never fails the command."""
    try:
        record = load(store, name) or create(store, name)
        record[key] = {"time": utc_now(), **value}
        _write_json(directory(store, name, make=True), RECORD, record)
    except (OSError, PlugboxError):
        pass


def differs_in(store, before: str, after: str, paths: tuple[str, ...]) -> bool:
    """Whether anything under `paths` (files or directories of the tree as uploaded)
    differs between two versions, by their manifests; True when one has none."""
    def under(entries: list[list]) -> set[tuple]:
        return {tuple(map(str, _content(e))) for e in entries
                if any(e[1] == p or e[1].startswith(p + "/") for p in paths)}
    old_own, new_own = directory(store, before), directory(store, after)
    if not (old_own / MANIFEST).is_file() or not (new_own / MANIFEST).is_file():
        return True
    return under(_read_manifest(old_own, MANIFEST)) != under(_read_manifest(new_own, MANIFEST))


def manifest(store, name: str) -> list[list]:
    """The version's tree as uploaded, one entry a path (see seal), parents first;
    refused when the version has none to give."""
    own = directory(store, name)
    entries = _read_manifest(own, MANIFEST)
    if not (own / MANIFEST).is_file():
        raise PlugboxError(f"{name} has no record of its files as uploaded (made by hand, or by an "
                           "older plugbox)", "deploy a version first; nothing changed")
    return sorted(entries, key=lambda e: e[1])


def has_environment(store, name: str) -> bool:
    return os.path.lexists(directory(store, name) / ENV)


def read_environment(store, name: str) -> Environment:
    """The version's environment (empty for a version that has none)."""
    own = directory(store, name)
    try:
        fd = os.open(own / ENV, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Environment()
    except OSError as error:
        raise PlugboxError(f"could not read {own / ENV}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        values = environment.parse(f.read())
    known = (load(store, name) or {}).get("environment") or {}
    sources = {k: v.get("source", environment.SET) for k, v in known.items() if isinstance(v, dict)}
    since = {k: v.get("since") for k, v in known.items() if isinstance(v, dict) and v.get("since")}
    return Environment(values, {k: sources.get(k, environment.SET) for k in values},
                       {k: since[k] for k in values if k in since})


# --- reading ----------------------------------------------------------------------

def load(store, name: str) -> dict | None:
    """The version's record, or None when it has none (or not one plugbox can read)."""
    try:
        fd = os.open(directory(store, name) / RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            record = json.load(f)
    except (OSError, ValueError, PlugboxError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("history"), list):
        return None
    return record


# --- verify -----------------------------------------------------------------------

def verify(store, name: str) -> dict:
    """Compare the version's tree now with its manifest.

    Returns {"digest" (recomputed), "recorded", "changed", "added", "removed",
    "post_upload_changed", "post_upload_removed"}: what was uploaded is compared by
    content (every file is hashed again), what post_upload made by stat only.
    """
    version = store.version_dir(name)
    record = load(store, name)
    if record is None or not record.get("digest"):
        raise PlugboxError(f"{name} has no sealed record to verify against",
                           "a version gets one when it is upgraded to")
    own = directory(store, name)
    uploaded = {e[1]: e for e in _read_manifest(own, MANIFEST)}
    made = {e[1]: e for e in _read_manifest(own, POST_UPLOAD)}
    result = {"digest": None, "recorded": record["digest"], "changed": [], "added": [],
              "removed": [], "post_upload_changed": [], "post_upload_removed": []}
    # What post_upload changed of the upload counts as uploaded, as recorded.
    now = [uploaded[path] for path in made if path in uploaded]
    seen = set()
    for kind, relative, st, target in walk(version):
        seen.add(relative)
        if relative in made:
            if not _same_stat(made[relative], _stat_entry(kind, relative, st, target)):
                result["post_upload_changed"].append(relative)
            continue
        entry = _stat_entry(kind, relative, st, target)
        if kind == "f":
            entry[6] = _hash(version / relative)
        now.append(entry)
        before = uploaded.get(relative)
        if before is None:
            result["added"].append(relative)
        elif _content(before) != _content(entry):
            result["changed"].append(relative)
    result["removed"] = sorted(p for p in uploaded if p not in seen and p not in made)
    result["post_upload_removed"] = sorted(
        p for p, e in made.items() if p not in seen and e[0] != "-")
    result["digest"] = digest_of(now)
    return result


def differs(result: dict) -> bool:
    return any(result[k] for k in ("changed", "added", "removed", "post_upload_changed",
                                   "post_upload_removed"))


# --- the tree ---------------------------------------------------------------------

def walk(version: Path):
    """(kind, relative path, lstat, link target) of every entry, sorted, no link followed.

    kind: f file, d directory, l symbolic link, o anything else.
    """
    def scan(directory: str, prefix: str):
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as error:
            raise PlugboxError(f"could not read {directory}: {error.strerror}") from None
        for entry in entries:
            if not prefix and entry.name in BESIDE_TREE:
                continue
            relative = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                yield "l", relative, st, os.readlink(entry.path)
            elif stat.S_ISDIR(st.st_mode):
                yield "d", relative, st, None
                yield from scan(entry.path, relative + "/")
            elif stat.S_ISREG(st.st_mode):
                yield "f", relative, st, None
            else:
                yield "o", relative, st, None

    yield from scan(str(version), "")


def digest_of(entries: list[list]) -> str:
    """sha256 over each entry's kind, path, mode and content (file digest or link target).

    Each entry is its fields joined by NUL, which no path nor link target holds.
    """
    import hashlib  # only what seals or verifies a version hashes

    h = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e[1]):
        h.update("\0".join(map(str, _content(entry))).encode("utf-8", "surrogateescape") + b"\0\n")
    return "sha256:" + h.hexdigest()


def _content(entry: list) -> list:
    """What identifies an entry's content: kind, path, mode, and digest or link target."""
    kind, relative = entry[0], entry[1]
    if kind == "f":
        return [kind, relative, entry[2], entry[6]]
    if kind == "l":
        return [kind, relative, entry[2]]
    return [kind, relative, entry[2]]


def _stat_entry(kind: str, relative: str, st: os.stat_result, target: str | None) -> list:
    if kind == "l":
        return ["l", relative, target]
    if kind == "f":
        return ["f", relative, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino, None]
    return [kind, relative, stat.S_IMODE(st.st_mode)]


def _same_stat(a: list, b: list) -> bool:
    """Same kind, mode, link target, and for files size and mtime (not content)."""
    if a[0] != b[0]:
        return False
    if a[0] == "f":
        return a[2:5] == b[2:5]
    return a[2] == b[2]


def _hash(path: Path) -> str:
    import hashlib

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise PlugboxError(f"could not read {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- files ------------------------------------------------------------------------

def directory(store, name: str, make: bool = False) -> Path:
    """deploy/.plugbox/NAME, where the version's record lives: made (mode 0700, never
    through a link) when `make`, after moving there what an older plugbox kept in
    deploy/NAME/.plugbox; when only reading, the older place if that is where it is."""
    records = store.deploy / RECORDS
    own = records / name
    older = store.version_dir(name) / RECORD_DIR
    for path in (records, own, older):
        if path.is_symlink():
            raise PlugboxError(f"{path} is a symbolic link, not plugbox's own directory",
                               "remove it and deploy again")
    if not make:
        return older if not own.exists() and older.is_dir() else own
    try:
        records.mkdir(mode=0o700, exist_ok=True)
        if not own.exists() and older.is_dir():
            os.rename(older, own)
            os.chmod(own, 0o700)
        else:
            own.mkdir(mode=0o700, exist_ok=True)
    except OSError as error:
        raise PlugboxError(f"could not create {own}: {error.strerror}") from None
    return own


def _write_json(directory: Path, filename: str, data: dict) -> None:
    _write(directory, filename, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def _write_lines(directory: Path, filename: str, entries: list[list]) -> None:
    # One json.dumps of the whole list: C speed, about 10 ms for 3,000 entries.
    _write(directory, filename, json.dumps({"entries": entries}).encode() + b"\n")


def _write(directory: Path, filename: str, data: bytes, mode: int = 0o644) -> None:
    """Write `filename` whole or not at all: temporary file, fsync, rename, fsync of the directory."""
    final = directory / filename
    temporary = directory / f".{filename}.new"
    try:
        try:
            os.unlink(temporary)  # left by a kill, maybe with another mode
        except FileNotFoundError:
            pass
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as error:
        raise PlugboxError(f"could not write {final}: {error.strerror}") from None


def _read_manifest(own: Path, filename: str) -> list[list]:
    try:
        fd = os.open(own / filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        try:
            entries = json.load(f).get("entries", [])
        except (ValueError, AttributeError):
            return []
    return [e for e in entries if isinstance(e, list) and len(e) >= 3 and isinstance(e[1], str)]


def checked_origin(origin: dict) -> dict:
    """Keep what plug may send, each of the type it must have; refuse anything else."""
    if not isinstance(origin, dict):
        raise PlugboxError("the origin of a version must be an object")
    checked = {}
    for key, value in origin.items():
        if key not in ORIGIN_KEYS:
            raise PlugboxError(f"unknown origin field {key!r}", f"the fields are {', '.join(ORIGIN_KEYS)}")
        if value is None:
            continue
        if key == "dirty":
            if not isinstance(value, bool):
                raise PlugboxError("origin field 'dirty' must be true or false")
        elif not isinstance(value, str):
            raise PlugboxError(f"origin field {key!r} must be a string")
        elif key == "message":
            value = value[:_MESSAGE_LIMIT]
        elif key == "artifact_sha256":
            if len(value) != 64 or value.strip(_HEX):  # 64 lowercase hex digits
                raise PlugboxError("origin field 'artifact_sha256' must be 64 lowercase hex digits")
        elif key == "artifact":
            if not value or "/" in value or not value.isprintable() or len(value) > 255:
                raise PlugboxError("origin field 'artifact' must be a file name")
        else:
            value = value[:200]
        checked[key] = value
    return checked


