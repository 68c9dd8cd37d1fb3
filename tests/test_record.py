"""The record of each version: written atomically, sealed once, its history, its source.

Real directories and real processes: the atomic write is tested with kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIMEOUT, deploy, new_version, ok, plugbox
from plugbox_client import argv as A
from plugbox_client import source
from plugbox_server import operations, record
from plugbox_server.store import Store


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "srv" / "svc"
    home.mkdir(parents=True)
    return home


def read(home: Path, name: str) -> dict:
    # What a person would do: cat the file.
    return json.loads((home / "deploy" / ".plugbox" / name / "record.json").read_text())


def events(home: Path, name: str) -> list[tuple]:
    return [(e["event"], e.get("command"), e.get("hook")) for e in read(home, name)["history"]]


# --- where a record lives: beside the version, never in its tree ---------------------

def test_a_versions_tree_holds_what_was_uploaded_and_its_record_lives_beside_it(home):
    name = deploy(home, {"index.html": "<p>hello</p>\n"})
    # What a web server serving deploy/NAME as it is would show: nothing of plugbox's.
    assert sorted(os.listdir(home / "deploy" / name)) == ["index.html"]
    records = home / "deploy" / ".plugbox"
    assert sorted(os.listdir(records / name)) == ["env", "manifest", "record.json"]
    assert (os.stat(records).st_mode & 0o777, os.stat(records / name).st_mode & 0o777) == (0o700, 0o700)
    assert os.stat(records / name / "env").st_mode & 0o777 == 0o600
    assert read(home, name)["name"] == name
    # What post_upload made is noted beside them, for a version that has the hook.
    hooked = new_version(home, {"plugbox.toml": '[hooks]\npost_upload = ["touch made"]\n'})
    ok(home, "upgrade-to", hooked)
    assert sorted(os.listdir(home / "deploy" / hooked)) == ["made", "plugbox.toml", "previous"]
    assert sorted(os.listdir(records / hooked)) == ["env", "manifest", "post-upload", "record.json"]


def test_a_record_an_older_plugbox_kept_in_the_version_is_read_there_then_moved(home, monkeypatch):
    monkeypatch.setenv("PLUGBOX_USER", "alice")
    first = deploy(home)
    second = deploy(home)
    older = home / "deploy" / first / ".plugbox"
    os.rename(home / "deploy" / ".plugbox" / first, older)  # where plugbox 0.1 kept it

    shown = {row["name"]: row["record"] for row in json.loads(ok(home, "status", "--json"))["versions"]}
    assert shown[first]["user"] == "alice" and shown[first]["name"] == first
    assert older.is_dir()  # reading moves nothing

    ok(home, "rollback-to")  # writes first's history: its record moves beside it
    assert not older.exists()
    assert [e["event"] for e in read(home, first)["history"]] == ["live", "away", "live"]
    assert ok(home, "verify") == f"{first}: as uploaded ({read(home, first)['digest']})\n"
    assert second in os.listdir(home / "deploy" / ".plugbox")


# --- what a record holds ------------------------------------------------------------

def test_a_version_made_by_hand_records_who_and_when(home, monkeypatch):
    monkeypatch.setenv("PLUGBOX_USER", "alice")
    name = new_version(home)
    made = read(home, name)
    assert made["name"] == name and made["user"] == "alice"
    assert made["machine"] is None and made["revision"] is None and made["message"] is None
    assert made["created"].endswith("Z") and made["sealed"] is None and made["history"] == []


def test_the_origin_plug_sends_is_recorded(home):
    origin = {"user": "bob", "machine": "laptop", "revision": "a" * 40, "branch": "main",
              "dirty": True, "message": "fix the login form"}
    name, _ = operations.next_version(home, origin=origin)
    made = read(home, name)
    assert {k: made[k] for k in origin} == origin


def test_the_artifact_a_version_was_made_from_is_recorded(home):
    origin = {"user": "ci", "artifact": "app.tar.gz", "artifact_sha256": "3f" * 32}
    name, _ = operations.next_version(home, origin=origin)
    made = record.load(Store(home), name)
    assert (made["artifact"], made["artifact_sha256"]) == ("app.tar.gz", "3f" * 32)
    # A version made from a tree records none.
    other, _ = operations.next_version(home, origin={"user": "ci"})
    assert (record.load(Store(home), other)["artifact"], record.load(Store(home), other)["artifact_sha256"]) \
        == (None, None)


@pytest.mark.parametrize("origin, why", [
    ({"host": "x"}, "unknown origin field 'host'"),
    ({"dirty": "yes"}, "'dirty' must be true or false"),
    ({"message": 3}, "'message' must be a string"),
    ({"artifact_sha256": "ABC"}, "'artifact_sha256' must be 64 lowercase hex digits"),
    ({"artifact_sha256": "A" * 64}, "'artifact_sha256' must be 64 lowercase hex digits"),
    ({"artifact": "dist/app.tar.gz"}, "'artifact' must be a file name"),
    ({"artifact": "app\n.tgz"}, "'artifact' must be a file name"),
])
def test_a_malformed_origin_is_refused_and_makes_no_version(home, origin, why):
    with pytest.raises(operations.PlugboxError, match=why):
        operations.next_version(home, origin=origin)
    assert not (home / "deploy").exists()


def test_upgrade_to_seals_the_record_with_files_bytes_and_digest(home):
    name = deploy(home, {"a.txt": "hello\n", "b.txt": "world!\n"})
    sealed = read(home, name)
    assert (sealed["files"], sealed["bytes"]) == (2, 13)
    assert sealed["digest"].startswith("sha256:") and sealed["sealed"]
    assert events(home, name) == [("live", "upgrade-to", None)]
    manifest = json.loads((home / "deploy" / ".plugbox" / name / "manifest").read_text())
    assert [entry[1] for entry in manifest["entries"]] == ["a.txt", "b.txt"]


def test_the_digest_is_of_the_tree_not_of_plugbox_links_nor_the_record(home):
    first = deploy(home, {"a.txt": "same\n"})
    second = deploy(home, {"a.txt": "same\n"})
    # second has a previous link, first now a next link: neither counts.
    assert read(home, first)["digest"] == read(home, second)["digest"]
    third = deploy(home, {"a.txt": "other\n"})
    assert read(home, third)["digest"] != read(home, second)["digest"]


def test_an_rsync_delete_of_the_users_own_loses_the_record_and_upgrade_to_makes_it_again(home):
    name = new_version(home, {"a.txt": "x\n"})
    shutil.rmtree(home / "deploy" / ".plugbox" / name)
    ok(home, "upgrade-to", name)
    again = read(home, name)
    assert again["files"] == 1 and again["digest"] and events(home, name)[0][0] == "live"


def test_plugs_rsync_never_deletes_the_record(home, tmp_path):
    name = ok(home, "next-version").strip()
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "app.py").write_text("x\n")
    argv = A.rsync_upload([str(upload) + "/"], str(home / "deploy" / name) + "/")
    subprocess.run(argv, check=True, capture_output=True, timeout=TIMEOUT)
    assert (home / "deploy" / name / "app.py").is_file()
    assert read(home, name)["name"] == name


# --- history ------------------------------------------------------------------------

def test_history_of_deploy_rollback_and_redeploy(home):
    a = deploy(home)
    b = deploy(home)
    ok(home, "rollback-to")
    assert events(home, a) == [("live", "upgrade-to", None), ("away", "upgrade-to", None),
                               ("live", "rollback-to", None)]
    assert events(home, b) == [("live", "upgrade-to", None), ("away", "rollback-to", None)]


def test_a_failed_check_is_in_the_history(home):
    a = deploy(home)
    b = new_version(home, {"plugbox.toml": '[hooks]\ncheck = ["exit 3"]\n'})
    assert plugbox(home, "upgrade-to", b).exit_code == 4
    assert events(home, b) == [("live", "upgrade-to", None), ("failed", "upgrade-to", "check"),
                               ("away", "upgrade-to", None)]
    assert events(home, a)[-1] == ("live", "upgrade-to", None)


def test_a_failed_post_upload_is_in_the_history(home):
    deploy(home)
    b = new_version(home, {"plugbox.toml": '[hooks]\npost_upload = ["exit 3"]\n'})
    assert plugbox(home, "upgrade-to", b).exit_code == 4
    assert events(home, b) == [("failed", "upgrade-to", "post_upload")]


# --- the cost of sealing: only what rsync sent is hashed -------------------------------

def test_seal_hashes_only_files_that_are_not_hard_links_of_the_previous_version(home, monkeypatch):
    first = deploy(home, {f"f{i}.txt": f"{i}\n" for i in range(20)})
    second = ok(home, "next-version").strip()
    for i in range(20):  # what rsync --link-dest does for unchanged files
        os.link(home / "deploy" / first / f"f{i}.txt", home / "deploy" / second / f"f{i}.txt")
    (home / "deploy" / second / "f0.txt").unlink()
    (home / "deploy" / second / "f0.txt").write_text("changed\n")
    hashed = []
    real = record._hash
    monkeypatch.setattr(record, "_hash", lambda path: hashed.append(path.name) or real(path))
    record.seal(Store(home), second, previous=first)
    assert hashed == ["f0.txt"]
    monkeypatch.setattr(record, "_hash", real)
    # and the reused digests are right: a full verify agrees
    result = record.verify(Store(home), second)
    assert result["digest"] == read(home, second)["digest"] and not record.differs(result)


# --- manifests: whole, or what differs from the previous version's ---------------------

def linked_version(home: Path, previous: str, changed: dict[str, str]) -> str:
    """A version made as rsync --link-dest makes it: previous's files hard-linked, but
    `changed` (written anew), then upgraded to."""
    name = ok(home, "next-version").strip()
    for path in sorted(os.listdir(home / "deploy" / previous)):
        if path not in ("previous", "next") and path not in changed:
            os.link(home / "deploy" / previous / path, home / "deploy" / name / path)
    for path, text in changed.items():
        (home / "deploy" / name / path).write_text(text)
    ok(home, "upgrade-to", name)
    return name


def manifest_file(home: Path, name: str) -> dict:
    return json.loads((home / "deploy" / ".plugbox" / name / "manifest").read_text())


def whole_manifest(home: Path, name: str) -> list[list]:
    """The entries a whole manifest of the version's tree has now (sorted by path)."""
    entries = []
    for kind, relative, st, target in record.walk(home / "deploy" / name):
        entry = record._stat_entry(kind, relative, st, target)
        if kind == "f":
            entry[6] = record._hash(home / "deploy" / name / relative)
        entries.append(entry)
    return sorted(entries, key=lambda e: e[1])


