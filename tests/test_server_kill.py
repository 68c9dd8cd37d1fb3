"""`plugbox` killed with SIGKILL at every step of every command, then repaired and used again.

Two ways to die, both the real process dying:
- in a hook: a hook line that kills its parent, plugbox (`kill -9 $PPID`; the
  line runs under /bin/sh -c, whose parent is plugbox), armed by a file in the
  test's control directory and disarmed as it fires;
- between hooks: `DYING` runs plugbox's own main() after wrapping the calls that
  write to the disk (mkdir, symlink, rename, replace, unlink, rmdir: what the
  store and the shared links use; a whole shutil.rmtree counts as one, except
  where a case asks to be killed between the deletions inside it too) so that
  the process SIGKILLs itself just before the Nth of them. A first run counts
  the calls; then every N from 1 to that count gets its own kill, each on a
  fresh copy of the same home.

After each kill: HOME/live still resolves to a complete version (every version
the test uploads holds a MARKER file), `plugbox check --repair` brings back the
invariants, `plugbox check` says ok, no version is gone but those being
removed, and a new deploy (next-version, upgrade-to) works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import TIMEOUT
from plugbox_host import Host as BaseHost
from plugbox_server.names import is_version_name

KILLED = -9

DYING = r"""
import atexit, os, shutil, signal, sys
from plugbox_server.cli import main

kill_at = int(os.environ["PLUGBOX_TEST_KILL_AT"])  # 0: never, only count
inside_rmtree = os.environ["PLUGBOX_TEST_INSIDE_RMTREE"] == "1"
calls = 0
quiet = False

def dying(write):
    def wrapper(*args, **kwargs):
        global calls
        if not quiet:
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return write(*args, **kwargs)
    return wrapper

for name in ("mkdir", "symlink", "rename", "replace", "unlink", "rmdir"):
    setattr(os, name, dying(getattr(os, name)))

def rmtree_as_one_write(rmtree):
    def wrapper(*args, **kwargs):
        global quiet
        dying(lambda: None)()
        quiet = True
        try:
            return rmtree(*args, **kwargs)
        finally:
            quiet = False
    return wrapper

if not inside_rmtree:
    shutil.rmtree = rmtree_as_one_write(shutil.rmtree)

@atexit.register
def report():
    with open(os.environ["PLUGBOX_TEST_COUNT"], "w") as f:
        f.write(str(calls))

