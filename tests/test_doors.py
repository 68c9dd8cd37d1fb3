"""plugbox's two doors, the CLI (people, scripts) and `plugbox --serve` (plug): each
answers a bad home, a refused request and a full disk with one line on stderr and
the right exit code, never a traceback; --serve always ends its exchange."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import TIMEOUT, fill_inodes, small_disk  # noqa: F401 (a fixture)
from plugbox_host import PLUGBOX, Host
from plugbox_server import protocol


def cli(home: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLUGBOX, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def serve(request: dict) -> tuple[int, list[dict], str]:
    """One request to plugbox --serve, its input held open until the exit message, as
    plug does (the end of input means the caller has gone, and plugbox says nothing
    more); (exit status, its messages, its stderr)."""
    process = subprocess.Popen([PLUGBOX, *protocol.ARGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        messages = []
        while not messages or "exit" not in messages[-1]:
            line = process.stdout.readline()
            assert line, f"plugbox --serve ended without an exit message: {messages}"
            messages.append(json.loads(line))
        process.stdin.close()
        code = process.wait(timeout=TIMEOUT)
        return code, messages, process.stderr.read()
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("plugbox: "), stderr
    return lines[0]


def assert_one_exchange(code: int, messages: list[dict], stderr: str, expected: int) -> str:
    """The hello, then one exit message with the code and the line stderr shows."""
    line = one_line(stderr)
    assert code == expected
    assert list(messages[0]) == ["hello"] and len(messages) == 2, messages
    assert messages[1]["exit"] == expected and line == f"plugbox: {messages[1]['error']}"
    return line


def test_a_home_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("not a directory")
    home = tmp_path / "FILE" / "home"

    done = cli(home, "status")
    assert done.returncode == 1
    assert "Not a directory" in one_line(done.stderr)

    line = assert_one_exchange(*serve({"command": "status", "home": str(home)}), expected=1)
    assert "Not a directory" in line


def test_a_refused_request(tmp_path: Path) -> None:
    host = Host(tmp_path / "home", tmp_path / "ctl")
    live = host.deploy_version()

    done = cli(host.home, "remove", "-v", live)
    assert done.returncode == 1
    assert one_line(done.stderr) == f"plugbox: {live} is live and cannot be removed; roll back or deploy first"

    line = assert_one_exchange(*serve({"command": "remove", "home": str(host.home), "versions": [live]}),
                               expected=1)
    assert line == f"plugbox: {live} is live and cannot be removed; roll back or deploy first"


def test_a_request_plugbox_cannot_read_is_bad_usage(tmp_path: Path) -> None:
    line = assert_one_exchange(*serve({"command": "status", "home": str(tmp_path), "keep": "many"}),
                               expected=2)
    assert "'keep' must be a whole number" in line and "plug bootstrap" in line


def test_a_full_disk(small_disk: Path, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    host = Host(small_disk / "home", tmp_path / "ctl")
    host.deploy_version()
    fill_inodes(small_disk / "filler", leave=1)

    done = cli(host.home, "next-version")
    assert done.returncode == 1
    assert "No space left on device" in one_line(done.stderr)

    line = assert_one_exchange(*serve({"command": "deploy", "home": str(host.home)}), expected=1)
    assert "No space left on device" in line
    assert host.ok("check").stdout == "ok\n"
