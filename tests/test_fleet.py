"""Several hosts: three real sshd on 127.0.0.1, one plugbox.toml with `hosts`.

Each host is its own sshd whose sessions have their own HOME (SetEnv) and a
PATH without plugbox; plugbox.toml names no `home`, so each host's service lives
in its login's HOME, and `plug bootstrap` installs plugbox on all three. Hooks
find out which host they run on from PLUGBOX_HOME, so a test fails one host by
putting a file in its home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import (BARE_SYSTEM_PATH, INSTALLED_BIN, PLUG, TIMEOUT, Plug, children, live, one_line_error,
                     processes_naming, start_or_fail, versions, wait_for, write_app)
from terminal import on_terminal
from sshd import Sshd, free_port, write_client_config

from plugbox_server.names import is_version_name

HOSTS = ("fleet-a", "fleet-b", "fleet-c")


class Fleet:
    def __init__(self, root: Path, servers: dict[str, Sshd], homes: dict[str, Path], config: Path):
        self.root, self.servers, self.homes, self.ssh_config = root, servers, homes, config

    def logins(self) -> int:
        return sum(server.logins() for server in self.servers.values())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, user_key: Path, bare_python: Path):
    """Three hosts, bootstrapped once by `plug bootstrap` (that is the first test of it)."""
    root = tmp_path_factory.mktemp("fleet")
    servers, homes = {}, {}
    for alias in HOSTS:
        homes[alias] = root / f"{alias}-home"
        homes[alias].mkdir()
        servers[alias] = Sshd(root / f"{alias}-sshd", Path(f"{user_key}.pub"),
                              env={"HOME": str(homes[alias]), "PATH": f"{bare_python}:{BARE_SYSTEM_PATH}"})
    try:
        for server in servers.values():
            start_or_fail(server)
        config = write_client_config(root / "ssh_config", servers, user_key, root / "known_hosts")
        # A fourth alias where nothing listens: an unreachable host.
        config.write_text(f"Host fleet-down\n    HostName 127.0.0.1\n    Port {free_port()}\n\n"
                          + config.read_text())
        project = root / "bootstrap-project"
        project.mkdir()
        write_fleet_config(project)
        run = Plug(project, config).ok("bootstrap")
        for alias in HOSTS:
            assert f"{alias}: plugbox" in run.out and f"installed on {alias} as {homes[alias]}/.local/bin/plugbox" in run.out
        yield Fleet(root, servers, homes, config)
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def homes(fleet: Fleet) -> dict[str, Path]:
    """Every host's home, with no version yet and no flag of an earlier test (the
    bootstrapped plugbox kept, and config/)."""
    for home in fleet.homes.values():
        for entry in home.iterdir():
            if entry.name not in (".local", "config"):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return fleet.homes


@pytest.fixture
def plug(tmp_path: Path, fleet: Fleet, homes) -> Plug:
    project = tmp_path / "project"
    write_app(project, {"app/a.txt": "a\n", "app/b.txt": "b\n"})
    write_fleet_config(project)
    return Plug(project, fleet.ssh_config)


def write_fleet_config(project: Path, hosts=HOSTS, extra: str = "", **hooks: list[str]) -> None:
    lines = ["[service]", f"hosts = {json.dumps(list(hosts))}", "", "[build]", 'upload = ["app"]', ""]
    if hooks:
        lines += ["[hooks]"] + [f"{key} = {json.dumps(value)}" for key, value in hooks.items()] + [""]
    (project / "plugbox.toml").write_text("\n".join(lines) + extra)


# A hook that fails on the host whose home holds the file `fail-NAME`.
def fails_where(name: str) -> list[str]:
    return [f'test ! -e "$PLUGBOX_HOME/fail-{name}"']


def lives(homes: dict[str, Path]) -> dict[str, str | None]:
    return {alias: live(home) for alias, home in homes.items()}


def compact(out: str) -> dict[str, list[str]]:
    """plug status of several hosts: host -> [live, revision, by, when...], under its heading."""
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "LIVE", "REVISION", "BY", "WHEN", "MESSAGE"], out
    return {line.split()[0]: line.split()[1:] for line in lines[1:-1]}


def table(out: str) -> dict[str, list[str]]:
    """The summary table: host -> [live, result..., seconds]."""
    rows = [line.split() for line in out.splitlines()]
    start = next(i for i, row in enumerate(rows) if row[:1] == ["HOST"])
    return {row[0]: row[1:] for row in rows[start + 1:] if row and row[0] in HOSTS + ("fleet-down",)}


def test_a_deploy_lands_under_one_name_on_every_host(plug: Plug, homes) -> None:
    first = plug.ok("deploy")
    name = live(homes["fleet-a"])
    assert is_version_name(name)
    assert lives(homes) == {alias: name for alias in HOSTS}
    assert f"version {name} is live on 3 hosts" in first.out
    rows = table(first.out)
    assert {alias: rows[alias][:2] for alias in HOSTS} == {alias: [name, "switched"] for alias in HOSTS}
    # One line per host per step, each prefixed by its host.
    for alias in HOSTS:
        assert f"{alias}: ==> new version {name}" in first.err
        assert f"{alias}: ==> prepared: waiting for the other hosts" in first.err
        assert f"{alias}: plugbox: live is now {name}" in first.err

    (plug.project / "app" / "a.txt").write_text("two\n")
    second = plug.ok("deploy")
    name2 = live(homes["fleet-b"])
    assert name2 > name and lives(homes) == {alias: name2 for alias in HOSTS}
    assert all(versions(home) == [name, name2] for home in homes.values())
    assert f"unchanged files hard-linked from {name}" in second.err
    assert all((home / "deploy" / name2 / "app" / "b.txt").stat().st_ino
               == (home / "deploy" / name / "app" / "b.txt").stat().st_ino for home in homes.values())


def test_a_check_failing_on_one_host_puts_every_host_back(plug: Plug, homes) -> None:
    write_fleet_config(plug.project, check=fails_where("check"))
    good = plug.ok("deploy") and live(homes["fleet-a"])
    (homes["fleet-b"] / "fail-check").touch()
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy")

    assert run.code == 4
    assert lives(homes) == {alias: good for alias in HOSTS}
    message = one_line_error(run)
    assert "failed on fleet-b" in message and "every host is back on the version it had" in message
    rows = table(run.out)
    assert rows["fleet-b"][:4] == [good, "failed,", "switched", "back"]
    assert rows["fleet-a"][:3] == [good, "switched", "back"] and rows["fleet-c"][:3] == [good, "switched", "back"]
    assert "fleet-a: plugbox: plug asked to switch back: another host failed" in run.err
    # The new version stays (failed, never to be rolled forward by accident) under one name.
    assert len({tuple(versions(home)) for home in homes.values()}) == 1
    # Each host's status says why it is not live: failed where the check failed,
    # reverted where the version came up well and another host's failure switched it back.
    new = max(versions(homes["fleet-a"]))
    status = json.loads(plug.ok("status", "--json").out)["hosts"]
    state_of = {alias: {v["name"]: v["state"] for v in status[alias]["versions"]} for alias in HOSTS}
    assert {alias: state_of[alias][new] for alias in HOSTS} == {
        "fleet-a": "reverted", "fleet-b": "failed", "fleet-c": "reverted"}


def test_one_unreachable_host_switches_none_and_leaves_no_version(plug: Plug, homes, fleet: Fleet) -> None:
    good = plug.ok("deploy") and live(homes["fleet-a"])
    write_fleet_config(plug.project, hosts=(*HOSTS, "fleet-down"))
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy")

    assert run.code == 255
    assert lives(homes) == {alias: good for alias in HOSTS}
    assert all(versions(home) == [good] for home in homes.values())
    assert all(not [e for e in os.listdir(home / "deploy") if e.startswith(".new-")] for home in homes.values())
    assert "fleet-down failed before the switch; no host switched" in one_line_error(run)
    assert table(run.out)["fleet-down"][:2] == ["?", "unreachable"]
    assert table(run.out)["fleet-a"][:3] == [good, "called", "off"]


def test_a_post_upload_failing_on_one_host_switches_none(plug: Plug, homes) -> None:
    write_fleet_config(plug.project, post_upload=fails_where("post"))
    good = plug.ok("deploy") and live(homes["fleet-a"])
    (homes["fleet-c"] / "fail-post").touch()
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy")

    assert run.code == 4
    assert lives(homes) == {alias: good for alias in HOSTS}
    assert all(versions(home) == [good] for home in homes.values())
    assert table(run.out)["fleet-c"][:2] == [good, "post_upload"]
    assert "fleet-a: plugbox: the switch was called off: another host failed; nothing switched" in run.err


def test_keep_going_carries_on_and_says_who_is_where(plug: Plug, homes) -> None:
    write_fleet_config(plug.project, check=fails_where("check"))
    good = plug.ok("deploy") and live(homes["fleet-a"])
    (homes["fleet-a"] / "fail-check").touch()
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy", "--keep-going", "--batch", "1")

    assert run.code == 4
    new = live(homes["fleet-b"])
    assert new != good and lives(homes) == {"fleet-a": good, "fleet-b": new, "fleet-c": new}
    assert "carried on (--keep-going): fleet-b, fleet-c on" in one_line_error(run)
    assert "live versions differ: fleet-a on " in plug("status").out


def test_drift_shows_in_status_and_rollback_brings_the_fleet_together(plug: Plug, homes) -> None:
    first = plug.ok("deploy") and live(homes["fleet-a"])
    (plug.project / "app" / "a.txt").write_text("two\n")
    second = plug.ok("deploy") and live(homes["fleet-a"])
    assert plug.ok("status").out.splitlines()[-1] == f"live on every host: {second}"
    # By hand on fleet-b: plugbox rollback-to, as its own user would.
    subprocess.run([str(Path(INSTALLED_BIN) / "plugbox"), "--home", str(homes["fleet-b"]), "rollback-to"],
                   check=True, capture_output=True, timeout=TIMEOUT)

    status = plug.ok("status")
    assert status.out.splitlines()[-1] == f"live versions differ: fleet-a, fleet-c on {second}; fleet-b on {first}"
    assert compact(status.out)["fleet-b"][0] == first
    assert any(line.split()[:3] == ["fleet-b:", first, "live"] for line in plug.ok("status", "--all").out.splitlines())
    as_json = json.loads(plug.ok("status", "--json").out)
    assert as_json["same_live"] is False
    assert {alias: state["live"] for alias, state in as_json["hosts"].items()} == {
        "fleet-a": second, "fleet-b": first, "fleet-c": second}

    run = plug.ok("rollback")

    assert lives(homes) == {alias: first for alias in HOSTS}
    rows = table(run.out)
    assert rows["fleet-b"][:3] == [first, "already", "live"] and rows["fleet-a"][:3] == [first, "rolled", "back"]
    assert plug.ok("status").out.splitlines()[-1] == f"live on every host: {first}"
    # And forward again, together, by name.
    plug.ok("rollback", second)
    assert lives(homes) == {alias: second for alias in HOSTS}


def test_rollback_to_a_version_missing_on_one_host_changes_nothing(plug: Plug, homes) -> None:
    first = plug.ok("deploy") and live(homes["fleet-a"])
    (plug.project / "app" / "a.txt").write_text("two\n")
    second = plug.ok("deploy") and live(homes["fleet-a"])
    subprocess.run([str(Path(INSTALLED_BIN) / "plugbox"), "--home", str(homes["fleet-c"]), "remove", "-v", first],
                   check=True, capture_output=True, timeout=TIMEOUT)

    run = plug("rollback", first)

    assert run.code == 1
    # fleet-c refuses, under its lock; plug calls the rollback off everywhere.
    assert f"fleet-c: plugbox: no version {first} in deploy/; see `plug status`" in run.err.splitlines()
    assert one_line_error(run) == "plug: the rollback stopped at fleet-c; nothing was rolled back on any host"
    assert lives(homes) == {alias: second for alias in HOSTS}


def test_log_check_and_prune_run_on_every_host(plug: Plug, homes) -> None:
    plug.ok("deploy")
    check = plug.ok("check")
    assert sorted(check.out.splitlines()) == [f"{alias}: ok" for alias in HOSTS]
    log = plug.ok("log").out
    assert all(f"{alias}: " in log and "deploy" in log for alias in HOSTS)


def test_stages_select_their_hosts(plug: Plug, homes, fleet: Fleet) -> None:
    write_fleet_config(plug.project, extra='[stages.staging]\nhost = "fleet-a"\n\n'
                                           '[stages.production]\nhosts = ["fleet-b", "fleet-c"]\n')
    staged = plug.ok("deploy", "-s", "staging")  # after the command, or before it
    assert "fleet-b" not in staged.err + staged.out
    one = live(homes["fleet-a"])
    assert lives(homes) == {"fleet-a": one, "fleet-b": None, "fleet-c": None}
    plug.ok("--stage", "production", "deploy")
    both = live(homes["fleet-b"])
    assert lives(homes) == {"fleet-a": one, "fleet-b": both, "fleet-c": both}

    logins = fleet.logins()
    refused = plug("-s", "prod", "deploy")
    assert refused.code == 2
    assert one_line_error(refused) == (
        f"plug: {plug.project / 'plugbox.toml'}: no stage 'prod'; the stages are staging, production; "
        "nothing was done")
    assert fleet.logins() == logins  # refused before anything connected
    twice = plug("-s", "staging", "status", "-s", "production")
    assert (twice.code, one_line_error(twice)) == (
        2, "plug: -s is given twice, before the command and after it; give it once")
    assert fleet.logins() == logins


def test_in_batches_a_failure_in_a_later_group_puts_the_earlier_ones_back(plug: Plug, homes) -> None:
    write_fleet_config(plug.project, check=fails_where("check"))
    good = plug.ok("deploy") and live(homes["fleet-a"])
    (homes["fleet-c"] / "fail-check").touch()
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy", "--batch", "2")

    assert run.code == 4
    assert lives(homes) == {alias: good for alias in HOSTS}
    rows = table(run.out)
    assert rows["fleet-a"][:3] == rows["fleet-b"][:3] == [good, "switched", "back"]
    assert rows["fleet-c"][:4] == [good, "failed,", "switched", "back"]
    # fleet-c switched only after the first group had run its check (and passed it: it reported).
    assert run.err.index("fleet-c: plugbox: live is now") > max(
        run.err.index(f"{alias}: plugbox: check of") for alias in ("fleet-a", "fleet-b"))


def test_status_of_several_hosts_is_one_line_each_and_all_or_host_gives_the_lists(plug: Plug, homes) -> None:
    first = plug.ok("deploy", "-m", "the first") and live(homes["fleet-a"])
    (plug.project / "app" / "a.txt").write_text("two\n")
    second = plug.ok("deploy", "-m", "the second") and live(homes["fleet-a"])

    out = plug.ok("status").out
    lines = out.splitlines()
    assert len(lines) == 1 + 3 + 1  # heading, a line per host, the verdict
    rows = compact(out)
    assert set(rows) == set(HOSTS)
    for alias in HOSTS:
        assert rows[alias][0] == second and rows[alias][-2:] == ["the", "second"], out
    assert lines[-1] == f"live on every host: {second}"
    assert first not in out.split()  # (a name of the same second is first's name plus .001)

    every = plug.ok("status", "--all").out.splitlines()
    assert [line.split()[:3] for line in every[:-1]] == [
        [f"{alias}:", name, state] for alias in HOSTS for name, state in ((second, "live"), (first, "previous"))]
    assert every[-1] == f"live on every host: {second}"
    one = plug.ok("status", "--host", "fleet-b").out.splitlines()
    assert [line.split()[:2] for line in one] == [[second, "live"], [first, "previous"]]
    refused = plug("status", "--host", "fleet-z")
    assert refused.code == 2
    assert one_line_error(refused) == "plug: no host 'fleet-z' in plugbox.toml; the hosts are fleet-a, fleet-b, fleet-c"


def test_a_relative_name_rolls_every_host_back_to_what_it_names_on_all(plug: Plug, homes) -> None:
    first = plug.ok("deploy") and live(homes["fleet-a"])
    (plug.project / "app" / "a.txt").write_text("two\n")
    second = plug.ok("deploy") and live(homes["fleet-a"])
    (plug.project / "app" / "a.txt").write_text("three\n")
    plug.ok("deploy")

    third = live(homes["fleet-a"])

    plug.ok("rollback", "live~2")
    assert lives(homes) == {alias: first for alias in HOSTS}
    plug.ok("rollback", third[:-1] if not third[-1].isdigit() else third)  # a prefix, or the whole name
    assert lives(homes) == {alias: third for alias in HOSTS}
    # By hand on fleet-b: now `previous` means another version there.
    subprocess.run([str(Path(INSTALLED_BIN) / "plugbox"), "--home", str(homes["fleet-b"]), "rollback-to"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    run = plug("rollback", "previous")
    assert run.code == 1
    assert one_line_error(run) == (f"plug: previous names different versions: {second} on fleet-a, fleet-c; "
                                   f"{first} on fleet-b; nothing was rolled back on any host; name the version")
    assert lives(homes) == {"fleet-a": third, "fleet-b": second, "fleet-c": third}


def test_a_deploy_on_a_terminal_shows_one_bar_per_host_each_ending_at_100(plug: Plug, homes, fleet: Fleet) -> None:
    import re

    (plug.project / "app" / "big.bin").write_bytes(os.urandom(2_000_000))
    env = {**os.environ, "PLUG_SSH_CONFIG": str(fleet.ssh_config)}
    env.pop("PLUG_SSH_OPTIONS", None)
    seen = on_terminal([str(PLUG), "deploy"], "", env=env, cwd=plug.project)
    assert seen.code == 0, seen.shown
    frames = re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.shown))
    for alias in HOSTS:
        bars = [frame.strip() for frame in frames if frame.startswith(f"{alias} ") and "━" in frame]
        assert bars, seen.shown
        assert re.fullmatch(rf"{alias}\s+━+\s+100%\s+4/4 entries\s+2\.0 MB sent at \S+/s\s+\d:\d\d:\d\d", bars[-1]), bars[-1]
    assert f"version {live(homes['fleet-a'])} is live on 3 hosts" in seen.shown


def test_prune_on_a_terminal_asks_once_for_every_host(plug: Plug, homes, fleet: Fleet) -> None:
    made = []
    for text in ("one\n", "two\n", "three\n", "four\n"):
        (plug.project / "app" / "a.txt").write_text(text)
        plug.ok("deploy")
        made.append(live(homes["fleet-a"]))
    dry = plug.ok("prune", "--keep", "1", "--dry-run").out.splitlines()
    assert f"fleet-b: would remove {made[0]}  previous" in dry and f"fleet-c: keep         {made[2]}  live's previous" in dry
    env = {**os.environ, "PLUG_SSH_CONFIG": str(fleet.ssh_config)}
    env.pop("PLUG_SSH_OPTIONS", None)

    said = on_terminal([str(PLUG), "prune", "--keep", "1"], "n\n", env=env, cwd=plug.project)
    assert said.code == 1, said.shown
    # Two versions to go, the same two on every host: asked about once.
    assert said.shown.count("[y/N]") == 1 and "remove 2 versions on 3 hosts? [y/N]" in said.shown
    assert f"fleet-c: would remove {made[1]}  previous" in said.shown
    assert said.shown.rstrip().endswith("plug: called off; nothing was removed on any host")
    assert all(versions(home) == made for home in homes.values())

    # One version to go: no question.
    said = on_terminal([str(PLUG), "prune", "--keep", "3"], "", env=env, cwd=plug.project)
    assert said.code == 0 and "[y/N]" not in said.shown, said.shown
    assert all(versions(home) == made[1:] for home in homes.values())
    said = on_terminal([str(PLUG), "prune", "--keep", "1"], "y\n", env=env, cwd=plug.project)
    assert said.code == 0 and "[y/N]" not in said.shown  # one left to go
    assert all(versions(home) == made[2:] for home in homes.values())


# -- exec and ssh on several hosts --------------------------------------------------


def test_exec_runs_on_every_host_with_prefixed_lines_or_on_one_with_host(plug: Plug, homes) -> None:
    plug.ok("deploy")
    run = plug("exec", "--", "sh", "-c", 'echo "home $PLUGBOX_HOME"; echo "to stderr" >&2; '
                                         'case $PLUGBOX_HOME in *fleet-b*) exit 7;; esac')
    assert run.code == 7
    for alias in HOSTS:
        assert f"{alias}: home {homes[alias]}" in run.err
        assert f"{alias}: to stderr" in run.err

    one = plug.ok("exec", "--host", "fleet-c", "--", "sh", "-c", 'echo "$PLUGBOX_HOME"')
    assert one.out == f"{homes['fleet-c']}\n"

    unknown = plug("exec", "--host", "fleet-z", "--", "true")
    assert unknown.code == 2
    assert one_line_error(unknown) == ("plug: no host 'fleet-z' in plugbox.toml; "
                                       "the hosts are fleet-a, fleet-b, fleet-c")
    shell = plug("ssh")
    assert shell.code == 2
    assert one_line_error(shell) == ("plug: plug ssh opens one shell, and plugbox.toml names 3 hosts; "
                                     "choose one with --host NAME (fleet-a, fleet-b, fleet-c)")


def test_a_dry_run_names_the_one_version_every_host_would_get(plug: Plug, homes) -> None:
    plug.ok("deploy")
    run = plug.ok("deploy", "--dry-run")
    named = [line for line in run.out.splitlines() if line.startswith("would make version")]
    assert len(named) == 1 and "after every host's newest" in named[0], run.out
    for alias in HOSTS:
        assert f"{alias}: files: would send 0" in run.out


# -- a fleet deploy interrupted ------------------------------------------------------


def staging_of(home: Path) -> list[str]:
    deploy = home / "deploy"
    return sorted(e for e in os.listdir(deploy) if e.startswith(".new-")) if deploy.exists() else []


def test_plug_killed_during_post_upload_leaves_every_host_as_it_was(plug: Plug, homes, tmp_path: Path) -> None:
    write_fleet_config(plug.project, post_upload=['touch "$PLUGBOX_HOME/in-post-upload"; sleep 5'])
    good = plug.ok("deploy") and live(homes["fleet-a"])
    for home in homes.values():
        (home / "in-post-upload").unlink()
    (plug.project / "app" / "a.txt").write_text("two\n")
    process = plug.start("deploy", log=tmp_path / "plug.log")
    wait_for(lambda: all((home / "in-post-upload").exists() for home in homes.values()),
             "post_upload to run on every host")

    process.kill()
    process.wait(timeout=TIMEOUT)

    # Each host sees its caller gone before the switch: it removes the new version.
    wait_for(lambda: all(versions(home) == [good] and not staging_of(home) for home in homes.values()),
             lambda: f"every host back to {good} alone: {[versions(h) for h in homes.values()]}", TIMEOUT)
    assert lives(homes) == {alias: good for alias in HOSTS}
    wait_for(lambda: not processes_naming(str(plug.ssh_config)), "no ssh process of plug left")
    assert plug.ok("check").out.count("ok") == 3


def test_ctrl_c_before_the_switch_calls_the_deploy_off_everywhere(plug: Plug, homes) -> None:
    write_fleet_config(plug.project, post_upload=['touch "$PLUGBOX_HOME/in-post-upload"; sleep 5'])
    good = plug.ok("deploy") and live(homes["fleet-a"])
    for home in homes.values():
        (home / "in-post-upload").unlink()
    (plug.project / "app" / "a.txt").write_text("two\n")

    seen = on_terminal([str(PLUG), "deploy"], "\x03", env=plug.environ(), cwd=plug.project,
                       type_when=lambda: all((h / "in-post-upload").exists() for h in homes.values()))

    assert seen.code == 130, seen.shown
    assert "interrupted before the switch; nothing changed on any host" in seen.shown
    wait_for(lambda: all(versions(home) == [good] and not staging_of(home) for home in homes.values()),
             "every host to remove the new version", TIMEOUT)
    assert lives(homes) == {alias: good for alias in HOSTS}


# A check that, on the host whose home holds `hold`, says so (`held`) and waits until the
# test removes `hold` (at most a minute).
HELD_CHECK = ['test ! -e "$PLUGBOX_HOME/hold" || { touch "$PLUGBOX_HOME/held"; i=0; '
              'while [ -e "$PLUGBOX_HOME/hold" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; }']


def test_plug_killed_mid_switch_leaves_switched_hosts_switched_and_the_others_as_they_were(
        plug: Plug, homes, tmp_path: Path) -> None:
    # One host at a time; fleet-b's check waits until the test lets it go.
    write_fleet_config(plug.project, check=HELD_CHECK)
    good = plug.ok("deploy") and live(homes["fleet-a"])
    (homes["fleet-b"] / "hold").touch()
    (plug.project / "app" / "a.txt").write_text("two\n")
    process = plug.start("deploy", "--batch", "1", log=tmp_path / "plug.log")
    wait_for(lambda: (homes["fleet-b"] / "held").exists(), "fleet-b's check to run")
    new = live(homes["fleet-b"])

    process.kill()
    process.wait(timeout=TIMEOUT)
    (homes["fleet-b"] / "hold").unlink()

    # Switched hosts keep the switch (the caller gone after it); fleet-c, never told to
    # switch, calls it off: what plug said it would ("those hosts finish by themselves").
    wait_for(lambda: not staging_of(homes["fleet-c"]) and versions(homes["fleet-c"]) == [good],
             "fleet-c to call the deploy off", TIMEOUT)
    assert lives(homes) == {"fleet-a": new, "fleet-b": new, "fleet-c": good}
    status = plug("status")
    assert f"live versions differ: fleet-a, fleet-b on {new}; fleet-c on {good}" in status.out


def test_a_connection_lost_in_the_switch_reverts_the_others_and_says_the_lost_host_finishes(
        plug: Plug, homes, fleet: Fleet) -> None:
    write_fleet_config(plug.project, check=HELD_CHECK)
    good = plug.ok("deploy") and live(homes["fleet-a"])
    (homes["fleet-b"] / "hold").touch()
    (plug.project / "app" / "a.txt").write_text("two\n")
    log = fleet.root / "lost.log"
    process = plug.start("deploy", log=log)
    wait_for(lambda: (homes["fleet-b"] / "held").exists(), "fleet-b's check to run")

    cut_connections(fleet.servers["fleet-b"])
    (homes["fleet-b"] / "hold").unlink()

    assert process.wait(timeout=TIMEOUT) == 255, log.read_text()
    said = log.read_text()
    assert "plug lost fleet-b, which finishes by itself" in said, said
    rows = table(said)
    assert rows["fleet-b"][:2] == ["?", "lost:"]
    wait_for(lambda: live(homes["fleet-a"]) == good and live(homes["fleet-c"]) == good,
             "fleet-a and fleet-c to be back on the version they had")


def cut_connections(server: Sshd) -> None:
    """Kill every sshd process of the server's connections (not the commands they run):
    the connections drop, as when a network goes."""
    pending, sshds = [server.process.pid], []
    while pending:
        for pid in children(pending.pop()):
            pending.append(pid)
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    sshds.append(pid)
            except OSError:
                pass
    for pid in sshds:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


# -- rsync's own words, with their host ----------------------------------------------


def test_rsyncs_own_messages_are_prefixed_with_their_host(plug: Plug, homes, tmp_path: Path) -> None:
    # An rsync that says a word on stderr before it does its work.
    wrapper = tmp_path / "bin" / "rsync"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "rsync: a word from rsync" >&2\nexec {shutil.which("rsync")} "$@"\n')
    wrapper.chmod(0o755)
    plug.env["PATH"] = f"{wrapper.parent}:{os.environ['PATH']}"

    run = plug.ok("deploy")

    said = [line for line in run.err.splitlines() if "a word from rsync" in line]
    assert sorted(said) == [f"{alias}: rsync: a word from rsync" for alias in HOSTS], run.err


# -- the environment on several hosts -------------------------------------------------


def test_an_environment_change_goes_to_every_host_under_one_name(plug: Plug, homes) -> None:
    plug.ok("deploy")
    done = subprocess.run([str(PLUG), "env", "set", "KEY"], input="fleet-secret\n", cwd=plug.project,
                          env=plug.environ(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    name = live(homes["fleet-a"])
    assert lives(homes) == {alias: name for alias in HOSTS}
    assert f"version {name} is live on 3 hosts" in done.stdout
    assert "fleet-secret" not in done.stdout + done.stderr
    for home in homes.values():
        assert (home / "deploy" / ".plugbox" / name / "env").read_text() == "KEY=fleet-secret\n"
    listed = plug.ok("env").out
    assert all(f"{alias}: KEY" in listed for alias in HOSTS)
    # The fleet rolls back together, and the old environment with it.
    plug.ok("rollback")
    ran = plug.ok("exec", "--", "sh", "-c", 'echo "[${KEY:-}]"')
    assert all(f"{alias}: []" in ran.err for alias in HOSTS)


# -- the release step: once per deploy, before anyone switches --------------------------


def traced_hooks(trace: Path, **extra: list[str]) -> dict[str, list[str]]:
    """Hooks that append `HOST HOOK` to one trace file shared by the hosts (they are
    all on this machine), the host taken from its home's name."""
    def line(hook: str) -> str:
        return f'echo "$(basename "$PLUGBOX_HOME" -home) {hook}" >> {trace}'
    hooks = {hook: [line(hook)] for hook in ("post_upload", "release", "start")}
    for hook, lines in extra.items():
        hooks[hook] = hooks.get(hook, []) + lines
    return hooks