def test_a_version_that_changes_one_file_keeps_that_entry_and_reads_back_whole(home):
    first = deploy(home, {f"f{i}.txt": f"{i}\n" for i in range(20)})
    second = linked_version(home, first, {"f3.txt": "changed\n", "new.txt": "new\n"})

    kept = manifest_file(home, second)
    assert kept["base"] == first and kept["depth"] == 1
    assert sorted(entry[1] for entry in kept["entries"]) == ["f3.txt", "new.txt"]
    assert kept["removed"] == []
    assert "base" not in manifest_file(home, first)  # the first is whole
    assert record.manifest(Store(home), second) == whole_manifest(home, second)
    assert ok(home, "verify") == f"{second}: as uploaded ({read(home, second)['digest']})\n"

    third = linked_version(home, second, {})
    os.unlink(home / "deploy" / third / "f0.txt")  # after the seal: verify sees it
    assert manifest_file(home, third)["entries"] == []
    assert plugbox(home, "verify").stdout == "removed: f0.txt\n"


def test_a_removed_path_is_kept_as_removed(home):
    first = deploy(home, {f"f{i}.txt": f"{i}\n" for i in range(10)})
    second = ok(home, "next-version").strip()
    for i in range(1, 10):
        os.link(home / "deploy" / first / f"f{i}.txt", home / "deploy" / second / f"f{i}.txt")
    ok(home, "upgrade-to", second)
    assert manifest_file(home, second)["removed"] == ["f0.txt"]
    assert [e[1] for e in record.manifest(Store(home), second)] == [f"f{i}.txt" for i in range(1, 10)]
    assert ok(home, "verify").startswith(f"{second}: as uploaded")