sys.argv = ["plugbox", *sys.argv[1:]]
main()
"""


def kill_line(hook: str) -> str:
    armed = f'"$CTL/kill-{hook}"'
    return f"[ ! -e {armed} ] || {{ rm -f {armed}; kill -9 $PPID; }}"


def toml_text(refresh: bool) -> str:
    hooks = {
        "post_upload": [kill_line("post_upload"), "test -d media/"],
        "stop": [kill_line("stop")],
        "start": [kill_line("start")],
        "check": [kill_line("check"), 'test ! -e "$CTL/fail-check"'],
    }
    if refresh:
        hooks["refresh"] = [kill_line("refresh")]
    return '[service]\nshared = ["media"]\n[hooks]\n' + "".join(
        f"{key} = [{', '.join(json.dumps(line) for line in lines)}]\n"
        for key, lines in hooks.items())


PLAIN, REFRESH = toml_text(refresh=False), toml_text(refresh=True)


class Host(BaseHost):
    def run_dying(self, kill_at: int, inside_rmtree: bool,
                  *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
        count = self.ctl.parent / "count"
        done = subprocess.run(
            [sys.executable, "-c", DYING, *args],
            env=self.env(PLUGBOX_TEST_KILL_AT=str(kill_at), PLUGBOX_TEST_COUNT=str(count),
                         PLUGBOX_TEST_INSIDE_RMTREE=str(int(inside_rmtree))),
            capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        calls = int(count.read_text()) if done.returncode != KILLED else kill_at
        return done, calls

    def has_live(self) -> bool:
        return os.path.lexists(self.home / "live")

    def assert_live_is_complete(self, had_live: bool) -> None:
        """HOME/live resolves to a whole uploaded version, or is absent if there never was one."""
        link = self.home / "live"
        if not os.path.lexists(link):
            assert not had_live, "HOME/live is gone"
            return
        target = Path(os.path.realpath(link))
        assert target.parent == Path(os.path.realpath(self.deploy)), f"live -> {target}"
        assert is_version_name(target.name), f"live -> {target}"
        assert (target / "MARKER").is_file(), f"live -> {target}, which has no MARKER"


# --- the homes each command starts from ----------------------------------------------------


def empty(host: Host) -> dict[str, str]:
    return {}


def first(host: Host) -> dict[str, str]:
    return {"V": host.upload(PLAIN)}


def upgrade(host: Host) -> dict[str, str]:
    return {"A": host.deploy_version(PLAIN), "B": host.upload(PLAIN)}


def upgrade_refresh(host: Host) -> dict[str, str]:
    return {"A": host.deploy_version(PLAIN), "B": host.upload(REFRESH)}


def many(host: Host) -> dict[str, str]:
    """A <- B <- C <- D (live), and E made against D but never live."""
    names = {label: host.deploy_version(REFRESH) for label in "ABCD"}
    names["E"] = host.upload(PLAIN)
    return names


HOMES = {f.__name__: f for f in (empty, first, upgrade, upgrade_refresh, many)}


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, str]]]:
    """Each starting home, made once by real plugbox commands; each case copies one."""
    made = {}
    for name, make in HOMES.items():
        base = tmp_path_factory.mktemp(f"home-{name}")
        host = Host(base / "home", base / "ctl")
        made[name] = (host.home, make(host))
    return made


@dataclass(frozen=True)
class Case:
    home: str                       # which starting home
    command: tuple[str, ...]        # labels of versions are replaced by their names
    removed: tuple[str, ...] = ()   # the versions the command may take away
    armed: tuple[str, ...] = ()     # files put in $CTL first
    exit_code: int = 0              # of the command when nobody kills it
    inside_rmtree: bool = False     # kill between the deletions inside a directory too

    def __str__(self) -> str:
        armed = "".join(f" [{a}]" for a in self.armed)
        return f"{' '.join(self.command)} from {self.home}{armed}"


@dataclass
class Copy:
    host: Host
    names: dict[str, str]
    before: set[str] = field(default_factory=set)
    had_live: bool = False


def fresh_copy(case: Case, homes, where: Path) -> Copy:
    template, names = homes[case.home]
    where.mkdir(parents=True)
    host = Host(where / "home", where / "ctl")
    if template.exists():
        shutil.copytree(template, host.home, symlinks=True)
    for flag in case.armed:
        (host.ctl / flag).touch()
    return Copy(host, names, host.versions(), host.has_live())


def argv(case: Case, names: dict[str, str]) -> list[str]:
    return [names.get(arg, arg) for arg in case.command]


def recovers(copy: Copy, case: Case, what: str) -> None:
    """After a kill: live whole, check --repair, check ok, nothing lost, a deploy works."""
    host = copy.host
    host.assert_live_is_complete(copy.had_live)
    for flag in os.listdir(host.ctl):  # disarm whatever did not fire
        os.unlink(host.ctl / flag)

    checked = host.run("check")
    assert checked.returncode in (0, 1), (what, checked.stdout, checked.stderr)
    if checked.returncode == 1:
        assert "problem" in checked.stdout, (what, checked.stdout)
        assert "check --repair" in checked.stderr, (what, checked.stderr)

    repaired = host.run("check", "--repair")
    assert repaired.returncode == 0, (what, repaired.stdout, repaired.stderr)
    if checked.returncode == 0:
        assert repaired.stdout.strip() == "ok", (what, repaired.stdout)
    else:
        assert "repaired" in repaired.stdout, (what, repaired.stdout)
    again = host.run("check")
    assert (again.returncode, again.stdout.strip()) == (0, "ok"), \
        (what, again.stdout, again.stderr)

    removable = {copy.names[label] for label in case.removed}
    lost = copy.before - removable - host.versions()
    assert not lost, (what, f"versions lost: {sorted(lost)}")
    host.assert_live_is_complete(copy.had_live)

    made = host.run("next-version")
    assert made.returncode == 0, (what, made.stderr)
    name = made.stdout.strip()
    (host.deploy / name / "MARKER").write_text(name)
    (host.deploy / name / "plugbox.toml").write_text(PLAIN)
    upgraded = host.run("upgrade-to", name)
    assert upgraded.returncode == 0, (what, upgraded.stdout, upgraded.stderr)
    assert os.path.realpath(host.home / "live") == os.path.realpath(host.deploy / name), what


# --- killed between hooks, at every write ---------------------------------------------------

WRITES = [
    Case("empty", ("next-version",)),
    Case("upgrade", ("next-version",)),
    Case("first", ("upgrade-to", "V")),
    Case("upgrade", ("upgrade-to", "B")),
    Case("upgrade", ("upgrade-to", "B"), armed=("fail-check",), exit_code=4),
    Case("upgrade_refresh", ("upgrade-to", "B")),
    Case("many", ("rollback-to",)),
    Case("many", ("rollback-to", "A", "--refresh")),
    Case("many", ("remove", "-v", "B"), removed=("B",), inside_rmtree=True),
    Case("many", ("remove", "-v", "A", "-v", "E"), removed=("A", "E")),
    Case("many", ("prune", "--keep", "2"), removed=("A", "B", "E")),
]


def kill_at_write(case: Case, homes, where: Path, kill_at: int) -> str | None:
    """Kill before the `kill_at`th write; None if all went as it should, else what went wrong."""
    what = f"{case}, killed before write {kill_at}"
    copy = fresh_copy(case, homes, where)
    try:
        done, _ = copy.host.run_dying(kill_at, case.inside_rmtree, *argv(case, copy.names))
        assert done.returncode == KILLED, (what, done.returncode, done.stdout, done.stderr)
        recovers(copy, case, what)
    except AssertionError as error:
        return str(error)
    return None


@pytest.mark.parametrize("case", WRITES, ids=str)
def test_killed_at_every_write(case: Case, homes, tmp_path: Path) -> None:
    # The run nobody kills counts the writes, and ends as the command should.
    copy = fresh_copy(case, homes, tmp_path / "count")
    done, writes = copy.host.run_dying(0, case.inside_rmtree, *argv(case, copy.names))
    assert done.returncode == case.exit_code, (done.stdout, done.stderr)
    assert writes > 0
    assert copy.host.run("check").stdout.strip() == "ok"
    removed = {copy.names[label] for label in case.removed}
    assert copy.before - copy.host.versions() == removed

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        failures = [f for f in pool.map(
            lambda n: kill_at_write(case, homes, tmp_path / f"kill-{n}", n),
            range(1, writes + 1)) if f]
    assert not failures, "\n".join(failures)


# --- killed inside each hook ---------------------------------------------------------------

HOOK_KILLS = [
    *(Case("first", ("upgrade-to", "V"), armed=(f"kill-{hook}",))
      for hook in ("post_upload", "start", "check")),
    *(Case("upgrade", ("upgrade-to", "B"), armed=(f"kill-{hook}",))
      for hook in ("post_upload", "stop", "start", "check")),
    *(Case("upgrade_refresh", ("upgrade-to", "B"), armed=(f"kill-{hook}",))
      for hook in ("post_upload", "refresh", "check")),
    *(Case("many", ("rollback-to",), armed=(f"kill-{hook}",))
      for hook in ("stop", "start", "check")),
    *(Case("many", ("rollback-to", "--refresh"), armed=(f"kill-{hook}",))
      for hook in ("refresh", "check")),
]


@pytest.mark.parametrize("case", HOOK_KILLS, ids=str)
def test_killed_inside_a_hook(case: Case, homes, tmp_path: Path) -> None:
    copy = fresh_copy(case, homes, tmp_path / "case")
    live_before = os.path.realpath(copy.host.home / "live")

    done = copy.host.run(*argv(case, copy.names))

    assert done.returncode == KILLED, (done.stdout, done.stderr)
    assert not os.listdir(copy.host.ctl), "the armed hook never ran"
    # Where live stands tells which side of the switch the hook was on.
    hook = case.armed[0].removeprefix("kill-")
    target = os.path.realpath(copy.host.home / "live")
    if hook in ("post_upload", "stop"):
        assert target == live_before
    else:
        assert target != live_before
    recovers(copy, case, str(case))
