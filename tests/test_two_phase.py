"""The host's side of a deploy to several hosts: `plugbox --serve 1` with two phases.

Driven here as plug drives it, message by message, with real files and real
hooks, so each test can stop at a phase and say abort, revert or nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import TIMEOUT, toml_of, tracing
from plugbox_host import PLUGBOX, Host
from plugbox_server import protocol
from plugbox_server.names import new_version_name


class Serve:
    def __init__(self, host: Host):
        self.process = subprocess.Popen([PLUGBOX, *protocol.ARGS], env=host.env(), text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert "hello" in self.receive()

    def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read()
        return json.loads(line)

    def end(self) -> tuple[int, str]:
        self.process.stdin.close()
        code = self.process.wait(TIMEOUT)
        return code, self.process.stderr.read()


def prepared(host: Host, hooks: dict) -> tuple[Serve, str]:
    """A two-phase deploy up to {"prepared"}: named by the caller, uploaded, post_upload run."""
    serve = Serve(host)
    serve.send({"command": "deploy", "gated": True, "config": toml_of(hooks)})
    newest = serve.receive()["newest"]
    assert newest["live"] == host.live()
    name = new_version_name([newest["name"]] if newest["name"] else [])
    serve.send({"name": name})
    upload = serve.receive()["upload"]
    assert upload["name"] == name
    Path(upload["path"], "MARKER").write_text(name)
    serve.send({"uploaded": True})
    assert serve.receive() == {"prepared": {"name": name}}
    return serve, name


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "home", tmp_path / "ctl")


def test_a_name_that_does_not_sort_after_the_newest_is_refused(host: Host) -> None:
    first = host.deploy_version()
    serve = Serve(host)
    serve.send({"command": "deploy", "gated": True})
    assert serve.receive()["newest"] == {"name": first, "live": first}
    old = new_version_name([], now=datetime(2001, 1, 1, tzinfo=timezone.utc))
    serve.send({"name": old})
    answer = serve.receive()
    code, said = serve.end()
    assert code == 1 and answer["exit"] == 1
    assert f"the new version {old} does not sort after the newest version {first}" in said
    assert host.versions() == {first} and host.live() == first
    assert [e for e in os.listdir(host.deploy) if e.startswith(".new-")] == []


def test_abort_after_prepared_removes_the_new_version_and_switches_nothing(host: Host) -> None:
    first = host.deploy_version(toml_of(tracing("a")))
    host.trace()
    serve, name = prepared(host, tracing("b"))
    serve.send({"abort": True})
    answer = serve.receive()
    code, said = serve.end()
    assert code == 1 and answer["exit"] == 1
    assert "the switch was called off: another host failed; nothing switched" in said
    assert host.versions() == {first} and host.live() == first
    assert host.trace() == [f"b post_upload {name} {first}"]  # no stop, no start


def test_the_end_of_input_before_the_switch_calls_it_off_too(host: Host) -> None:
    first = host.deploy_version()
    serve, name = prepared(host, {})
    code, _ = serve.end()
    assert code == 1 and host.versions() == {first} and host.live() == first


def test_revert_after_a_good_check_switches_back_under_the_same_lock(host: Host) -> None:
    first = host.deploy_version(toml_of(tracing("a")))
    host.trace()
    serve, name = prepared(host, tracing("b"))
    serve.send({"switch": True})
    assert serve.receive() == {"switched": {"name": name}}
    serve.send({"revert": True})
    answer = serve.receive()
    code, said = serve.end()
    assert code == 4 and answer["exit"] == 4
    assert "plug asked to switch back: another host failed" in said
    assert host.live() == first and host.versions() == {first, name}
    assert host.trace() == [
        f"b post_upload {name} {first}",
        f"a stop {first} {first}",
        f"b start {name} {name}",
        f"b check {name} {name}",
        f"b stop {name} {name}",   # switched back: the new one stopped, the old one started
        f"a start {first} {first}",
    ]
    assert host.ok("check").stdout.strip() == "ok"


def test_commit_or_the_end_of_input_after_the_switch_keeps_it(host: Host) -> None:
    first = host.deploy_version()
    serve, name = prepared(host, {})
    serve.send({"switch": True})
    assert serve.receive() == {"switched": {"name": name}}
    serve.send({"commit": True})
    assert serve.receive()["exit"] == 0
    assert serve.end()[0] == 0 and host.live() == name

    serve, newer = prepared(host, {})
    serve.send({"switch": True})
    assert serve.receive() == {"switched": {"name": newer}}
    assert serve.end()[0] == 0 and host.live() == newer


def test_a_rollback_of_several_hosts_waits_for_the_version(host: Host) -> None:
    first = host.deploy_version()
    second = host.deploy_version()
    serve = Serve(host)
    serve.send({"command": "rollback", "gated": True})
    assert serve.receive() == {"ready": {"live": second, "previous": first, "versions": [first, second],
                                         "version": None}}
    serve.send({"version": first})
    assert serve.receive()["exit"] == 0 and serve.end()[0] == 0
    assert host.live() == first
    # Told the live version: nothing to do, nothing switched.
    serve = Serve(host)
    serve.send({"command": "rollback", "gated": True})
    serve.receive()
    serve.send({"version": first})
    assert serve.receive() == {"exit": 0, "out": "", "name": first, "was": first}
    assert serve.end()[0] == 0 and host.live() == first


def test_a_rollback_of_several_hosts_tells_what_the_version_asked_for_names_here(host: Host) -> None:
    first = host.deploy_version()
    second = host.deploy_version()
    for asked in ({"version": "previous"}, {"version": "live~1"}, {"version": first}):
        serve = Serve(host)
        serve.send({"command": "rollback", "gated": True, **asked})
        assert serve.receive() == {"ready": {"live": second, "previous": first, "versions": [first, second],
                                             "version": first}}, asked
        serve.send({"version": None})  # nothing to do here
        assert serve.receive()["exit"] == 0 and serve.end()[0] == 0
    assert host.live() == second
    # A name this host cannot resolve: refused under the lock, before any word from plug.
    serve = Serve(host)
    serve.send({"command": "rollback", "gated": True, "version": "live~5"})
    answer = serve.receive()
    assert answer["exit"] == 1 and answer["error"].startswith(f"live~5: the live version {second} has only 1 version")
    assert serve.end()[0] == 1 and host.live() == second


@pytest.mark.parametrize("request_, command", [
    ({"command": "deploy", "gated": True, "config": ""}, "deploy"),
    ({"command": "rollback", "gated": True}, "rollback-to"),
])
def test_the_lock_names_the_person_and_the_machine_plug_runs_on(host: Host, request_, command) -> None:
    host.deploy_version()
    host.deploy_version()
    serve = Serve(host)
    # plug says who runs it, and where, in every request; here a laptop that is not this host.
    serve.send({**request_, "origin": {"user": "ada", "machine": "laptop"}})
    assert set(serve.receive()) & {"newest", "ready"}  # it waits, under its lock
    refused = subprocess.run([PLUGBOX, "prune", "--keep", "1"], env=host.env(), capture_output=True, text=True,
                             timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert refused.returncode == 3
    assert refused.stderr.startswith(f"plugbox: deploy/ is locked by ada@laptop (plugbox {command}, pid "), \
        refused.stderr
    serve.send({"abort": True})
    serve.receive()
    serve.end()