def test_at_most_depth_deltas_then_a_whole_manifest(home):
    names = [deploy(home, {"a.txt": "a\n", "b.txt": "0\n"})]
    for i in range(record.DEPTH + 1):
        names.append(linked_version(home, names[-1], {"b.txt": f"{i + 1}\n"}))
    depths = [manifest_file(home, name).get("depth", 0) for name in names]
    assert depths == [0, *range(1, record.DEPTH + 1), 0]
    assert record.manifest(Store(home), names[-2]) == whole_manifest(home, names[-2])


@pytest.mark.parametrize("how", ["remove", "prune"])
def test_removing_the_base_of_a_delta_writes_it_whole_first(home, how):
    first = deploy(home, {f"f{i}.txt": f"{i}\n" for i in range(10)})
    second = linked_version(home, first, {"f1.txt": "one\n"})
    third = linked_version(home, second, {"f2.txt": "two\n"})
    assert (manifest_file(home, second)["base"], manifest_file(home, third)["base"]) == (first, second)
    expected = whole_manifest(home, third)

    if how == "remove":
        ok(home, "remove", "-v", second)
        assert manifest_file(home, third) == {"entries": expected}  # its base went: whole now
        assert manifest_file(home, first) == {"entries": whole_manifest(home, first)}
    else:
        ok(home, "prune", "--keep", "2")  # takes first: second's base
        assert "base" not in manifest_file(home, second)
        assert manifest_file(home, third)["base"] == second  # its base stays
    assert record.manifest(Store(home), third) == expected
    assert ok(home, "verify").startswith(f"{third}: as uploaded")