def write_release_config(project: Path, trace: Path, tables: str = "", **extra: list[str]) -> None:
    """The fleet's plugbox.toml with traced hooks (and `extra` lines after them), and
    more `tables` ([release], [timeouts])."""
    write_fleet_config(project, extra=tables, **traced_hooks(trace, **extra))


def test_the_release_step_runs_once_on_the_named_host_after_every_post_upload_before_any_switch(
        plug: Plug, homes, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    write_release_config(plug.project, trace, '[release]\nhost = "fleet-b"\n')

    run = plug.ok("deploy")

    lines = trace.read_text().splitlines()
    assert [line for line in lines if line.endswith(" release")] == ["fleet-b release"]
    released = lines.index("fleet-b release")
    assert sorted(lines[:released]) == [f"{alias} post_upload" for alias in HOSTS]
    assert sorted(lines[released + 1:]) == [f"{alias} start" for alias in HOSTS]
    assert "fleet-b: ==> release step of" in run.err
    # A rollback never runs it.
    (plug.project / "app" / "a.txt").write_text("two\n")
    plug.ok("deploy")
    trace.unlink()
    plug.ok("rollback")
    assert "release" not in trace.read_text()


def test_a_failed_release_switches_nothing_and_removes_the_version_everywhere(
        plug: Plug, homes, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    write_release_config(plug.project, trace)
    good = plug.ok("deploy") and live(homes["fleet-a"])
    write_release_config(plug.project, trace, release=["echo the migration broke >&2; exit 3"])
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy")

    assert run.code == 4
    message = one_line_error(run)
    assert "the release step failed on fleet-a" in message and "no host switched" in message, message
    assert lives(homes) == {alias: good for alias in HOSTS}
    assert all(versions(home) == [good] for home in homes.values())
    assert "the migration broke" in plug.ok("log", "--output").out


def test_when_changed_skips_the_release_and_says_so(plug: Plug, homes, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    (plug.project / "app" / "migrations").mkdir()
    (plug.project / "app" / "migrations" / "0001.sql").write_text("create table t;\n")
    write_release_config(plug.project, trace, '[release]\nwhen_changed = ["app/migrations"]\n')
    plug.ok("deploy")
    trace.unlink()

    (plug.project / "app" / "a.txt").write_text("two\n")
    run = plug.ok("deploy")
    assert "release" not in trace.read_text()
    assert "fleet-a: ==> release step skipped: none of app/migrations changed since" in run.err

    (plug.project / "app" / "migrations" / "0002.sql").write_text("alter table t;\n")
    plug.ok("deploy")
    assert trace.read_text().count(" release") == 1


def test_a_release_past_its_time_limit_is_killed_and_switches_nothing(plug: Plug, homes, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    write_release_config(plug.project, trace)
    good = plug.ok("deploy") and live(homes["fleet-a"])
    write_release_config(plug.project, trace, '[timeouts]\nrelease = 1\n', release=["sleep 30"])
    (plug.project / "app" / "a.txt").write_text("two\n")

    run = plug("deploy")

    assert run.code == 4
    assert "time limit of 1 s ran out" in run.err
    assert lives(homes) == {alias: good for alias in HOSTS}
