"""The benchmark still runs: bench/run.py --quick end to end, a tiny tree, one run.

Not a timed test: nothing here looks at the figures, only that every row of the
table is there with a figure and that the markdown file is written. It starts its
own sshd on 127.0.0.1, as the benchmark always does.

Marked slow (the whole benchmark harness, with its deploys over ssh): the default
run leaves it out; `pytest -m slow` or `pytest -m "slow or not slow"` runs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    "deploy, first",
    "deploy, no change",
    "deploy, one file changed",
    "rollback",
    *(f"plugbox {command}, {count} versions" for command in ("upgrade-to", "rollback-to", "status")
      for count in ("10", "100")),
    "plugbox upgrade-to, 100 against 10 versions",
    "plugbox rollback-to, 100 against 10 versions",
    "plugbox status, 100 against 10 versions",
    "deploy, no change, 60 files",
    "deploy, no change, 300 files",
    "disk: 3 versions against 3 by hand (rsync --link-dest)",
    "deploy to three hosts against one (plug, one file changed)",
    "plug's start to its ssh's (plug status)",
    "rollback, warm connection",
    "deploy, no change, warm connection",
    "rollback, warm, against a cold one by hand",
]


def test_quick_bench_prints_every_row_and_writes_markdown(tmp_path: Path) -> None:
    out = tmp_path / "results.md"

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    printed = done.stdout.splitlines()
    written = out.read_text().splitlines()
    for row in ROWS:
        line = next((line for line in printed if line.startswith(row + " ")), None)
        assert line is not None, f"{row!r} missing from the table:\n{done.stdout}"
        assert re.search(r"\d+ ms|\d\.\d+ MB|\d\.\d+×", line), line
        assert any(line.startswith(f"| {row}") for line in written), f"{row!r} missing from {out}"
    assert written[0] == "# Plugbox benchmark"
    assert any(line.startswith("|---") for line in written)
    assert f"written to {out}" in done.stdout


def test_fleet_bench_measures_plug_and_the_playbook_on_two_counts(tmp_path: Path) -> None:
    """bench/fleet.py on 1 and 2 rig hosts (root only: it makes users; CI is root)."""
    import os

    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("bench/fleet.py makes users: run as root")
    out = tmp_path / "fleet.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet.py"), "--hosts", "1,2", "--files", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = out.read_text().splitlines()
    assert written[0].startswith("# A fleet")
    for count in (1, 2):
        row = next(line for line in written if line.startswith(f"| {count} |"))
        assert len(re.findall(r"\d+\.\d s", row)) >= 2, row
    assert any(line.startswith("- ansible-playbook: ") and "s per host" in line for line in written)