def test_a_manifest_whose_base_a_hand_deleted_says_so(home):
    first = deploy(home, {"a.txt": "a\n"})
    second = linked_version(home, first, {"b.txt": "b\n"})
    shutil.rmtree(home / "deploy" / ".plugbox" / first)
    ran = plugbox(home, "verify", second)
    assert ran.exit_code == 1
    assert f"the manifest of {second} is kept as what differs from {first}'s, which is gone" in ran.stderr


# --- atomic writes --------------------------------------------------------------------

WRITER = """
import os, signal, sys
from pathlib import Path
from plugbox_server import record
from plugbox_server.store import Store
store, name = Store(Path(sys.argv[1])), sys.argv[2]
real = os.replace
def dying(a, b):
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = dying
record.event(store, name, "live", command="x" * 100000)
"""


def test_a_kill_before_the_rename_leaves_the_old_record_whole(home):
    name = deploy(home)
    before = (home / "deploy" / ".plugbox" / name / "record.json").read_bytes()
    done = subprocess.run([sys.executable, "-c", WRITER, str(home), name],
                          timeout=TIMEOUT, capture_output=True)
    assert done.returncode == -signal.SIGKILL
    assert (home / "deploy" / ".plugbox" / name / "record.json").read_bytes() == before
    # the half-written temporary file is plugbox's own, and the next write replaces it
    assert (home / "deploy" / ".plugbox" / name / ".record.json.new").exists()
    ok(home, "status")


# A record written by a process that SIGKILLs itself just before its Nth call of
# one of CALLS (the calls that open, write, sync, rename or remove files), as
# tests/test_server_kill.py does for whole commands. os.write writes at most
# `chunk` bytes a call (a short write, as write(2) may do), a fifth of the old
# record, so that writing a record takes five calls or more and a kill can land
# between two of them. A first run, N = 0, kills nowhere and prints how many
# calls it made; then each N from 1 to that count, each on a fresh copy of the
# version's .plugbox/.
CALLS = ("open", "write", "pwrite", "fsync", "fdatasync", "close", "replace", "rename",
         "link", "unlink", "mkdir", "truncate", "ftruncate")

DYING_WRITER = r"""
import os, signal, sys
from pathlib import Path
from plugbox_server import record
from plugbox_server.store import Store

home, name, step, chunk, kill_at = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
store = Store(home)
steps = {
    "event": lambda: record.event(store, name, "away", command="x" * 500),
    "seal": lambda: record.seal(store, name),
}
calls = 0

def dying(call):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return call(*args, **kwargs)
    return wrapper

saved = {call: getattr(os, call) for call in CALLS}
def short_write(fd, data):
    return saved["write"](fd, memoryview(data)[:chunk])

for call, real in saved.items():
    setattr(os, call, dying(short_write if call == "write" else real))
steps[step]()
for call, real in saved.items():
    setattr(os, call, real)
print(calls)
"""


def untimed(made: dict) -> dict:
    """A record without its clock readings, which differ from one run to the next."""
    return {**made, "sealed": bool(made["sealed"]),
            "history": [{**entry, "time": None} for entry in made["history"]]}


