"""Naming a version by less than its name: a unique prefix, live, previous, live~N, a git revision.

The host resolves what a person typed, under its lock, in one pure function
(chain.resolve) that both of plugbox's doors use; an ambiguous or unknown name
is refused in one line that lists the matches, and nothing changes. The table
tests are pure; the others run plugbox as a person would, and plug with
host "local" (plug's own checks are in test_client_local.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIMEOUT, link, ok, refused, snapshot
from plugbox_server.chain import Chain, Links, resolve
from plugbox_server.errors import PlugboxError

A, B, C, D = "20261201T090000Z", "20261202T030000Z", "20261202T031500Z", "20261203T120000Z"
E = "20261203T120000Z.001"


def links(previous: str | None = None, next: str | None = None) -> Links:
    return Links(f"../{previous}" if previous else None, f"../{next}" if next else None)


# A <- B <- C <- D live; E made against D, pending.
CHAIN = Chain(versions={A: links(None, B), B: links(A, C), C: links(B, D), D: links(C), E: links(D)},
              live=D, home_live="deploy/live")
REVISIONS = {A: "3f9c2a1e0b", B: "8e41b07aa0", C: "8e41b07aa0", D: "8e41f00d11", E: None}


@pytest.mark.parametrize("spec, expected", [
    (A, A), (E, E),
    ("20261201", A), ("20261201T0", A), ("20261202T031", C), ("20261203T120000Z.0", E),
    ("live", D), ("live~0", D), ("previous", C), ("live~1", C), ("live~3", A),
])
def test_a_name_a_unique_prefix_or_a_relative_name_resolves(spec, expected):
    assert resolve(CHAIN, spec) == expected


@pytest.mark.parametrize("rev, expected", [("3f9c", A), ("3F9C2A1E", A), ("8e41f", D)])
def test_a_revision_resolves_to_the_one_version_deployed_from_it(rev, expected):
    assert resolve(CHAIN, rev=rev, revisions=REVISIONS) == expected


@pytest.mark.parametrize("spec, rev, message", [
    # a whole name means that version alone, never its .001 sibling
    ("20261203T110000Z", None, "no version 20261203T110000Z in deploy/; see `plugbox status`"),
    ("2025", None, "no version starts with 2025; see `plugbox status`"),
    ("20261202T03", None,
     f"20261202T03 is ambiguous: it starts {B}, {C}; give more of the name"),
    ("2026120", None, f"2026120 is ambiguous: it starts {A}, {B}, {C}, {D}, {E}; give more of the name"),
    ("20261203T120000Z", None, None),  # exact: not ambiguous with its .001 sibling
    ("live~4", None, f"live~4: the live version {D} has only 3 versions behind it; see `plugbox status`"),
    (None, "8e41b07", f"revision 8e41b07 is ambiguous: {B} (8e41b07aa0), {C} (8e41b07aa0) have it; "
                      "name the version instead"),
    (None, "8e41", f"revision 8e41 is ambiguous: {B} (8e41b07aa0), {C} (8e41b07aa0), {D} (8e41f00d11) have it; "
                   "name the version instead"),
    (None, "abcdef", "no version was deployed from a revision abcdef; see `plugbox status`"),
    ("live~", None, "'live~' is not a version name"),
    ("../x", None, "'../x' is not a version name"),
    (None, "xyz", "--rev 'xyz': a revision is 4 to 64 hexadecimal digits"),
])
def test_an_ambiguous_unknown_or_malformed_name_is_refused_in_one_line(spec, rev, message):
    if message is None:
        assert resolve(CHAIN, spec) == spec
        return
    with pytest.raises(PlugboxError) as caught:
        resolve(CHAIN, spec, rev, REVISIONS)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_relative_names_need_a_live_version():
    pending = Chain(versions={A: links()})
    for spec in ("live", "previous", "live~2"):
        with pytest.raises(PlugboxError) as caught:
            resolve(pending, spec)
        assert str(caught.value) == f"{spec}: there is no live version; see `plugbox status`"
    alone = Chain(versions={A: links()}, live=A)
    with pytest.raises(PlugboxError) as caught:
        resolve(alone, "previous")
    assert str(caught.value) == f"previous: the live version {A} has no version behind it; see `plugbox status`"


# --- plugbox, by hand -------------------------------------------------------------------

@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def laid_out(home: Path, names: list[str], live: str | None = None) -> None:
    """deploy/ as plugbox leaves it: each version made against the one before it (its
    previous), each but the last one's next pointing on, `live` live. Names chosen
    by the test, so that prefixes are shared as the test needs."""
    deploy = home / "deploy"
    deploy.mkdir(parents=True)
    for before, name in zip([None, *names], names):
        (deploy / name).mkdir()
        (deploy / name / "app.txt").write_text(name)
        if before:
            os.symlink(f"../{before}", deploy / name / "previous")
            os.symlink(f"../{name}", deploy / before / "next")
    if live:
        os.symlink(live, deploy / "live")
        os.symlink("deploy/live", home / "live")


def test_plugbox_commands_take_every_form(home):
    laid_out(home, [A, B, C], live=C)
    assert ok(home, "rollback-to", "live~2") == f"plugbox: live is now {A}\n"
    assert ok(home, "rollback-to", "20261202T0315") == f"plugbox: live is now {C}\n"
    assert ok(home, "rollback-to", "previous") == f"plugbox: live is now {B}\n"
    # The log names the version resolved, not what was typed.
    assert f"rollback-to {B}" in ok(home, "log")
    ok(home, "rollback-to", "20261202T031")
    (home / "deploy" / D).mkdir()
    os.symlink(f"../{C}", home / "deploy" / D / "previous")
    assert ok(home, "upgrade-to", "20261203") == f"plugbox: live is now {D}\n"
    assert ok(home, "check") == "ok\n"


def test_plugbox_remove_by_relative_name_and_prefix(home):
    laid_out(home, [A, B, C, D], live=D)
    ok(home, "remove", "-v", "live~3", "-v", "20261202T030")
    assert sorted(p.name for p in (home / "deploy").iterdir() if not p.name.startswith(".")) == [C, D, "live"]
    assert link(home, f"deploy/{C}/previous") is None
    assert refused(home, "remove", "-v", "live") == f"plugbox: {D} is live and cannot be removed; " \
                                                    "roll back or deploy first\n"


def test_an_ambiguous_or_unknown_name_changes_nothing_and_lists_the_matches(home):
    laid_out(home, [A, B, C, D], live=D)
    ambiguous = f"plugbox: 20261202T03 is ambiguous: it starts {B}, {C}; give more of the name\n"
    assert refused(home, "rollback-to", "20261202T03") == ambiguous
    assert refused(home, "remove", "-v", A, "-v", "20261202T03") == ambiguous
    assert refused(home, "verify", "20261202T03") == ambiguous
    assert refused(home, "rollback-to", "2025") == "plugbox: no version starts with 2025; see `plugbox status`\n"
    assert refused(home, "rollback-to", "live~9") == \
        f"plugbox: live~9: the live version {D} has only 3 versions behind it; see `plugbox status`\n"
    assert refused(home, "rollback-to", "--rev", "abcd") == \
        "plugbox: no version was deployed from a revision abcd; see `plugbox status`\n"


# --- plug, with host "local" and a git checkout ---------------------------------------------

def plug(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    done = subprocess.run([sys.executable, "-m", "plugbox_client", *args], cwd=project, env=environ,
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done
    return done


def git(project: Path, *args: str) -> str:
    environ = {**os.environ, "GIT_AUTHOR_NAME": "ada", "GIT_AUTHOR_EMAIL": "ada@example.org",
               "GIT_COMMITTER_NAME": "ada", "GIT_COMMITTER_EMAIL": "ada@example.org"}
    return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True, text=True,
                          env=environ, timeout=TIMEOUT).stdout.strip()


@pytest.fixture
def project(tmp_path, home) -> Path:
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "main.py").write_text("print('one')\n")
    (project / "plugbox.toml").write_text(
        f'[service]\nhost = "local"\nhome = "{home}"\n[build]\nupload = ["app"]\n')
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "one")
    return project


def live(home: Path) -> str:
    return os.readlink(home / "deploy" / "live")


def test_plug_rolls_back_by_revision_prefix_and_live_n(project, home):
    plug(project, "deploy")
    one, first = git(project, "rev-parse", "HEAD"), live(home)
    (project / "app" / "main.py").write_text("print('two')\n")
    git(project, "commit", "-qam", "two")
    plug(project, "deploy")
    second = live(home)
    (project / "app" / "main.py").write_text("print('three')\n")
    git(project, "commit", "-qam", "three")
    plug(project, "deploy")
    third = live(home)

    assert plug(project, "rollback", "--rev", one[:7]).stdout.startswith(f"version {first} is live")
    assert live(home) == first
    plug(project, "rollback", third[:-1] if third.endswith("Z") else third)
    assert live(home) == third
    plug(project, "rollback", "live~1")
    assert live(home) == second
    assert plug(project, "verify", "--rev", one[:9]).stdout.startswith(f"{first}: as uploaded")

    before = snapshot(home)
    refused_run = plug(project, "rollback", "--rev", "0000000", check=False)
    assert (refused_run.returncode, refused_run.stderr) == (
        1, "plugbox: no version was deployed from a revision 0000000; see `plug status`\n")
    both = plug(project, "rollback", "--rev", one[:7], first, check=False)
    assert (both.returncode, both.stderr) == (2, "plug: give VERSION or --rev, not both\n")
    bad = plug(project, "rollback", "--rev", "no-such", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("plug: --rev 'no-such': a revision is 4 to 64")
    assert snapshot(home) == before
