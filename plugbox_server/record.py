"""What plugbox knows of each version: its record, its manifest, and verify.

Touches only the version's own bookkeeping directory, deploy/.plugbox/NAME/
(beside the version, never inside its tree, which a web server may serve), and
reads the version's tree:

    record.json    who made it, when, from what source, the message, files,
                   bytes, digest, and its history (indented JSON)
    manifest       every entry of the tree as uploaded (JSON, one line), with
                   each file's sha256: what verify compares with. Whole
                   ({"entries"}), or what differs from the manifest of the
                   version it was made against ({"base", "depth", "entries",
                   "removed"}: a version that changes one file of 3,000 keeps
                   one entry, not 3,000); see _manifest_of
    post-upload    what post_upload added or changed, by stat only (only for
                   a version with a post_upload hook or shared paths)
    env            its environment, NAME=VALUE a line (mode 0600; see environment.py)

An older plugbox kept these in deploy/NAME/.plugbox/: they are read there, and
moved the first time a command writes the record.

Each file is written whole to a temporary name beside it, fsynced, and renamed
over the old one: a kill leaves the old file or the new one, never a torn one.
The directory is fsynced where a crash must not lose the rename (see _write);
a deploy writes all of a new version's files, then fsyncs the directory once,
before the version appears in deploy/. Nothing here follows a symbolic link: a
version's tree is walked without following links, and .plugbox itself must be a
real directory.

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
from plugbox_server.names import is_version_name, utc_now, who

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

def create(store, name: str, origin: dict | None = None, created: str | None = None,
           write: bool = True) -> dict:
    """Write the record of a version being made (it may still be deploy/.new-NAME).

    `origin` is what plug sends: {"user", "machine", "revision", "branch",
    "dirty", "message"}, and for a version made from an artifact its file name
    and sha256, {"artifact", "artifact_sha256"}; by hand it is None and the
    user is PLUGBOX_USER or the login. `created`: when (default now); without
    `write`, the record is only returned (make() writes it with the rest).
    """
    origin = checked_origin(origin or {})
    record = {
        "name": name,
        "created": created or utc_now(),
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
    if write:  # by hand (next-version): should a crash lose it, the seal makes another
        _write_json(directory(store, name, make=True), RECORD, record)
    return record


def make(store, name: str, tree: Path, *, previous: str | None, origin: dict | None,
         env: Environment, change: dict | None = None, created: str | None = None) -> dict:
    """Everything plugbox knows of a new version, written before it appears in deploy/:
    its record (origin, environment's names, the seal of `tree`, its staging
    directory, as uploaded, made against `previous`), its manifest and its
    environment, in a directory of its own made now.

    Durability, in the fewest fsyncs that give it: each file's own fsync before
    its rename (no torn file), then one fsync of the directory and one of
    deploy/.plugbox/ (its new entry): the record, above all the environment, is
    on disk before the version is (store.commit_staging renames it into place
    and fsyncs deploy/).
    """
    record = create(store, name, origin, created=created, write=False)
    data, fields = _sealed(store, tree, previous)
    record.update(fields)
    record["environment"] = env.known()
    if change:
        record["change"] = change
    own, made = _made_directory(store, name)
    _write(own, MANIFEST, _json_line(data), sync=False)   # before the record that says it is sealed
    _write(own, ENV, environment.render(env.values), mode=0o600, sync=False)
    _write_json(own, RECORD, record, sync=False)
    _fsync_dir(own)
    if made:
        _fsync_dir(own.parent)
    return record


def seal(store, name: str, previous: str | None = None, env: Environment | None = None) -> dict:
    """Count and digest the version's tree as uploaded; write its manifest and record
    (for a version made by hand, whose upload plugbox did not see; a deploy seals
    the staging directory in make()); with `env`, its environment too."""
    data, fields = _sealed(store, store.version_dir(name), previous)
    record = load(store, name) or create(store, name)
    record.update(fields)
    own = directory(store, name, make=True)
    # The manifest first: a record that says sealed always has one. One fsync of the
    # directory for the renames: a journal keeps the order of one directory's
    # renames, so a crash leaves them all old at worst.
    _write(own, MANIFEST, _json_line(data), sync=False)
    if env is not None:
        _write(own, ENV, environment.render(env.values), mode=0o600, sync=False)
        record["environment"] = env.known()
    _write_json(own, RECORD, record)
    return record


# Deltas between a manifest and a whole one, at most: reading a version's manifest
# reads this many small files and one whole one at most.
DEPTH = 16


def _sealed(store, tree: Path, previous: str | None) -> tuple[dict, dict]:
    """(the manifest to write, the record's fields) of the tree at `tree`, made against
    `previous`.

    Only what rsync sent is read: a file whose inode (from the directory listing,
    no stat) is the one `previous`'s manifest records at the same path is a hard
    link rsync --link-dest made of an unchanged file, and takes that entry whole
    (mode, size, mtime and digest: an inode's own). Any other file is stat'ed,
    and hashed unless previous's manifest has its inode, size and mtime at
    another path. The manifest is what differs from previous's (see _manifest_of).
    """
    before: dict[str, list] = {}
    depth = None
    if previous:
        try:
            found = _uploaded(store, previous)
        except PlugboxError:  # its base is gone: hash everything, write a whole manifest
            found = None
        if found is not None:
            entries, depth = found
            before = {entry[1]: entry for entry in entries}
    elsewhere = {(e[5], e[3], e[4]): e[6] for e in before.values() if e[0] == "f"}
    entries = []
    for kind, relative, item, target in _listing(tree):
        if kind == "f":
            old = before.get(relative)
            if old is not None and old[0] == "f" and old[5] == item.inode():
                entries.append(old)
                continue
            st = item.stat(follow_symlinks=False)
            digest = elsewhere.get((st.st_ino, st.st_size, st.st_mtime_ns)) or _hash(tree / relative)
            entries.append(["f", relative, stat.S_IMODE(st.st_mode), st.st_size,
                            st.st_mtime_ns, st.st_ino, digest])
        else:
            entries.append(_stat_entry(kind, relative, item.stat(follow_symlinks=False), target))
    files = [e for e in entries if e[0] == "f"]
    fields = {"sealed": utc_now(), "files": len(files), "bytes": sum(e[3] for e in files),
              "digest": digest_of(entries)}
    return _manifest_of(entries, previous, before, depth), fields


def _manifest_of(entries: list[list], previous: str | None, before: dict[str, list],
                 depth: int | None) -> dict:
    """The manifest to write: what differs from `before` (previous's entries, by path),
    and the paths it no longer has, against previous's manifest as its base; or the
    whole of `entries` when there is no base, when it is DEPTH deltas deep, or when
    most entries differ.

    A version's base is its previous when it was sealed, and only remove and prune
    re-point a previous: they write whole the manifests that are deltas against a
    version they take away, first (detach)."""
    if previous is None or depth is None or depth >= DEPTH:
        return {"entries": entries}
    changed = [entry for entry in entries if before.get(entry[1]) != entry]
    present = {entry[1] for entry in entries}
    removed = [path for path in before if path not in present]
    if 2 * (len(changed) + len(removed)) > len(entries):
        return {"entries": entries}
    return {"base": previous, "depth": depth + 1, "entries": changed, "removed": sorted(removed)}


def detach(store, chain, doomed: "list[str] | set[str]") -> int:
    """Before the versions `doomed` go (remove, prune): write whole each manifest that
    is a delta against one of them, so that none needs a record that is gone.
    Such a manifest is a version's whose previous is one of them (the base of a
    delta is its version's previous when sealed). Returns how many were written."""
    doomed = set(doomed)
    written = 0
    for name in chain.versions:
        if name in doomed or chain.previous(name) not in doomed:
            continue
        try:
            own = directory(store, name)
        except PlugboxError:  # a deploy/.plugbox that is a link: not plugbox's to write
            continue
        data = _read_json(own / MANIFEST)
        if not isinstance(data, dict) or data.get("base") not in doomed:
            continue
        found = _uploaded(store, name)
        if found is not None:
            _write(own, MANIFEST, _json_line({"entries": found[0]}))
            written += 1
    return written


def after_post_upload(store, name: str) -> int:
    """Note, by stat only, what post_upload added or changed; return how many entries."""
    version = store.version_dir(name)
    own = directory(store, name, make=True)
    uploaded = {e[1]: e for e in _entries_or_none(store, name)}
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
        # No fsync of the directory: a crash may lose this rename, which leaves the
        # record whole and one event short (plugbox(1) says so); the file's own
        # fsync, before it, is what keeps it from being torn.
        _write_json(directory(store, name, make=True), RECORD, record, sync=False)
    except (OSError, PlugboxError):
        pass


def write_environment(store, name: str, env: Environment, change: dict | None = None) -> None:
    """The version's environment: its values in `env` (mode 0600), and in its record
    the names, their sources and the version that last changed each, and for an
    environment change the names set and unset ({"set", "unset"}); never a value."""
    own = directory(store, name, make=True)
    _write(own, ENV, environment.render(env.values), mode=0o600, sync=False)  # one fsync of the directory, below
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
        _write_json(directory(store, name, make=True), RECORD, record, sync=False)  # as event()
    except (OSError, PlugboxError):
        pass


def differs_in(store, before: str, after: str, paths: tuple[str, ...]) -> bool:
    """Whether anything under `paths` (files or directories of the tree as uploaded)
    differs between two versions, by their manifests; True when one has none."""
    def under(entries: list[list]) -> set[tuple]:
        return {tuple(map(str, _content(e))) for e in entries
                if any(e[1] == p or e[1].startswith(p + "/") for p in paths)}
    try:
        old, new = _uploaded(store, before), _uploaded(store, after)
    except PlugboxError:
        return True
    if old is None or new is None:
        return True
    return under(old[0]) != under(new[0])


def manifest(store, name: str) -> list[list]:
    """The version's tree as uploaded, one entry a path (see seal), parents first;
    refused when the version has none to give."""
    found = _uploaded(store, name)
    if found is None:
        raise PlugboxError(f"{name} has no record of its files as uploaded (made by hand, or by an "
                           "older plugbox)", "deploy a version first; nothing changed")
    return sorted(found[0], key=lambda e: e[1])


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
    uploaded = {e[1]: e for e in _entries_or_none(store, name, strict=True)}
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
    for kind, relative, item, target in _listing(version):
        yield kind, relative, item.stat(follow_symlinks=False), target


def _listing(version: Path):
    """(kind, relative path, os.DirEntry, link target) of every entry, sorted, no link
    followed, from the directories' listings alone: no stat (DirEntry.stat() gives
    one, once, when asked)."""
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
            if entry.is_symlink():
                yield "l", relative, entry, os.readlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                yield "d", relative, entry, None
                yield from scan(entry.path, relative + "/")
            elif entry.is_file(follow_symlinks=False):
                yield "f", relative, entry, None
            else:
                yield "o", relative, entry, None

    yield from scan(str(version), "")


def digest_of(entries: list[list]) -> str:
    """sha256 over each entry's kind, path, mode and content (file digest or link target).

    Each entry is its fields joined by NUL, which no path nor link target holds.
    """
    import hashlib  # only what seals or verifies a version hashes

    text = "".join("\0".join(map(str, _content(entry))) + "\0\n"
                   for entry in sorted(entries, key=lambda e: e[1]))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


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


def _made_directory(store, name: str) -> tuple[Path, bool]:
    """directory(store, name, make=True), and whether it was made now."""
    own = directory(store, name)
    existed = own.is_dir()
    return directory(store, name, make=True), not existed


def _json_line(data: dict) -> bytes:
    # One json.dumps of the whole: C speed, about 10 ms for 3,000 entries.
    return json.dumps(data).encode() + b"\n"


def _write_json(directory: Path, filename: str, data: dict, sync: bool = True) -> None:
    _write(directory, filename, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode(), sync=sync)


def _write_lines(directory: Path, filename: str, entries: list[list]) -> None:
    _write(directory, filename, _json_line({"entries": entries}))


def _write(directory: Path, filename: str, data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Write `filename` whole or not at all: a temporary file, fsynced (without it a
    crash may leave the new name on a file not yet written: a torn record), renamed
    over the old one; then, with `sync`, the directory fsynced, so that a crash
    cannot undo the rename. Without `sync`, the caller fsyncs the directory after
    several files (make) or a crash may undo the rename, leaving the old file
    whole, which the caller allows (event)."""
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
        if sync:
            _fsync_dir(directory)
    except OSError as error:
        raise PlugboxError(f"could not write {final}: {error.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            return json.load(f)
        except ValueError:
            return None


def _checked_entries(entries) -> list[list]:
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, list) and len(e) >= 3 and isinstance(e[1], str)]


def _read_manifest(own: Path, filename: str) -> list[list]:
    """The entries of a file of whole entries ({"entries": [...]}: post-upload)."""
    data = _read_json(own / filename)
    return _checked_entries(data.get("entries")) if isinstance(data, dict) else []


def _uploaded(store, name: str) -> tuple[list[list], int] | None:
    """The version's tree as uploaded: every entry of its manifest, a delta applied to
    its base's (and so on, DEPTH deep at most), and how many deltas deep it is;
    None when it has no manifest. A PlugboxError when a base it needs is gone
    (deleted by hand: remove and prune write dependents whole first)."""
    layers = []
    current = name
    while True:
        data = _read_json(directory(store, current) / MANIFEST)
        if not isinstance(data, dict):
            if current == name:
                return None
            raise PlugboxError(f"the manifest of {name} is kept as what differs from {current}'s, "
                               f"which is gone", "deploy again to get a version with a whole manifest")
        layers.append(data)
        base = data.get("base")
        if base is None:
            break
        if not (isinstance(base, str) and is_version_name(base)) or len(layers) > DEPTH:
            raise PlugboxError(f"the manifest of {name} is not one plugbox wrote",
                               "deploy again to get a version with a whole manifest")
        current = base
    entries = {entry[1]: entry for entry in _checked_entries(layers[-1].get("entries"))}
    for data in reversed(layers[:-1]):
        for path in data.get("removed") or []:
            entries.pop(path, None)
        for entry in _checked_entries(data.get("entries")):
            entries[entry[1]] = entry
    return list(entries.values()), len(layers) - 1


def _entries_or_none(store, name: str, strict: bool = False) -> list[list]:
    """The version's entries as uploaded; [] when it has no manifest (or, unless
    `strict`, when a base of it is gone)."""
    try:
        found = _uploaded(store, name)
    except PlugboxError:
        if strict:
            raise
        found = None
    return found[0] if found is not None else []


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


