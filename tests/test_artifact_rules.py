"""What an artifact becomes on this machine, before anything is sent: artifact.unpack.

Real archives (tar in each compression, zip) and real files in a temporary
directory. Hypothesis writes archives over member names, kinds, modes and link
targets: a single member is refused exactly when the rules say so (an oracle
written from the rules, in plain path arithmetic); any number of members either
are refused, or leave a tree that holds nothing outside itself, nothing plugbox
owns, and nothing but files, directories and links leading inside.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
import struct
import tarfile
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugbox_client.artifact import Refused, unpack
from plugbox_server.layout import LINKS, OWNED

MTIME = 1_700_000_000


@dataclass(frozen=True)
class Member:
    name: str
    kind: str = "file"       # file, dir, symlink, hardlink, fifo, chr
    mode: int = 0o644
    target: str = ""         # of a link
    data: bytes = b"x\n"
    mtime: int = MTIME


_TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
              "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
_ZIP_KINDS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
              "fifo": stat.S_IFIFO, "chr": stat.S_IFCHR}


def write_tar(path: Path, members: list[Member], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.mtime, info.linkname = _TAR_TYPES[m.kind], m.mode, m.mtime, m.target
            info.size = len(m.data) if m.kind == "file" else 0
            tar.addfile(info, io.BytesIO(m.data) if m.kind == "file" else None)
    return path


def write_zip(path: Path, members: list[Member], timestamps: bool = True) -> Path:
    """A zip as zip(1) writes one: unix modes, and (`timestamps`) each mtime to the
    second in an extended timestamp field, besides the DOS time."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore")  # a name twice, on purpose
        for m in members:
            name = m.name + "/" if m.kind == "dir" and not m.name.endswith("/") else m.name
            info = zipfile.ZipInfo(name, time.localtime(m.mtime)[:6])
            info.create_system = 3
            info.external_attr = (_ZIP_KINDS[m.kind] | m.mode) << 16
            if timestamps:
                info.extra = struct.pack("<HHBi", 0x5455, 5, 1, m.mtime)
            archive.writestr(info, m.target.encode() if m.kind == "symlink" else
                             b"" if m.kind == "dir" else m.data)
    return path


def write(kind: str, directory: Path, members: list[Member]) -> Path:
    if kind == "zip":
        return write_zip(directory / "app.zip", members)
    return write_tar(directory / f"app{kind}", members, {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz",
                                                           ".tar.xz": "w:xz", ".tar.bz2": "w:bz2"}[kind])


