"""plugbox log and plug log: -n N (the last N) and --since WHEN (a time ago, or a UTC date).

The log is plain text, one tab-separated line per command: a test writes one with
chosen times, as plugbox writes them, then reads it back through both doors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TIMEOUT, deploy, ok, plugbox

OLD = [
    ("2026-11-30T10:00:00Z", "deploy 20261130T100000Z"),
    ("2026-12-01T09:00:00Z", "deploy 20261201T090000Z"),
    ("2026-12-02T03:00:00Z", "rollback-to 20261130T100000Z"),
]


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    (home / "deploy").mkdir(parents=True)
    lines = [f"{when}\tada\t{command}\t-\t-\tok\n" for when, command in OLD]
    (home / "deploy" / ".log").write_text("".join(lines))
    return home


def commands(out: str) -> list[str]:
    """The COMMAND column of `log`, under its heading."""
    rows = out.splitlines()
    assert rows[0].split()[:3] == ["TIME", "USER", "COMMAND"], out
    return [" ".join(row.split()[2:4]) for row in rows[1:]]


def test_the_last_n(home):
    assert commands(ok(home, "log", "-n", "2")) == ["deploy 20261201T090000Z", "rollback-to 20261130T100000Z"]
    assert commands(ok(home, "log", "--count", "1")) == ["rollback-to 20261130T100000Z"]
    assert len(commands(ok(home, "log"))) == 3


@pytest.mark.parametrize("since, expected", [
    ("2026-12-01", 2),
    ("2026-12-01T09:00", 2),
    ("2026-12-01 09:00:01Z", 1),
    ("2026-12-03", 0),
])
def test_since_a_utc_date(home, since, expected):
    out = ok(home, "log", "--since", since)
    if expected:
        assert len(commands(out)) == expected
    else:
        assert out == "no operations since 2026-12-03T00:00:00Z\n"


def test_since_a_time_ago_and_with_n(home):
    name = deploy(home)  # now: next-version, then upgrade-to
    assert commands(ok(home, "log", "--since", "2h")) == ["next-version -", f"upgrade-to {name}"]
    assert commands(ok(home, "log", "--since", "5000w", "-n", "1")) == [commands(ok(home, "log"))[-1]]


@pytest.mark.parametrize("since", ["yesterday", "2h ago", "12-01", "-2h", ""])
def test_a_since_it_cannot_read_is_bad_usage(home, since):
    ran = plugbox(home, "log", "--since", since)
    assert ran.exit_code == 2 and ran.exception is None
    assert ran.stderr == (f"plugbox: --since {since!a}: give a time ago (30m, 2h, 3d, 1w) or a UTC date "
                          "(2026-12-02, 2026-12-02T03:00)\n")


def test_the_output_of_the_last_n_commands(tmp_path):
    home = tmp_path / "home"
    for word in ("one", "two", "three"):
        (home / "deploy").mkdir(parents=True, exist_ok=True)
        name = ok(home, "next-version").strip()
        (home / "deploy" / name / "plugbox.toml").write_text(f'[hooks]\nstart = ["echo {word}"]\n')
        ok(home, "upgrade-to", name)
    last = ok(home, "log", "--output", "-n", "1")
    assert last.startswith("=== ") and "three\n" in last and "two\n" not in last
    two = ok(home, "log", "--output", "-n", "2")
    assert two.count("=== ") == 2 and "one\n" not in two and "two\n" in two
    assert ok(home, "log", "--output", "--since", "2999-01-01") == "no hook output kept since 2999-01-01T00:00:00Z\n"


def test_plug_log_n_and_a_bad_since_refused_before_connecting(tmp_path):
    home = tmp_path / "home"
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "a.txt").write_text("a\n")
    (project / "plugbox.toml").write_text(f'[service]\nhost = "local"\nhome = "{home}"\n[build]\nupload = ["app"]\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}

    def plug(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "plugbox_client", *args], cwd=project, env=environ,
                              capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

    for _ in range(3):
        assert plug("deploy").returncode == 0
    out = plug("log", "-n", "1", "--since", "1h")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2 and "deploy " in out.stdout.splitlines()[1]
    started = time.monotonic()
    bad = plug("log", "--since", "soon")
    assert (bad.returncode, bad.stderr) == (
        2, "plug: --since 'soon': give a time ago (30m, 2h, 3d, 1w) or a UTC date (2026-12-02, 2026-12-02T03:00)\n")
    assert time.monotonic() - started < TIMEOUT