def run_dying(home: Path, name: str, step: str, chunk: int, kill_at: int) -> subprocess.CompletedProcess:
    script = f"CALLS = {CALLS!r}\n{DYING_WRITER}"
    return subprocess.run([sys.executable, "-c", script, str(home), name, step, str(chunk), str(kill_at)],
                          timeout=TIMEOUT, capture_output=True, text=True, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("step", ["event", "seal"])
def test_a_kill_between_any_two_writes_leaves_the_old_record_or_the_new_one_whole(home, tmp_path, step):
    """kill -9 just before each file call of a record's update, in turn: the record is
    always there, and is the old one or the new one, whole; never torn, never missing."""
    if step == "event":  # a sealed, live version gets one more event in its history
        name = deploy(home, {"a.txt": "hello\n"})
    else:  # an uploaded version is sealed: its manifest written, its record completed
        name = new_version(home, {"a.txt": "hello\n", "b.txt": "world\n"})
    bookkeeping = home / "deploy" / ".plugbox" / name
    kept = tmp_path / "kept"
    shutil.copytree(bookkeeping, kept)
    old_bytes = (kept / "record.json").read_bytes()
    old = json.loads(old_bytes)
    old_manifest = (kept / "manifest").read_bytes() if (kept / "manifest").exists() else None
    # Small writes: the record takes five calls of os.write or more.
    chunk = max(1, len(old_bytes) // 5)

    counted = run_dying(home, name, step, chunk, 0)
    assert counted.returncode == 0, counted.stderr
    calls = int(counted.stdout)
    new = read(home, name)
    new_manifest = (bookkeeping / "manifest").read_bytes()
    if step == "event":
        assert new["history"][:-1] == old["history"]
        assert {k: v for k, v in new["history"][-1].items() if k != "time"} == \
            {"event": "away", "command": "x" * 500}
        assert new_manifest == old_manifest
    else:
        assert not old["sealed"] and new["sealed"] and (new["files"], new["bytes"]) == (2, 12)
        assert old_manifest is None
    assert (bookkeeping / "record.json").stat().st_size >= 5 * chunk

    outcomes, torn_elsewhere = [], []
    for kill_at in range(1, calls + 1):
        shutil.rmtree(bookkeeping)
        shutil.copytree(kept, bookkeeping)
        what = f"{step}, killed before file call {kill_at} of {calls}"

        done = run_dying(home, name, step, chunk, kill_at)

        assert done.returncode == -signal.SIGKILL, (what, done.returncode, done.stderr)
        record_file = bookkeeping / "record.json"
        assert record_file.is_file(), f"{what}: the record is gone"
        text = record_file.read_bytes()
        try:
            now = json.loads(text)
        except ValueError:
            pytest.fail(f"{what}: a torn record: {text[-80:]!r}", pytrace=False)
        if text == old_bytes:
            outcomes.append("old")
        else:
            assert untimed(now) == untimed(new), f"{what}: neither the old record nor the new one"
            outcomes.append("new")
        manifest = bookkeeping / "manifest"
        if manifest.exists():
            assert manifest.read_bytes() in (old_manifest, new_manifest), f"{what}: a torn manifest"
        else:
            assert old_manifest is None, f"{what}: the manifest is gone"
            assert outcomes[-1] == "old", f"{what}: the record is sealed, but there is no manifest"
        # Whatever else the kill left in .plugbox is a file cut short: plugbox's own
        # temporary, which the next write replaces.
        for other in bookkeeping.iterdir():
            if other.name not in ("record.json", "manifest", "post-upload"):
                try:
                    json.loads(other.read_bytes())
                except ValueError:
                    torn_elsewhere.append(kill_at)
        # The next write, not killed, works and leaves a whole record.
        ok(home, "status")
        record.event(Store(home), name, "live", command="after")
        assert read(home, name)["history"][-1]["command"] == "after", what

    # The kills landed before the switch, between writes of one file, and after the
    # switch where a call follows the rename (the seal's fsync of the directory; an
    # event's rename is its last call: a crash may undo it, leaving the old record).
    assert "old" in outcomes and ("new" in outcomes or step == "event"), outcomes
    assert torn_elsewhere, "no kill landed between two writes of a file"


# --- the source of a version -----------------------------------------------------------

def git(project: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True,
                          text=True, env=env, timeout=TIMEOUT).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "app.py").write_text("print(1)\n")
    git(project, "add", "app.py")
    git(project, "commit", "-q", "-m", "first")
    return project


def test_describe_a_clean_checkout(checkout):
    assert source.describe(checkout) == {
        "revision": git(checkout, "rev-parse", "HEAD"), "branch": "main", "dirty": False}


def test_describe_from_a_subdirectory_of_the_checkout(checkout):
    (checkout / "sub").mkdir()
    assert source.describe(checkout / "sub")["branch"] == "main"


@pytest.mark.parametrize("change", ["edit", "untracked", "staged"])
def test_describe_a_dirty_checkout(checkout, change):
    if change == "edit":
        (checkout / "app.py").write_text("print(2)\n")
    elif change == "untracked":
        (checkout / "new.py").write_text("")
    else:
        (checkout / "new.py").write_text("")
        git(checkout, "add", "new.py")
    assert source.describe(checkout)["dirty"] is True


def test_describe_a_detached_head(checkout):
    revision = git(checkout, "rev-parse", "HEAD")
    git(checkout, "checkout", "-q", "--detach")
    assert source.describe(checkout) == {"revision": revision, "branch": None, "dirty": False}


def test_describe_outside_a_checkout_or_before_the_first_commit(tmp_path):
    assert source.describe(tmp_path) == {}
    git(tmp_path, "init", "-q")
    assert source.describe(tmp_path) == {}


def test_describe_without_git(checkout, monkeypatch):
    monkeypatch.setenv("PATH", str(checkout))  # no git on it
    assert source.describe(checkout) == {}
