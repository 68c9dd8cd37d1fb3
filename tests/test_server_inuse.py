"""remove and prune never delete a version that a running process uses.

Real processes (`sleep`), real directories: /proc is what plugbox reads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import deploy, link, new_version, ok, refused


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "srv" / "svc"
    home.mkdir(parents=True)
    return home


@pytest.fixture
def start():
    """Start a process for the test; every one is killed at its end."""
    started: list[subprocess.Popen] = []

    def run(argv, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, stdin=kwargs.pop("stdin", subprocess.DEVNULL), **kwargs)
        started.append(process)
        return process

    yield run
    for process in started:
        process.kill()
        process.wait(timeout=10)


def test_remove_refuses_a_version_that_is_the_working_directory_of_a_process(home, start):
    old = deploy(home)
    deploy(home)
    sleeper = start(["sleep", "600"], cwd=home / "deploy" / old)
    line = refused(home, "remove", "-v", old)
    assert line == (f"plugbox: {old} is in use by pid {sleeper.pid} (sleep 600); "
                    "stop it first; nothing was removed\n")
    sleeper.kill()
    sleeper.wait(timeout=10)
    assert ok(home, "remove", "-v", old) == f"plugbox: removed {old}\n"


def test_remove_refuses_a_version_whose_executable_runs(home, start, tmp_path):
    old = deploy(home)
    deploy(home)
    copied = home / "deploy" / old / "bin" / "sleep"
    copied.parent.mkdir()
    shutil.copy2(shutil.which("sleep"), copied)
    sleeper = start([str(copied), "600"], cwd=tmp_path)
    line = refused(home, "remove", "-v", old)
    assert f"{old} is in use by pid {sleeper.pid} ({copied} 600)" in line


def test_remove_refuses_a_version_with_a_file_held_open(home, start, tmp_path):
    old = deploy(home, {"data.txt": "data\n"})
    deploy(home)
    with open(home / "deploy" / old / "data.txt") as held:
        sleeper = start(["sleep", "600"], cwd=tmp_path, stdin=held)
    assert f"in use by pid {sleeper.pid} (sleep 600)" in refused(home, "remove", "-v", old)


def test_remove_of_several_with_one_in_use_removes_none(home, start):
    first = deploy(home)
    second = deploy(home)
    deploy(home)
    start(["sleep", "600"], cwd=home / "deploy" / second)
    assert f"{second} is in use" in refused(home, "remove", "-v", first, "-v", second)


def test_prune_skips_a_version_in_use_and_says_so(home, start):
    first = deploy(home)
    second = deploy(home)
    third = deploy(home)
    fourth = deploy(home)
    sleeper = start(["sleep", "600"], cwd=home / "deploy" / first / ".")
    # The oldest is in use: the next oldest goes in its place.
    assert ok(home, "prune", "--keep", "3") == (
        f"plugbox: kept {first}: in use by pid {sleeper.pid} (sleep 600)\n"
        f"plugbox: removed {second}\n")
    assert (home / "deploy" / first).is_dir()
    assert link(home, f"deploy/{third}/previous") == f"../{first}"
    assert link(home, "deploy/live") == fourth
    assert ok(home, "check") == "ok\n"


def test_a_process_started_through_live_uses_the_version_live_was_then(home, start):
    old = deploy(home)
    start(["sleep", "600"], cwd=home / "live")   # the kernel resolves the link
    deploy(home)
    assert f"{old} is in use" in refused(home, "remove", "-v", old)


def test_a_pending_version_in_use_is_kept_too(home, start):
    deploy(home)
    deploy(home)
    pending = new_version(home)
    start(["sleep", "600"], cwd=home / "deploy" / pending)
    assert ok(home, "prune", "--keep", "2").startswith(f"plugbox: kept {pending}: in use by pid ")
    assert (home / "deploy" / pending).is_dir()
