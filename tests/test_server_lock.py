"""The lock on deploy/ and the atomic switch of live, with two real processes at a time.

One `plugbox` command is held in the middle of its run by a hook that waits for
the test to create a file (bounded: the hook gives up after 30 s); meanwhile a
second process tries its luck.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIMEOUT, WAIT_FOR_GO, toml_of, wait_for
from plugbox_host import PLUGBOX
from plugbox_host import Host as BaseHost

# A hook line that says it has begun, then waits for $CTL/go (at most 30 s).
HOLD = 'touch "$CTL/holding"; ' + WAIT_FOR_GO


class Host(BaseHost):
    def layout(self) -> dict[str, str | None]:
        """Every entry of deploy/ and of each version, with its link text: what `ls -l` shows."""
        seen: dict[str, str | None] = {}
        for root, dirs, files in os.walk(self.deploy):
            for entry in dirs + files:
                path = os.path.join(root, entry)
                if entry not in (".log", ".lock"):
                    seen[os.path.relpath(path, self.deploy)] = (
                        os.readlink(path) if os.path.islink(path) else None)
        return seen

    def wait_for(self, flag: str, process: subprocess.Popen) -> None:
        """Until a hook of `process` has created $CTL/<flag> (bounded).

        Unlike a plain wait_for, gives up at once if `process` ends first, and shows
        what it said: a command that failed never creates the flag.
        """
        flagged = self.ctl / flag
        wait_for(lambda: flagged.exists() or process.poll() is not None,
                 f"a hook of {process.args} to create {flag}")
        assert flagged.exists(), process.communicate(timeout=TIMEOUT)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "home", tmp_path / "ctl")


@pytest.fixture
def holder(host: Host):
    """An upgrade-to held inside the new version's start hook until the test says go."""
    old = host.deploy_version()
    new = host.upload(toml_of({"start": [HOLD]}))
    # Run by hand by ada, on this host: the lock names her and the machine.
    process = subprocess.Popen([PLUGBOX, "upgrade-to", new], env=host.env(PLUGBOX_USER="ada"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        host.wait_for("holding", process)
        yield process, old, new
    finally:
        (host.ctl / "go").touch()
        try:
            process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=TIMEOUT)


CHANGING = [
    ["next-version"],
    ["upgrade-to", "NEW"],
    ["rollback-to"],
    ["rollback-to", "OLD"],
    ["remove", "-v", "OLD"],
    ["prune", "--keep", "1"],
    ["check", "--repair"],
]


@pytest.mark.parametrize("command", CHANGING, ids=" ".join)
def test_a_second_changing_command_fails_at_once_naming_the_holder(
        host: Host, holder, command: list[str]) -> None:
    process, old, new = holder
    before = host.layout()
    args = [{"OLD": old, "NEW": new}.get(arg, arg) for arg in command]

    done = host.run(*args)

    assert done.returncode == 3, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    match = re.match(
        r"plugbox: deploy/ is locked by ada@(\S+) \(plugbox upgrade-to (\S+), pid (\d+), "
        r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", lines[0])
    assert match, lines[0]
    assert match.group(1) == os.uname().nodename
    assert int(match.group(3)) == process.pid
    assert match.group(2) == new
    assert done.stdout == ""
    # It failed while the holder was still busy: it did not wait for the lock.
    assert process.poll() is None
    assert host.layout() == before


def test_read_only_commands_work_while_the_lock_is_held(host: Host, holder) -> None:
    process, old, new = holder

    status = host.ok("status", "--json")
    state = json.loads(status.stdout)
    assert state["live"] == new
    assert [v["name"] for v in state["versions"]] == [new, old]
    assert new in host.ok("status").stdout
    assert host.ok("check").stdout.strip() == "ok"
    assert "upgrade-to" in host.ok("log").stdout
    assert process.poll() is None

    (host.ctl / "go").touch()
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err
    # Once the holder has finished, the lock is free again.
    host.ok("rollback-to")
    assert host.live() == old


def test_check_says_a_command_is_running_when_its_work_shows_as_a_problem(
        host: Host, holder) -> None:
    process, old, new = holder
    # What a running command may have on disk for a moment.
    os.symlink(f"../{old}", host.deploy / ".link-1-0")

    done = host.run("check")

    assert done.returncode == 1
    assert "problem: deploy/.link-1-0: a leftover temporary link" in done.stdout
    assert re.fullmatch(
        rf"plugbox: deploy/ is locked by ada@\S+ \(plugbox upgrade-to {re.escape(new)}, pid {process.pid}, "
        r"since \S+\): what it is doing may show as problems; check again when it has finished",
        done.stderr.splitlines()[0]), done.stderr
    os.unlink(host.deploy / ".link-1-0")
    (host.ctl / "go").touch()
    process.communicate(timeout=TIMEOUT)


def test_the_lock_file_says_who_held_it_last_and_a_killed_holder_frees_it(
        host: Host, holder) -> None:
    process, old, new = holder
    text = (host.deploy / ".lock").read_text()
    assert text.startswith(f"ada@{os.uname().nodename} (plugbox upgrade-to {new}, pid {process.pid}, since ")

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=TIMEOUT)
    # The kernel drops a flock with its last holder: no stale lock to clean up.
    host.ok("rollback-to")
    assert host.live() == old


def test_a_service_started_in_the_background_does_not_keep_the_lock(host: Host) -> None:
    start = ['sleep 60 >/dev/null 2>&1 & echo $! > "$CTL/service.pid"']
    service_pid = None
    try:
        first = host.upload(toml_of({"start": start}))
        host.ok("upgrade-to", first)
        service_pid = int((host.ctl / "service.pid").read_text())
        os.kill(service_pid, 0)  # still running: the service outlives the command

        # Right after, with the service still up, the next commands take the lock.
        second = host.ok("next-version").stdout.strip()
        os.kill(service_pid, 0)
        host.ok("upgrade-to", second)
        assert host.live() == second
        lock = os.path.realpath(host.deploy / ".lock")
        fds = Path(f"/proc/{service_pid}/fd")
        assert lock not in {os.path.realpath(fd) for fd in fds.iterdir()}
    finally:
        kill_quietly(service_pid)


def test_a_service_started_with_setsid_does_not_keep_the_lock(host: Host) -> None:
    start = ['setsid sh -c \'echo $$ > "$CTL/service.pid"; exec sleep 60\' '
             '>/dev/null 2>&1 < /dev/null &',
             'i=0; while [ ! -s "$CTL/service.pid" ]; do i=$((i+1)); '
             '[ "$i" -le 600 ] || exit 9; sleep 0.05; done']
    service_pid = None
    try:
        first = host.upload(toml_of({"start": start}))
        host.ok("upgrade-to", first)
        service_pid = int((host.ctl / "service.pid").read_text())
        os.kill(service_pid, 0)
        second = host.upload()
        host.ok("upgrade-to", second)
        os.kill(service_pid, 0)
        host.ok("remove", "-v", first)
        assert host.live() == second
    finally:
        kill_quietly(service_pid)


def kill_quietly(pid: int | None) -> None:
    """End a service a test started, if it did and the service still runs."""
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- the atomic switch ------------------------------------------------------------------

SWITCHER = r"""
import sys, time
from pathlib import Path
from plugbox_server import operations

home, forward, rounds, ready = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
deadline = time.monotonic() + 30
while not ready.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
for _ in range(rounds):
    operations.rollback_to(home)
    operations.upgrade_to(home, forward)
"""

READER = r"""
import json, os, sys, time
from pathlib import Path

home, ready, done = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
live = str(home / "live")
reads, misses, seen = 0, [], set()
ready.touch()
deadline = time.monotonic() + 60
while not done.exists() and time.monotonic() < deadline:
    reads += 1
    try:
        target = os.path.realpath(live)
        if not os.path.isfile(os.path.join(target, "MARKER")):
            misses.append(f"{target} has no MARKER")
        if "MARKER" not in os.listdir(live):
            misses.append("live/ lists no MARKER")
        with open(os.path.join(live, "MARKER")) as f:
            seen.add(f.read())
    except OSError as error:
        misses.append(f"{error}")
print(json.dumps({"reads": reads, "misses": misses[:10], "seen": sorted(seen)}))
"""


def test_live_never_goes_missing_nor_dangles_while_it_is_switched(host: Host) -> None:
    old = host.deploy_version()
    new = host.deploy_version()
    ready, done = host.ctl / "reader-ready", host.ctl / "switcher-done"

    reader = subprocess.Popen([sys.executable, "-c", READER, str(host.home), str(ready),
                               str(done)], stdout=subprocess.PIPE, text=True)
    try:
        switcher = subprocess.run(
            [sys.executable, "-c", SWITCHER, str(host.home), new, "100", str(ready)],
            capture_output=True, text=True, timeout=TIMEOUT)
        done.touch()
        out, _ = reader.communicate(timeout=TIMEOUT)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=TIMEOUT)

    assert switcher.returncode == 0, switcher.stderr
    assert switcher.stdout.count("live is now") == 200
    result = json.loads(out)
    assert result["misses"] == []
    assert result["reads"] > 0
    # The reader ran while live went back and forth: it saw both versions.
    assert result["seen"] == sorted([old, new])
    assert host.live() == new
    assert host.ok("check").stdout.strip() == "ok"
    assert not [e for e in os.listdir(host.deploy) if e.startswith(".link-")]
