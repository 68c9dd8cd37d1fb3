"""plugbox --relay: one `plugbox --serve` held across the steps of an engine's deploy.

Real processes on this machine: the relay is started detached, as the first module
of an Ansible deploy starts it, and each step is a client of its socket.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TIMEOUT, live, toml_of, traced, versions, wait_for
from plugbox_server import protocol as P
from plugbox_server import relay
from plugbox_server.errors import BUSY, HOOK_FAILED

PLUGBOX = [sys.executable, "-m", "plugbox_server"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def relay_pid(home: Path) -> int | None:
    try:
        text = (relay.directory(home) / "lock").read_text()
    except FileNotFoundError:
        return None
    return int(text.split()[2]) if text.startswith("relay pid ") else None


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: its parent (this test) has not reaped it yet.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def opened(home: Path, hooks: dict | None = None, idle: float = 60, env=None) -> relay.Exchange:
    """Start the relay and ask for a gated deploy; returns plugbox's hello and newest."""
    relay.start(PLUGBOX, home, idle, env=env)
    request = P.request("deploy", str(home), config=toml_of(hooks), gated=True,
                        origin={"user": "tester", "message": "through the relay"})
    return relay.exchange(home, request, until=(P.NEWEST,))


def prepared(home: Path, name: str, files: dict[str, str], hooks: dict | None = None,
             idle: float = 60, env=None) -> relay.Exchange:
    """Open, name, upload (a plain copy, as rsync would), uploaded: up to prepared."""
    opened(home, hooks, idle, env)
    upload = relay.exchange(home, {P.NAME: name}, until=(P.UPLOAD,)).last()[P.UPLOAD]
    for path, text in files.items():
        target = Path(upload["path"], path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return relay.exchange(home, {P.UPLOADED: True}, until=(P.PREPARED,))


def test_a_deploy_step_by_step_through_the_relay(home: Path, tmp_path: Path) -> None:
    hooks = {key: [traced("r", key)] for key in ("post_upload", "stop", "start", "check")}
    env = {**os.environ, "CTL": str(tmp_path)}
    first = opened(home, hooks, env=env)
    hello, newest = first.messages
    assert hello[P.HELLO]["protocol"] == P.NUMBER
    assert newest == {P.NEWEST: {"name": None, "live": None}}

    directory = relay.directory(home)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    sock = directory / "socket"
    assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600

    name = "20261121T090000Z"
    upload = relay.exchange(home, {P.NAME: name}, until=(P.UPLOAD,))
    staging = Path(upload.last()[P.UPLOAD]["path"])
    assert staging.name == f".new-{name}" and staging.is_dir()
    (staging / "app.txt").write_text("one\n")
    ready = relay.exchange(home, {P.UPLOADED: True}, until=(P.PREPARED,))
    assert ready.last() == {P.PREPARED: {"name": name}}
    # post_upload's own line and plugbox's announcement of it, handed to this step
    assert any(f"post_upload of {name}" in line for line in ready.said), ready.said
    assert versions(home) == [name] and live(home) is None

    switched = relay.exchange(home, {P.SWITCH: True}, until=(P.SWITCHED,))
    assert switched.last() == {P.SWITCHED: {"name": name}}
    assert live(home) == name
    done = relay.exchange(home, {P.COMMIT: True}, until=(P.EXIT,))
    assert done.last()[P.EXIT] == 0 and done.last()["name"] == name
    pid = relay_pid(home)
    wait_for(lambda: gone(pid), "the relay to end with its deploy")
    assert not sock.exists()
    assert (tmp_path / "trace").read_text().splitlines() == [
        f"r post_upload {name} ", f"r start {name} {name}", f"r check {name} {name}"]
    with pytest.raises(relay.NoSession):
        relay.exchange(home, {P.ABORT: True}, until=(P.EXIT,))


def test_abort_before_the_switch_removes_the_new_version(home: Path) -> None:
    prepared(home, "20261121T090000Z", {"a": "1"})
    done = relay.exchange(home, {P.ABORT: True}, until=(P.EXIT,))
    assert done.last()[P.EXIT] != 0
    assert "called off" in done.last()[P.ERROR]
    assert versions(home) == [] and live(home) is None


def test_the_idle_bound_calls_off_a_deploy_nobody_finishes(home: Path) -> None:
    prepared(home, "20261121T090000Z", {"a": "1"}, idle=1)
    pid = relay_pid(home)
    wait_for(lambda: gone(pid), "the relay to end after its idle time", seconds=30)
    assert versions(home) == [] and live(home) is None
    assert "aborted" in (home / "deploy" / ".log").read_text()


def test_after_the_switch_the_idle_bound_keeps_it(home: Path) -> None:
    prepared(home, "20261121T090000Z", {"a": "1"}, idle=1)
    relay.exchange(home, {P.SWITCH: True}, until=(P.SWITCHED,))
    pid = relay_pid(home)
    wait_for(lambda: gone(pid), "the relay to end after its idle time", seconds=30)
    assert live(home) == "20261121T090000Z"


def test_a_second_relay_of_the_same_home_is_refused(home: Path) -> None:
    opened(home)
    with pytest.raises(relay.PlugboxError) as refused:
        relay.start(PLUGBOX, home)
    assert refused.value.code == BUSY
    assert str(refused.value).startswith(f"a deploy session is open in {home} (relay pid ")
    relay.exchange(home, {P.ABORT: True}, until=(P.EXIT,))


def test_plugbox_refusing_the_deploy_ends_the_session(home: Path) -> None:
    """plugbox's own lock held by someone else: the exit message, then the end."""
    (home / "deploy").mkdir()
    with open(home / "deploy" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("pid 1 (plugbox test) since now\n")
        lock.flush()
        got = opened(home)
    answer = got.last()
    assert answer[P.EXIT] == BUSY and "locked by" in answer[P.ERROR]


def test_what_a_step_misses_is_kept_for_the_next(home: Path) -> None:
    """A client that goes away mid-step (ansible-playbook stopped): the next one
    gets what plugbox said meanwhile, the answer included."""
    hooks = {"post_upload": ["sleep 1", "echo made it"]}
    opened(home, hooks)
    staging = Path(relay.exchange(home, {P.NAME: "20261121T090000Z"}, until=(P.UPLOAD,))
                   .last()[P.UPLOAD]["path"])
    (staging / "a").write_text("1")
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(relay.socket_path(home)))
    client.sendall(b'{"send": {"uploaded": true}, "until": ["prepared"]}\n')
    client.close()
    time.sleep(2)
    later = relay.exchange(home, None, until=(P.PREPARED,))
    assert later.last() == {P.PREPARED: {"name": "20261121T090000Z"}}
    assert "made it" in later.said
    relay.exchange(home, {P.ABORT: True}, until=(P.EXIT,))


def test_a_failed_check_switches_back_and_ends(home: Path) -> None:
    relay.start(PLUGBOX, home)
    request = P.request("deploy", str(home), config=toml_of({}), gated=True)
    relay.exchange(home, request, until=(P.NEWEST,))
    staging = Path(relay.exchange(home, {P.NAME: "20261121T090000Z"}, until=(P.UPLOAD,)).last()[P.UPLOAD]["path"])
    (staging / "a").write_text("1")
    relay.exchange(home, {P.UPLOADED: True}, until=(P.PREPARED,))
    relay.exchange(home, {P.SWITCH: True}, until=(P.SWITCHED,))
    relay.exchange(home, {P.COMMIT: True}, until=(P.EXIT,))
    first = live(home)

    prepared(home, "20261122T090000Z", {"a": "2"}, hooks={"check": ["echo sick; exit 3"]})
    failed = relay.exchange(home, {P.SWITCH: True}, until=(P.SWITCHED,))
    answer = failed.last()
    assert answer[P.EXIT] == HOOK_FAILED
    assert "switched back" in answer[P.ERROR]
    assert "sick" in failed.said
    assert live(home) == first


def test_the_relay_refuses_another_protocol() -> None:
    done = subprocess.run([*PLUGBOX, "--relay", "1", "/nowhere", "60"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert done.stdout.startswith(f"plugbox: --relay 1: this plugbox speaks protocol {P.NUMBER}")


def test_a_home_too_long_for_a_socket_is_refused_in_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 100)
    deep.mkdir()
    with pytest.raises(relay.PlugboxError, match="too long for a unix socket"):
        relay.start(PLUGBOX, deep)
    shutil.rmtree(deep)
