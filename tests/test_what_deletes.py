"""prune and remove: --dry-run says what would go and what stays and why, and changes
nothing; on a terminal, both ask before deleting more than one version (--yes: they
do not); without a terminal they never ask.

plugbox by hand, in-process and on a pty; plug with host "local" on a pty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PLUG, TIMEOUT, deploy, link, ok, plugbox, snapshot
from plugbox_host import PLUGBOX
from terminal import on_terminal


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def names(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "deploy").iterdir() if p.name[:1].isdigit())


def five(home: Path) -> list[str]:
    """Five versions: the fourth live, its previous the third; the fifth made, never live."""
    made = [deploy(home) for _ in range(4)]
    made.append(ok(home, "next-version").strip())
    return made


def test_prune_dry_run_lists_what_goes_and_what_stays_and_changes_nothing(home):
    first, second, third, fourth, fifth = five(home)
    before = snapshot(home)
    out = ok(home, "prune", "--keep", "2", "--dry-run")
    assert out.splitlines() == [
        f"would remove {fifth}  pending",
        f"keep         {fourth}  live",
        f"keep         {third}  live's previous",
        f"would remove {second}  previous",
        f"would remove {first}  previous",
        "dry run: nothing removed (3 versions would go, 2 would stay)",
    ]
    assert snapshot(home) == before
    # The plan is what prune then does.
    ok(home, "prune", "--keep", "2")
    assert names(home) == [third, fourth]


def test_prune_dry_run_says_a_version_in_use_stays(home):
    first, second, third = deploy(home), deploy(home), deploy(home)
    # A process with its working directory in the first version uses it.
    process = subprocess.Popen(["sleep", "60"], cwd=home / "deploy" / first)
    try:
        out = ok(home, "prune", "--keep", "2", "--dry-run")
        assert f"keep         {first}  in use by pid {process.pid} (sleep" in out
        assert "would remove" not in out
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)


def test_remove_dry_run_lists_what_goes_and_changes_nothing(home):
    first, second, third = deploy(home), deploy(home), deploy(home)
    before = snapshot(home)
    assert ok(home, "remove", "-v", first, "-v", "previous", "--dry-run").splitlines() == [
        f"would remove {second}  previous",
        f"would remove {first}  previous",
        "dry run: nothing removed",
    ]
    # What the real remove would refuse, the dry run refuses the same way.
    ran = plugbox(home, "remove", "-v", first, "-v", "live", "--dry-run")
    assert (ran.exit_code, ran.stderr) == (1, f"plugbox: {third} is live and cannot be removed; "
                                              "roll back or deploy first\n")
    assert snapshot(home) == before


# --- the question, on a terminal ----------------------------------------------------------------

def plugbox_on_terminal(home: Path, *args: str, typed: str = ""):
    environ = {**os.environ, "PLUGBOX_HOME": str(home)}
    return on_terminal([PLUGBOX, *args], typed, env=environ, cwd=home)


def test_plugbox_prune_asks_on_a_terminal_before_removing_more_than_one(home):
    first, second, third, fourth, fifth = five(home)
    before = snapshot(home)
    said = plugbox_on_terminal(home, "prune", "--keep", "2", typed="n\n")
    assert said.code == 1
    assert f"would remove {first}  previous" in said.shown and f"keep         {fourth}  live" in said.shown
    assert "remove 3 versions? [y/N] " in said.shown
    assert "plugbox: called off; nothing removed" in said.shown
    assert snapshot(home) == before
    said = plugbox_on_terminal(home, "prune", "--keep", "2", typed="y\n")
    assert said.code == 0, said.shown
    assert names(home) == [third, fourth]
    # One version to go: no question.
    deploy(home)
    said = plugbox_on_terminal(home, "prune", "--keep", "2")
    assert said.code == 0 and "[y/N]" not in said.shown
    assert names(home) == sorted([fourth, link(home, "deploy/live")])


def test_plugbox_remove_with_yes_or_without_a_terminal_does_not_ask(home):
    first, second, third, fourth, fifth = five(home)
    said = plugbox_on_terminal(home, "remove", "-v", first, "-v", second, "--yes")
    assert said.code == 0 and "[y/N]" not in said.shown
    ok(home, "remove", "-v", third, "-v", fifth)  # stdin not a terminal
    assert names(home) == [fourth]


def plug_on_terminal(project: Path, *args: str, typed: str = ""):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    return on_terminal([str(PLUG), *args], typed, env=environ, cwd=project)


@pytest.fixture
def project(tmp_path, home) -> Path:
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "main.py").write_text("print('hello')\n")
    (project / "plugbox.toml").write_text(
        f'[service]\nhost = "local"\nhome = "{home}"\n[build]\nupload = ["app"]\n')
    return project


def plug(project: Path, *args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    return subprocess.run([str(PLUG), *args], cwd=project, env=environ, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def test_plug_prune_and_remove_dry_run_change_nothing(project, home):
    made = []
    for _ in range(4):
        assert plug(project, "deploy").returncode == 0
        made.append(link(home, "deploy/live"))
    before = snapshot(home)
    run = plug(project, "prune", "--keep", "1", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"keep         {made[3]}  live",
        f"keep         {made[2]}  live's previous",
        f"would remove {made[1]}  previous",
        f"would remove {made[0]}  previous",
        "dry run: nothing removed (2 versions would go, 2 would stay)",
    ]
    run = plug(project, "remove", "-n", "live~3", made[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"would remove {made[1]}  previous", f"would remove {made[0]}  previous",
                                       "dry run: nothing removed"]
    assert snapshot(home) == before


def test_plug_asks_on_a_terminal_before_removing_more_than_one(project, home):
    made = []
    for _ in range(4):
        assert plug(project, "deploy").returncode == 0
        made.append(link(home, "deploy/live"))
    before = snapshot(home)

    said = plug_on_terminal(project, "prune", "--keep", "1", typed="no\n")
    assert said.code == 1, said.shown
    assert f"would remove {made[0]}  previous" in said.shown and "remove 2 versions? [y/N] " in said.shown
    assert said.shown.rstrip().endswith("plug: called off; nothing was removed")
    assert snapshot(home) == before

    said = plug_on_terminal(project, "remove", made[0], made[1], typed="y\n")
    assert said.code == 0, said.shown
    assert "remove 2 versions? [y/N] " in said.shown
    assert names(home) == sorted(made[2:])

    said = plug_on_terminal(project, "remove", "previous", "--yes")
    assert said.code == 0 and "[y/N]" not in said.shown
    assert names(home) == [made[3]]
