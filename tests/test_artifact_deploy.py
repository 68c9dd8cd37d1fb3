"""Deploying an artifact: `plug deploy --artifact FILE` and `[build] artifact`, end to end.

The installed `plug`, the real ssh and rsync, the test sshd (`plugbox-test`, see
conftest.py), real archives made with tar(1) and zipfile; what a user sees: the
exit status, the lines, `plug status`, and the versions on the host. A pair of
hosts of this module's own (two sshd, each session with a HOME of its own) shows
several hosts. The host's decision that the live version has the artifact already
is also tested in-process, on operations.deploy, which every door calls.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers import (INSTALLED_BIN, PLUG, SYSTEM_PATH, TIMEOUT, Plug, live, ok, one_line_error, snapshot,
                     start_or_fail, summary, versions, wait_for, write_app)
from sshd import Sshd, write_client_config

from plugbox_server import operations


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inode(path: Path) -> int:
    return path.stat().st_ino


def tar_czf(archive: Path, directory: Path, *options: str) -> Path:
    """`tar -czf ARCHIVE -C DIR .`, as a build would make it."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", *options, "-czf", str(archive), "-C", str(directory), "."], check=True)
    return archive


def whole(home: Path) -> dict:
    """Everything in the home, the log and the lock of deploy/ included."""
    found = snapshot(home)
    for name in (".log", ".lock"):
        path = home / "deploy" / name
        found[f"deploy/{name}"] = path.read_bytes() if path.exists() else None
    return found