def unpacked(kind: str, members: list[Member]):
    """(refusal or None, {relative path: (kind, mode or target, mtime)}, what is beside the tree)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        archive = write(kind, root, members)
        (root / "outside").mkdir()
        (root / "outside" / "sentinel").write_text("s\n")
        tree = root / secrets.token_hex(8)  # as upload.contents names it: no member knows it
        tree.mkdir()
        try:
            unpack(archive, tree)
        except Refused as error:
            refusal, found = str(error), None
        else:
            refusal, found = None, listing(tree)
        beside = sorted(os.listdir(root)) + sorted(os.listdir(root / "outside"))
        return refusal, found, [entry.replace(tree.name, "TREE") for entry in beside]


def listing(tree: Path) -> dict[str, tuple]:
    found = {}
    for directory, dirnames, filenames in os.walk(tree):
        for name in (*dirnames, *filenames):
            path = os.path.join(directory, name)
            st_ = os.lstat(path)
            relative = os.path.relpath(path, tree)
            if stat.S_ISLNK(st_.st_mode):  # its target, and where it leads from the tree's top
                found[relative] = ("symlink", os.readlink(path),
                                   os.path.relpath(os.path.realpath(path), os.path.realpath(tree)))
            elif stat.S_ISDIR(st_.st_mode):
                found[relative] = ("dir", stat.S_IMODE(st_.st_mode), st_.st_mtime)
            elif stat.S_ISREG(st_.st_mode):
                found[relative] = ("file", stat.S_IMODE(st_.st_mode), st_.st_mtime)
            else:
                found[relative] = ("other",)
    return found


KINDS = [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", "zip"]


# --- what a good archive becomes --------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_members_keep_their_mtime_and_mode(kind: str) -> None:
    refusal, tree, _ = unpacked(kind, [
        Member("./", "dir", 0o755),
        Member("./bin/run", mode=0o755, data=b"#!/bin/sh\n", mtime=MTIME + 1),
        Member("./app/main.py", mode=0o640, mtime=MTIME + 2),
        Member("./app/data.txt", mode=0o444, mtime=MTIME + 4),
        Member("./current", "symlink", 0o777, target="app/main.py"),
    ])
    assert refusal is None
    assert tree["bin/run"][:3] == ("file", 0o755, MTIME + 1)
    assert tree["app/main.py"][:3] == ("file", 0o640, MTIME + 2)
    # tarfile's data filter: the owner may always read and write a file (zip goes the same way).
    assert tree["app/data.txt"][:3] == ("file", 0o644, MTIME + 4)
    assert tree["current"][:2] == ("symlink", "app/main.py")
    assert sorted(tree) == ["app", "app/data.txt", "app/main.py", "bin", "bin/run", "current"]


def test_a_zip_without_extended_timestamps_keeps_its_dos_time(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "app.zip", [Member("a", mtime=MTIME + 1)], timestamps=False)
    (tmp_path / "tree").mkdir()
    unpack(archive, tmp_path / "tree")
    assert (tmp_path / "tree" / "a").stat().st_mtime == MTIME  # two-second steps, local time


def test_group_and_other_write_bits_go(tmp_path: Path) -> None:
    refusal, tree, _ = unpacked(".tar.gz", [Member("shared.txt", mode=0o666)])
    assert refusal is None and tree["shared.txt"][1] == 0o644


def test_any_other_file_is_the_one_file_of_the_version_with_its_mode(tmp_path: Path) -> None:
    binary = tmp_path / "hello-linux-amd64"
    binary.write_bytes(b"\x7fELF...")
    binary.chmod(0o750)
    os.utime(binary, (MTIME, MTIME))
    tree = tmp_path / "tree"
    tree.mkdir()
    made = unpack(binary, tree)
    assert (made.name, made.archive, made.files) == ("hello-linux-amd64", False, 1)
    assert os.listdir(tree) == ["hello-linux-amd64"]
    st_ = (tree / "hello-linux-amd64").stat()
    assert (stat.S_IMODE(st_.st_mode), st_.st_mtime) == (0o750, MTIME)


def test_the_name_tells_an_archive_a_pyz_is_one_file(tmp_path: Path) -> None:
    pyz = write_zip(tmp_path / "app.zip", [Member("__main__.py")]).rename(tmp_path / "app.pyz")
    tree = tmp_path / "tree"
    tree.mkdir()
    assert unpack(pyz, tree).archive is False
    assert os.listdir(tree) == ["app.pyz"]


def test_sha256_is_the_files(tmp_path: Path) -> None:
    import hashlib

    archive = write_tar(tmp_path / "app.tar.gz", [Member("a")])
    tree = tmp_path / "tree"
    tree.mkdir()
    assert unpack(archive, tree).sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()


# --- what is refused, and how it is said -------------------------------------------------

@pytest.mark.parametrize("members, said", [
    ([Member("/etc/cron.d/x")], "member '/etc/cron.d/x' is an absolute path"),
    ([Member("../x")], "member '../x' has '..' in its path"),
    ([Member("app/../../x")], "member 'app/../../x' has '..' in its path"),
    ([Member("app/../x")], "member 'app/../x' has '..' in its path"),
    ([Member("l", "symlink", target="previous/../..")], "member 'l' is a link leading outside the version"),
    ([Member("l", "symlink", target="/etc")], "member 'l' is a link to an absolute path, '/etc'"),
    ([Member("l", "symlink", target="../../x")], "member 'l' is a link leading outside the version"),
    ([Member("a", "symlink", target="b/.."), Member("b", "symlink", target=".")],
     "member 'a' is a link leading outside the version, to 'b/..'"),
    ([Member("l", "symlink", target="previous")], "member 'l' is a link into the version's own previous"),
    ([Member("dev", "chr")], "member 'dev' is a character device, not a file, directory or link"),
    ([Member("pipe", "fifo")], "member 'pipe' is a fifo, not a file, directory or link"),
    ([Member("bin/su", mode=0o4755)], "member 'bin/su' has the setuid bit"),
    ([Member("bin", "dir", mode=0o2755)], "member 'bin' has the setgid bit"),
    ([Member("./previous", "dir", 0o755)], "member './previous' would replace the version's own previous"),
    ([Member("next")], "member 'next' would replace the version's own next"),
    ([Member("plugbox.toml")], "member 'plugbox.toml' would replace the version's own plugbox.toml"),
    ([Member(".plugbox/record.json")], "member '.plugbox/record.json' would replace the version's own .plugbox"),
    ([Member("l", "symlink", target="sub"), Member("l/x")], "member 'l/x' lies under the link 'l'"),
    ([Member("a", data=b"1"), Member("a", data=b"2")], "member 'a' comes twice in the archive"),
])
@pytest.mark.parametrize("kind", [".tar.gz", "zip"])
def test_hostile_members_are_refused_by_name(kind: str, members: list[Member], said: str) -> None:
    refusal, _, beside = unpacked(kind, members)
    assert refusal is not None and said in refusal, refusal
    assert refusal.startswith(f"app{'.zip' if kind == 'zip' else '.tar.gz'}: member ")
    assert refusal.endswith("; build the artifact without it; nothing was sent")
    assert sorted(beside) == sorted([f"app{'.zip' if kind == 'zip' else '.tar.gz'}", "TREE", "outside",
                                     "sentinel"])


def test_a_hard_link_out_is_refused(tmp_path: Path) -> None:
    refusal, _, _ = unpacked(".tar", [Member("h", "hardlink", target="../x")])
    assert "member 'h' is a link leading outside the version, to '../x'" in refusal


@pytest.mark.parametrize("name", OWNED)
def test_a_single_file_named_as_plugbox_owns_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("x")
    (tmp_path / "tree").mkdir()
    with pytest.raises(Refused, match=f"artifact '{name}' would replace the version's own {name}"):
        unpack(tmp_path / name, tmp_path / "tree")


@pytest.mark.parametrize("bit, word", [(stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid")])
def test_a_single_file_with_setuid_or_setgid_is_refused(tmp_path: Path, bit: int, word: str) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"x")
    binary.chmod(0o755 | bit)
    if not binary.stat().st_mode & bit:
        pytest.fail(f"could not set the {word} bit here")
    (tmp_path / "tree").mkdir()
    with pytest.raises(Refused, match=f"has the {word} bit"):
        unpack(binary, tmp_path / "tree")


@pytest.mark.parametrize("name, text", [("app.tar.gz", "not a tar archive plug can read"),
                                        ("app.zip", "not a zip archive plug can read")])
def test_a_file_that_is_not_the_archive_its_name_says_is_refused(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text("just text\n")
    (tmp_path / "tree").mkdir()
    with pytest.raises(Refused, match=text):
        unpack(tmp_path / name, tmp_path / "tree")


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "app.tar.gz", [Member(f"f{i}", data=os.urandom(5000)) for i in range(5)])
    archive.write_bytes(archive.read_bytes()[:-3000])
    (tmp_path / "tree").mkdir()
    with pytest.raises(Refused, match="app.tar.gz"):
        unpack(archive, tmp_path / "tree")


# --- the rules over any names and targets (hypothesis) ------------------------------------

COMPONENTS = ["a", "b", "x.txt", "..", ".", "", *OWNED]
component_paths = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map("/".join)
# (A name of slashes alone is the top of the archive itself, which tar and zip both read as "".)
names = st.tuples(st.booleans(), component_paths).map(lambda t: ("/" if t[0] else "") + t[1]).filter(
    lambda name: name.strip("/") != "")
targets = st.one_of(names, st.just(""))
modes = st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o2755, 0o6755])


def refused_by_the_rules(m: Member) -> bool:
    """A single member, judged by the rules as written, in plain path arithmetic
    (not with the library calls the code makes)."""
    if m.name.startswith("/"):
        return True
    parts = [p for p in m.name.split("/") if p not in ("", ".")]
    if ".." in parts or (parts and parts[0] in OWNED):
        return True
    if m.mode & (stat.S_ISUID | stat.S_ISGID) or m.kind in ("fifo", "chr"):
        return True
    if m.kind == "dir":
        return False
    if m.name.split("/")[-1] in ("", "."):  # a file or link named as a directory
        return True
    if m.kind == "symlink":
        if m.target == "" or m.target.startswith("/"):
            return True
        at = parts[:-1]  # walk the target from the link's directory
        for part in m.target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not at:
                    return True  # above the version: out of it, wherever it goes next
                at.pop()
            else:
                if not at and part in LINKS:
                    return True  # the version's own previous or next: out of it, on the host
                at.append(part)
        return bool(at) and at[0] in OWNED
    return False


single = st.builds(Member, name=names, kind=st.sampled_from(["file", "dir", "symlink", "fifo", "chr"]),
                   mode=modes, target=targets)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(member=single, kind=st.sampled_from([".tar", "zip"]))
def test_one_member_is_refused_exactly_when_the_rules_say(member: Member, kind: str) -> None:
    if kind == "zip" and member.kind != "dir" and member.name.endswith("/"):
        return  # zip reads any name ending in / as a directory's
    refusal, tree, beside = unpacked(kind, [member])
    assert (refusal is not None) == refused_by_the_rules(member), (refusal, tree)
    if refusal is not None:  # named as the archive has it (tar drops a directory's last /)
        assert repr(member.name.rstrip("/") if member.kind == "dir" else member.name) in refusal
    assert sorted(beside) == sorted([f"app{'.zip' if kind == 'zip' else kind}", "TREE", "outside", "sentinel"])


many = st.lists(st.builds(Member, name=names, kind=st.sampled_from(["file", "dir", "symlink", "hardlink"]),
                          mode=st.sampled_from([0o644, 0o755]), target=targets), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=many, kind=st.sampled_from([".tar", "zip"]))
def test_what_is_not_refused_stays_inside_the_version(members: list[Member], kind: str) -> None:
    if kind == "zip":
        members = [m for m in members if m.kind != "hardlink"]  # zip has none
        if not members:
            return
    refusal, tree, beside = unpacked(kind, members)
    # Whatever the archive, nothing is written beside the tree.
    assert sorted(beside) == sorted([f"app{'.zip' if kind == 'zip' else kind}", "TREE", "outside", "sentinel"])
    if refusal is not None:
        return
    for path, entry in tree.items():
        assert path.split("/")[0] not in OWNED, (path, entry)
        assert entry[0] in ("file", "dir", "symlink"), (path, entry)
        if entry[0] == "symlink":
            leads = entry[2]  # through every other link of the tree
            assert leads != ".." and not leads.startswith("../"), (path, entry)
            assert leads.split("/")[0] not in OWNED, (path, entry)
        else:
            assert not entry[1] & (stat.S_ISUID | stat.S_ISGID), (path, entry)