def write_project(project: Path, home: Path | None, build: str = "", service: str = "",
                  host: str = "plugbox-test") -> None:
    """plugbox.toml alone, as a CI job has it: where the service runs, and maybe [build]."""
    project.mkdir(parents=True, exist_ok=True)
    lines = ["[service]", f'host = "{host}"'] + ([f'home = "{home}"'] if home else []) + [service]
    if build:
        lines += ["[build]", build]
    (project / "plugbox.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def ci(tmp_path: Path, service_home: Path, ssh_config: Path) -> Plug:
    """A CI job's directory: plugbox.toml with no [build]; the build is in tmp_path/build."""
    write_project(tmp_path / "ci", service_home)
    build = tmp_path / "build"
    write_app(build, {"app/main.py": "print('one')\n", "app/util.py": "X = 1\n", "index.html": "<p>hi</p>\n"})
    (build / "bin").mkdir()
    (build / "bin" / "run").write_text("#!/bin/sh\nexec python3 app/main.py\n")
    (build / "bin" / "run").chmod(0o755)
    return Plug(tmp_path / "ci", ssh_config)


# --- the host decides: operations.deploy -------------------------------------------------

def filling(files: dict[str, str]):
    def upload(name: str, staging: Path, live: str | None) -> None:
        for relative, text in files.items():
            (staging / relative).write_text(text)
    return upload


def test_the_host_makes_nothing_when_live_has_the_artifact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    origin = {"user": "ci", "artifact": "app.tar.gz", "artifact_sha256": "ab" * 32}
    first, _ = operations.deploy(home, filling({"a.txt": "1"}), origin=origin)

    def never(*_):
        raise AssertionError("nothing is uploaded when live has the artifact")

    assert operations.deploy(home, never, origin=origin) == (None, first)
    assert versions(home) == [first]
    log = ok(home, "log")
    assert "deploy app.tar.gz: live already" in log.splitlines()[-1]
    forced, was = operations.deploy(home, filling({"a.txt": "1"}), origin=origin, force=True)
    assert (was, versions(home)) == (first, [first, forced])
    other, _ = operations.deploy(home, filling({"a.txt": "2"}), origin={**origin, "artifact_sha256": "cd" * 32})
    assert live(home) == other
    # A tree (no sha256) always makes a version.
    tree, _ = operations.deploy(home, filling({"a.txt": "2"}), origin={"user": "ci"})
    assert live(home) == tree


def test_plugbox_status_shows_the_artifact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    operations.deploy(home, filling({"a.txt": "1"}), origin={"user": "ci"})
    operations.deploy(home, filling({"a.txt": "2"}),
                      origin={"user": "ci", "artifact": "app.tar.gz", "artifact_sha256": "3f9c" * 16})
    lines = ok(home, "status").splitlines()
    assert "app.tar.gz sha256:3f9c3f9c3f9c" in lines[0]
    assert lines[1].split()[:2][1] == "previous" and " - " in lines[1]
    record = json.loads(ok(home, "status", "--json"))["versions"][0]["record"]
    assert (record["artifact"], record["artifact_sha256"]) == ("app.tar.gz", "3f9c" * 16)


# --- one host, over ssh ------------------------------------------------------------------

def test_ci_deploys_a_tarball_from_a_directory_holding_only_plugbox_toml(
        ci: Plug, tmp_path: Path, service_home: Path) -> None:
    archive = tar_czf(tmp_path / "dist" / "app.tar.gz", tmp_path / "build")

    run = ci.ok("deploy", "--artifact", str(archive), "-m", "release 1")

    name = summary(run).split()[1]
    assert summary(run) == f"version {name} is live (first deploy)"
    assert f"==> artifact app.tar.gz: 4 files, sha256 {sha256(archive)}" in run.err
    tree = service_home / "deploy" / name
    assert sorted(os.listdir(tree)) == ["app", "bin", "index.html", "plugbox.toml"]
    assert (tree / "app" / "main.py").read_text() == "print('one')\n"
    assert stat.S_IMODE((tree / "bin" / "run").stat().st_mode) == 0o755
    assert (tree / "plugbox.toml").read_text() == (ci.project / "plugbox.toml").read_text()
    # The record keeps its name and sha256; status shows them.
    record = json.loads(ci.ok("status", "--json").out)["versions"][0]["record"]
    assert (record["artifact"], record["artifact_sha256"], record["message"]) == \
        ("app.tar.gz", sha256(archive), "release 1")
    line = ci.ok("status").out.splitlines()[0]
    assert line.startswith(f"{name}  live") and f"app.tar.gz sha256:{sha256(archive)[:12]}" in line


# tar keeps whole seconds: the same-size edit below is made in the second of the
# first build; a reproducible build gives every member one fixed time.
@pytest.mark.parametrize("options", [(), ("--mtime=@1700000000",)], ids=["as built", "reproducible"])
def test_a_rebuilt_archive_sends_the_changed_member_alone(
        ci: Plug, tmp_path: Path, service_home: Path, options: tuple[str, ...]) -> None:
    build = tmp_path / "build"
    first = summary(ci.ok("deploy", "--artifact", str(tar_czf(tmp_path / "app.tar.gz", build, *options)))).split()[1]
    (build / "app" / "main.py").write_text("print('two')\n")  # one member changes; the rest keep their mtimes

    run = ci.ok("deploy", "--artifact", str(tar_czf(tmp_path / "app.tar.gz", build, *options)))

    second = summary(run).split()[1]
    assert "files: 1 file sent (13 bytes), 3 hard-linked" in run.out
    old, new = service_home / "deploy" / first, service_home / "deploy" / second
    for same in ("app/util.py", "index.html", "bin/run"):
        assert inode(new / same) == inode(old / same), same
    assert inode(new / "app" / "main.py") != inode(old / "app" / "main.py")
    assert (new / "app" / "main.py").read_text() == "print('two')\n"
    assert (old / "app" / "main.py").read_text() == "print('one')\n"


def test_the_same_artifact_again_makes_no_version_unless_forced(
        ci: Plug, tmp_path: Path, service_home: Path) -> None:
    archive = tar_czf(tmp_path / "app.tar.gz", tmp_path / "build")
    first = summary(ci.ok("deploy", "--artifact", str(archive))).split()[1]
    before = snapshot(service_home)

    again = ci.ok("deploy", "--artifact", str(archive))

    assert again.out == (f"nothing to deploy: live version {first} has app.tar.gz "
                         f"(sha256 {sha256(archive)[:12]}) already; --force deploys it again\n")
    assert versions(service_home) == [first]
    assert snapshot(service_home) == before  # but the lock it took and the log it wrote
    assert "deploy app.tar.gz: live already" in ci.ok("log").out.splitlines()[-1]
    dry = ci.ok("deploy", "-n", "--artifact", str(archive))
    assert f"nothing to deploy: live version {first} has app.tar.gz" in dry.out

    forced = ci.ok("deploy", "--artifact", str(archive), "--force")

    second = summary(forced).split()[1]
    assert summary(forced) == f"version {second} is live (was {first})"
    assert "files: 0 files sent (0 bytes), 4 hard-linked" in forced.out


def test_an_environment_change_keeps_the_artifact_it_was_made_from(
        ci: Plug, tmp_path: Path, service_home: Path) -> None:
    archive = tar_czf(tmp_path / "app.tar.gz", tmp_path / "build")
    ci.ok("deploy", "--artifact", str(archive))
    changed = subprocess.run([str(PLUG), "env", "set", "KEY"], input="x\n", cwd=ci.project, env=ci.environ(),
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert changed.returncode == 0, changed.stderr
    with_env = live(service_home)
    record = json.loads((service_home / "deploy" / ".plugbox" / with_env / "record.json").read_text())
    assert (record["artifact"], record["artifact_sha256"]) == ("app.tar.gz", sha256(archive))

    again = ci.ok("deploy", "--artifact", str(archive))

    assert again.out.startswith(f"nothing to deploy: live version {with_env} has app.tar.gz")


def test_an_artifact_that_is_no_file_is_refused_before_connecting(ci: Plug, sshd: Sshd, tmp_path: Path) -> None:
    before = sshd.logins()
    for missing in (tmp_path / "nope.tar.gz", tmp_path):
        run = ci("deploy", "--artifact", str(missing))
        assert run.code == 2
        assert one_line_error(run) == (f"plug: --artifact {missing}: no such file; name the file the build "
                                       "made; nothing was done")
    assert sshd.logins() == before


def test_build_artifact_is_made_by_prepare(tmp_path: Path, service_home: Path, ssh_config: Path) -> None:
    project = tmp_path / "project"
    write_app(project, {"src/app.py": "print('built')\n"})
    write_project(project, service_home, build='prepare = ["mkdir -p dist", "tar -czf dist/app.tgz -C src ."]\n'
                                              'artifact = "dist/app.tgz"')
    plug = Plug(project, ssh_config)

    name = summary(plug.ok("deploy")).split()[1]

    assert (service_home / "deploy" / name / "app.py").read_text() == "print('built')\n"
    record = json.loads(plug.ok("status", "--json").out)["versions"][0]["record"]
    assert (record["artifact"], record["artifact_sha256"]) == ("app.tgz", sha256(project / "dist" / "app.tgz"))


def test_the_artifact_given_wins_over_build_and_prepare_is_not_run(
        tmp_path: Path, service_home: Path, ssh_config: Path) -> None:
    project = tmp_path / "project"
    write_app(project, {"app/tree.txt": "from the tree\n"})
    write_project(project, service_home, build='prepare = ["touch prepared"]\nupload = ["app"]')
    write_app(tmp_path / "built", {"artifact.txt": "from the artifact\n"})
    archive = tar_czf(tmp_path / "app.tar.gz", tmp_path / "built")

    name = summary(Plug(project, ssh_config).ok("deploy", "--artifact", str(archive))).split()[1]

    assert sorted(os.listdir(service_home / "deploy" / name)) == ["artifact.txt", "plugbox.toml"]
    assert not (project / "prepared").exists()


def test_a_zip_and_a_single_file(tmp_path: Path, service_home: Path, ci: Plug) -> None:
    archive = tmp_path / "site.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("bin/serve", (2026, 11, 22, 8, 0, 0))
        info.create_system, info.external_attr = 3, (stat.S_IFREG | 0o755) << 16
        z.writestr(info, "#!/bin/sh\n")
        z.writestr("index.html", "<p>zip</p>\n")
    name = summary(ci.ok("deploy", "--artifact", str(archive))).split()[1]
    tree = service_home / "deploy" / name
    assert (tree / "index.html").read_text() == "<p>zip</p>\n"
    assert stat.S_IMODE((tree / "bin" / "serve").stat().st_mode) == 0o755

    binary = tmp_path / "hello.pyz"
    binary.write_bytes(b"#!/usr/bin/env python3\nPK...")
    binary.chmod(0o750)
    name = summary(ci.ok("deploy", "--artifact", str(binary))).split()[1]
    tree = service_home / "deploy" / name
    assert sorted(os.listdir(tree)) == ["hello.pyz", "plugbox.toml", "previous"]
    assert stat.S_IMODE((tree / "hello.pyz").stat().st_mode) == 0o750
    assert (tree / "hello.pyz").read_bytes() == binary.read_bytes()


def test_dry_run_lists_what_would_be_sent(ci: Plug, tmp_path: Path, service_home: Path) -> None:
    build = tmp_path / "build"
    archive = tar_czf(tmp_path / "app.tar.gz", build)
    first = ci.ok("deploy", "-n", "--artifact", str(archive))
    assert "no live version: it would be the first deploy" in first.out
    assert "files: would send 4" in first.out
    assert {"  app/main.py", "  app/util.py", "  bin/run", "  index.html"} <= set(first.out.splitlines())
    assert versions(service_home) == []
    ci.ok("deploy", "--artifact", str(archive))
    (build / "index.html").write_text("<p>changed</p>\n")
    archive = tar_czf(tmp_path / "app.tar.gz", build)
    before = whole(service_home)

    run = ci.ok("deploy", "--dry-run", "--artifact", str(archive))

    lines = run.out.splitlines()
    assert lines[1] == f"artifact app.tar.gz: 4 files, sha256 {sha256(archive)}"
    assert "files: would send 1 (15 bytes), hard-link 3" in lines
    assert "  index.html" in lines and "  app/main.py" not in lines
    assert lines[-1] == "dry run: nothing changed"
    assert whole(service_home) == before


def test_a_killed_plug_leaves_no_unpacked_tree_behind(
        ci: Plug, tmp_path: Path, service_home: Path) -> None:
    # post_upload waits (at most 30 s) for HOME/go: plug is killed meanwhile, its tree unpacked.
    (ci.project / "plugbox.toml").write_text((ci.project / "plugbox.toml").read_text() + (
        '[hooks]\npost_upload = [\'touch "$PLUGBOX_HOME/waiting"; i=0; '
        'while [ ! -e "$PLUGBOX_HOME/go" ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done\']\n'))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    archive = tar_czf(tmp_path / "app.tar.gz", tmp_path / "build")
    plug = subprocess.Popen([str(PLUG), "deploy", "--artifact", str(archive)], cwd=ci.project,
                            env={**os.environ, "PLUG_SSH_CONFIG": str(ci.ssh_config), "TMPDIR": str(scratch)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (service_home / "waiting").exists(), "post_upload to start")
        assert [p.name for p in scratch.iterdir() if p.name.startswith("plug-")], "no scratch directory"
        plug.kill()
        plug.wait(TIMEOUT)
        wait_for(lambda: not [p for p in scratch.iterdir() if p.name.startswith("plug-")],
                 lambda: f"the scratch directory to go: {sorted(os.listdir(scratch))}", seconds=5)
    finally:
        plug.kill()
        (service_home / "go").touch()
    wait_for(lambda: live(service_home) is not None, "the host to finish the deploy by itself")


# --- hostile archives: refused before anything is sent ----------------------------------

def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.size = kind, mode, target, 2 if kind == tarfile.REGTYPE else 0
    return info


HOSTILE = {
    "absolute path": (member("/tmp/plugbox-owned"), "member '/tmp/plugbox-owned' is an absolute path"),
    "dot-dot": (member("../../escaped"), "member '../../escaped' has '..' in its path"),
    "absolute link": (member("etc", tarfile.SYMTYPE, target="/etc"), "member 'etc' is a link to an absolute path"),
    "link out": (member("up", tarfile.SYMTYPE, target="../.."), "member 'up' is a link leading outside the version"),
    "device": (member("null", tarfile.CHRTYPE), "member 'null' is a character device"),
    "fifo": (member("pipe", tarfile.FIFOTYPE), "member 'pipe' is a fifo"),
    "setuid": (member("bin/tool", mode=0o4755), "member 'bin/tool' has the setuid bit"),
    "setgid": (member("bin/tool", mode=0o2755), "member 'bin/tool' has the setgid bit"),
    "previous": (member("previous", tarfile.SYMTYPE, target="/"), "member 'previous' would replace the version's own previous"),
    "next": (member("next/x"), "member 'next/x' would replace the version's own next"),
    "plugbox.toml": (member("plugbox.toml"), "member 'plugbox.toml' would replace the version's own plugbox.toml"),
    ".plugbox": (member(".plugbox/record.json"), "member '.plugbox/record.json' would replace the version's own .plugbox"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_archive_is_refused_and_the_host_is_unchanged(
        ci: Plug, tmp_path: Path, service_home: Path, kind: str) -> None:
    first = summary(ci.ok("deploy", "--artifact", str(tar_czf(tmp_path / "good.tar.gz", tmp_path / "build"))))
    bad, said = HOSTILE[kind]
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.addfile(member("ok.txt"), io.BytesIO(b"ok"))
        t.addfile(bad, io.BytesIO(b"x\n") if bad.isreg() else None)
    before = whole(service_home)

    run = ci("deploy", "--artifact", str(archive))

    assert run.code == 1
    assert one_line_error(run) == f"plug: bad.tar.gz: {said}" + one_line_error(run).split(said, 1)[1]
    assert one_line_error(run).endswith("; build the artifact without it; nothing was sent")
    assert run.out == ""
    assert whole(service_home) == before, "the host changed"  # not even its log: it was asked nothing
    assert live(service_home) == first.split()[1]
    assert not Path("/tmp/plugbox-owned").exists()


# --- several hosts -----------------------------------------------------------------------

PAIR = ("pair-a", "pair-b")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, user_key: Path):
    """Two hosts where plugbox is installed, each session with a HOME of its own
    (the service's home): (ssh config, {alias: home})."""
    root = tmp_path_factory.mktemp("pair")
    servers, homes = {}, {}
    try:
        for alias in PAIR:
            homes[alias] = root / f"{alias}-home"
            homes[alias].mkdir()
            servers[alias] = start_or_fail(Sshd(root / f"{alias}-sshd", Path(f"{user_key}.pub"), env={
                "HOME": str(homes[alias]), "PATH": f"{INSTALLED_BIN}:{SYSTEM_PATH}"}))
        yield write_client_config(root / "ssh_config", servers, user_key, root / "known_hosts"), homes
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def pair_plug(pair, tmp_path: Path) -> tuple[Plug, dict[str, Path]]:
    config, homes = pair
    for home in homes.values():
        subprocess.run(["rm", "-rf", str(home / "deploy"), str(home / "shared")], check=True)
    project = tmp_path / "ci"
    project.mkdir()
    (project / "plugbox.toml").write_text(
        f'[service]\nhosts = {json.dumps(list(PAIR))}\n\n[stages.a]\nhost = "pair-a"\n')
    write_app(tmp_path / "build", {"app.py": "print('one')\n", "lib.py": "X = 1\n"})
    return Plug(project, config), homes


def test_several_hosts_get_the_artifact_under_one_name_and_skip_it_where_live(
        pair_plug, tmp_path: Path) -> None:
    plug, homes = pair_plug
    archive = tar_czf(tmp_path / "app.tar.gz", tmp_path / "build")
    only_a = summary(plug.ok("-s", "a", "deploy", "--artifact", str(archive))).split()[1]
    assert (live(homes["pair-a"]), live(homes["pair-b"])) == (only_a, None)

    run = plug.ok("deploy", "--artifact", str(archive))

    name = live(homes["pair-b"])  # named after pair-b's newest alone: it may be only_a's name too
    assert live(homes["pair-a"]) == only_a and name is not None and versions(homes["pair-a"]) == [only_a]
    assert f"pair-a: ==> nothing to deploy: live version {only_a} has app.tar.gz" in run.err
    rows = {line.split()[0]: line.split() for line in run.out.splitlines() if line.startswith("pair-")}
    assert rows["pair-a"][1:5] == [only_a, "nothing", "to", "deploy"]
    assert rows["pair-b"][1:3] == [name, "switched"]
    assert f"version {name} is live on 1 hosts; nothing to deploy on pair-a" in run.out

    (tmp_path / "build" / "app.py").write_text("print('two')\n")
    changed = tar_czf(tmp_path / "app.tar.gz", tmp_path / "build")
    dry = plug.ok("deploy", "-n", "--artifact", str(changed))
    for alias in PAIR:
        assert f"{alias}: files: would send 1 (13 bytes), hard-link 1" in dry.out
        assert f"{alias}:   app.py" in dry.out
    run = plug.ok("deploy", "--artifact", str(changed))
    name = live(homes["pair-a"])
    assert live(homes["pair-b"]) == name and f"version {name} is live on 2 hosts" in run.out

    again = plug.ok("deploy", "--artifact", str(changed))
    assert again.out.splitlines()[-1] == (f"nothing to deploy: every host has app.tar.gz "
                                          f"(sha256 {sha256(changed)[:12]}) live already; --force deploys it again")
    assert (live(homes["pair-a"]), live(homes["pair-b"])) == (name, name)
