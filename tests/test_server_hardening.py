"""`plugbox` tried the way an attacker or a bad day would: links planted where plugbox
writes, a full disk, hooks that hang or leave daemons behind, odd homes.

Real files and real processes throughout. The full-disk cases run on a small
tmpfs mounted for the test (root only); where mounting is not permitted they skip
and say why. CI runs as root, so there they run.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers import TIMEOUT, WAIT_FOR_GO, fill_inodes, one_line, small_disk, toml_of, tracing, wait_for  # noqa: F401 (a fixture)
from plugbox_host import PLUGBOX, Host
from plugbox_server import hooks, store as store_module
from plugbox_server.errors import HookFailed
from plugbox_server.names import new_version_name


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "home", tmp_path / "ctl")


def run_env(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PLUGBOX, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


# --- 1. bookkeeping files are never followed through a link -------------------------------


@pytest.mark.parametrize("name", [".lock", ".log", ".output"])
@pytest.mark.parametrize("command", [["next-version"], ["check", "--repair"], ["prune"]])
def test_a_bookkeeping_file_replaced_by_a_link_is_refused_and_never_written(
        host: Host, tmp_path: Path, name: str, command: list[str]) -> None:
    host.deploy_version(toml_of({"start": ["echo started"]}))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (host.deploy / name).unlink(missing_ok=True)
    (host.deploy / name).symlink_to(victim)
    before = host.versions()

    done = host.run(*command)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"plugbox: deploy/{name} is a symbolic link"), line
    assert victim.read_text() == "precious\n"
    assert host.versions() == before


def test_check_names_a_bookkeeping_file_that_is_not_a_regular_file(host: Host) -> None:
    host.deploy_version()
    (host.deploy / ".log").unlink()
    (host.deploy / ".log").mkdir()

    done = host.run("check")

    assert done.returncode == 1
    assert "problem: deploy/.log is not a regular file" in done.stdout
    assert one_line(host.run("next-version").stderr).startswith("plugbox: deploy/.log is a directory")


def test_log_never_shows_a_file_through_a_link(host: Host, tmp_path: Path) -> None:
    host.deploy_version()
    secret = tmp_path / "secret"
    secret.write_text("the secret\n")
    (host.deploy / ".log").unlink()
    (host.deploy / ".log").symlink_to(secret)

    done = host.run("log")

    assert done.returncode == 1
    assert "the secret" not in done.stdout + done.stderr
    assert one_line(done.stderr).startswith("plugbox: deploy/.log is a symbolic link")


def test_a_deploy_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "deploy").symlink_to(elsewhere)

    done = run_env({**os.environ, "PLUGBOX_HOME": str(home)}, "next-version")

    assert done.returncode == 1
    assert "deploy is a symbolic link" in one_line(done.stderr)
    assert list(elsewhere.iterdir()) == []


# --- 2. shared paths are never made through a link ----------------------------------------------


def test_a_shared_path_through_an_uploaded_link_is_refused(host: Host, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "alink").write_text("keep me\n")
    old = host.deploy_version()
    new = host.upload(toml_of(tracing("NEW"), shared=["data/alink", "data/uploads"]))
    (host.deploy / new / "data").symlink_to(canary)

    done = host.run("upgrade-to", new)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"deploy/{new}/data is a symbolic link" in line, line
    assert sorted(p.name for p in canary.iterdir()) == ["alink"]
    assert (canary / "alink").read_text() == "keep me\n"
    assert host.live() == old
    assert host.trace() == []  # refused before post_upload
    assert not (host.home / "shared").exists()


def test_a_shared_directory_that_is_a_link_is_refused(host: Host, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    host.home.mkdir()
    (host.home / "shared").symlink_to(canary)
    new = host.upload(toml_of(shared=["media"]))

    done = host.run("upgrade-to", new)

    assert done.returncode == 1
    assert "shared is a symbolic link" in one_line(done.stderr)
    assert list(canary.iterdir()) == []
    assert host.live() is None


def test_a_link_left_at_a_shared_path_is_replaced_not_followed(host: Host, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    new = host.upload(toml_of(shared=["media"]))
    (host.deploy / new / "media").symlink_to(canary)

    host.ok("upgrade-to", new)

    assert os.readlink(host.deploy / new / "media") == "../../shared/media"
    assert list(canary.iterdir()) == []


# --- 3 and 4. a full disk: nothing left to repair, the service never left stopped --------------


def test_next_version_on_a_disk_out_of_inodes_leaves_nothing_behind(
        small_disk: Path, tmp_path: Path) -> None:
    host = Host(small_disk / "home", tmp_path / "ctl")
    live = host.deploy_version()
    fill_inodes(small_disk / "filler", leave=1)
    entries = sorted(os.listdir(host.deploy))

    done = host.run("next-version")

    assert done.returncode == 1
    assert "No space left on device" in one_line(done.stderr)
    assert sorted(os.listdir(host.deploy)) == entries  # no .new-NAME left behind
    assert host.ok("check").stdout == "ok\n"
    for path in list((small_disk / "filler").iterdir())[:10]:
        path.unlink()
    assert host.deploy_version() != live  # and no repair was needed


def test_upgrade_whose_switch_fails_after_the_stop_starts_the_live_version_again(
        small_disk: Path, tmp_path: Path) -> None:
    host = Host(small_disk / "home", tmp_path / "ctl")
    # The stop hook takes every free inode: switching live then fails (ENOSPC),
    # whatever the steps before it (the version's record, live's next) used.
    eat = ('mkdir -p "$PLUGBOX_HOME/eaten"; i=0; '
           'while [ $i -lt 1000 ] && touch "$PLUGBOX_HOME/eaten/$i" 2>/dev/null; do i=$((i+1)); done')
    old = host.deploy_version(toml_of(tracing("OLD", extra={"stop": [eat]})))
    new = host.upload(toml_of(tracing("NEW")))
    host.trace()
    fill_inodes(small_disk / "filler", leave=30)  # the record, live's next, the hooks

    done = host.run("upgrade-to", new)

    assert done.returncode == 4, done.stderr
    assert host.live() == old
    assert host.trace() == [f"NEW post_upload {new} {old}", f"OLD stop {old} {old}",
                            f"OLD start {old} {old}"]
    assert "No space left on device" in done.stderr
    assert f"starting {old} again" in done.stderr
    assert done.stderr.splitlines()[-1].endswith(f"nothing switched, {old} is up again")
    shutil.rmtree(host.home / "eaten")
    assert host.ok("check").stdout == "ok\n"


def test_rollback_whose_switch_fails_after_the_stop_starts_the_live_version_again(
        small_disk: Path, tmp_path: Path) -> None:
    host = Host(small_disk / "home", tmp_path / "ctl")
    eat = 'touch "$PLUGBOX_HOME/eaten"'
    first = host.deploy_version(toml_of(tracing("FIRST")))
    second = host.deploy_version(toml_of(tracing("SECOND", extra={"stop": [eat]})))
    host.trace()
    fill_inodes(small_disk / "filler", leave=1)

    done = host.run("rollback-to")

    assert done.returncode == 4, done.stderr
    assert host.live() == second
    assert host.trace() == [f"SECOND stop {second} {second}", f"SECOND start {second} {second}"]
    assert f"starting {second} again" in done.stderr
    assert host.ok("check").stdout == "ok\n"
    assert first in host.versions()


def test_a_remove_that_cannot_re_point_on_a_full_disk_removes_nothing(
        small_disk: Path, tmp_path: Path) -> None:
    host = Host(small_disk / "home", tmp_path / "ctl")
    first, middle, last = (host.deploy_version() for _ in range(3))
    fill_inodes(small_disk / "filler", leave=0)

    done = host.run("remove", "-v", middle)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "No space left on device; nothing removed" in line, line
    assert host.versions() == {first, middle, last}
    assert host.ok("check").stdout == "ok\n"


# --- 5 and 6. hooks: time limits, daemons, callers that go away ----------------------------------


def test_a_hook_past_its_time_limit_is_killed_with_its_group_and_counts_as_failed(
        host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    hung = 'sleep 1000 & echo $! > "$CTL/child"; wait'
    new = host.upload(toml_of(tracing("NEW", extra={"check": [hung]}))
                      + "[timeouts]\ncheck = 1\n")

    done = host.run("upgrade-to", new)

    assert done.returncode == 4, done.stderr
    assert f"check of {new} failed: {hung!r} was still running when the check time limit " \
           "of 1 s ran out, and was killed" in done.stderr
    assert host.live() == old
    child = int((host.ctl / "child").read_text())
    wait_for(lambda: not _alive(child), "the hook's child to end: it outlived the kill")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; only its parent (long gone, so init) has yet to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_hook_that_ignores_term_is_killed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hooks, "GRACE", 0.5)
    kept = []
    with pytest.raises(HookFailed, match="time limit of 0.5 s ran out, and was killed"):
        hooks.run("stop", ["trap '' TERM; echo stubborn; while :; do sleep 1; done"],
                  version="V", cwd=tmp_path, env=dict(os.environ), timeout=0.5,
                  keep=kept.append)
    assert b"stubborn\n" in b"".join(kept)


def test_a_malformed_time_limit_is_refused_naming_the_file(host: Host) -> None:
    new = host.upload(toml_of({"start": ["true"]}) + '[timeouts]\nstart = "soon"\n')
    done = host.run("upgrade-to", new)
    assert done.returncode == 1
    assert f"deploy/{new}/plugbox.toml: [timeouts] start: 'soon' is not a number of seconds" in one_line(done.stderr)


def test_a_daemon_left_holding_the_output_does_not_keep_plugbox_waiting(host: Host) -> None:
    # The daemon keeps the hook's output open for 1000 s; plugbox is bounded by TIMEOUT.
    start = ['echo starting; sleep 1000 & echo $! > "$CTL/daemon"']
    try:
        done = host.run("upgrade-to", host.upload(toml_of({"start": start})))
        assert done.returncode == 0, done.stderr
        assert "starting\n" in done.stdout
    finally:
        daemon = host.ctl / "daemon"
        if daemon.exists():
            os.kill(int(daemon.read_text()), 9)


def test_hook_output_is_kept_on_the_host_even_after_the_caller_went_away(host: Host) -> None:
    old = host.deploy_version(toml_of({"start": ["echo old is up"]}))
    new = host.upload(toml_of({"start": ['touch "$CTL/started"', WAIT_FOR_GO,
                                         "echo said after the caller left"]}))
    process = subprocess.Popen([PLUGBOX, "upgrade-to", new], env=host.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for((host.ctl / "started").exists, "the start hook to begin")
        process.stdout.close()
        process.stderr.close()
        host.arm("go")
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)
    assert process.returncode == 0
    assert host.live() == new

    kept = host.ok("log", "--output").stdout
    assert "old is up\n" in kept
    assert "said after the caller left\n" in kept
    assert kept.index(f"plugbox upgrade-to {old}") < kept.index(f"plugbox upgrade-to {new}")
    assert f"--- start of {new}: echo said after the caller left\n" in kept
    assert old != new


def test_log_output_of_a_home_without_hooks(host: Host) -> None:
    host.deploy_version()
    assert host.ok("log", "--output").stdout == "no hook output kept\n"


def test_the_kept_output_is_bounded_by_rotation(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "OUTPUT_LIMIT", 1000)
    home = tmp_path / "home"
    (home / "deploy").mkdir(parents=True)
    store = store_module.Store(home)
    for n in range(5):
        record = store.output_record(f"upgrade-to V{n}")
        for _ in range(30):
            record.write(b"x" * 99 + b"\n")
        record.close()
    kept = home / "deploy" / ".output"
    assert kept.stat().st_size <= 1000 + 100
    assert (home / "deploy" / ".output.1").stat().st_size <= 1000 + 100
    # Both files together hold about twice the limit: the newest output, not the oldest.
    assert b"upgrade-to V4" in store.read_output()
    assert b"upgrade-to V0" not in store.read_output()


# --- 7. prune in one pass --------------------------------------------------------------------------


def test_prune_of_many_versions_leaves_a_sound_chain(host: Host) -> None:
    names = [host.deploy_version() for _ in range(3)]
    pending = host.upload()
    # 200 more, made directly on disk as a long previous chain behind the oldest.
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    made = [new_version_name([], now=start + timedelta(seconds=i)) for i in range(200)]
    for i, name in enumerate(made):
        (host.deploy / name).mkdir()
        if i:
            (host.deploy / name / "previous").symlink_to(f"../{made[i - 1]}")
        nxt = made[i + 1] if i + 1 < len(made) else names[0]
        (host.deploy / name / "next").symlink_to(f"../{nxt}")
    (host.deploy / names[0] / "previous").symlink_to(f"../{made[-1]}")
    host.ok("check")

    done = host.ok("prune", "--keep", "3")

    assert done.stdout.count("plugbox: removed ") == len(made) + 1
    assert host.versions() == set(names)
    assert pending not in host.versions()
    assert not (host.deploy / names[0] / "previous").is_symlink()
    assert host.ok("check").stdout == "ok\n"


# --- 8. odd homes -------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PLUGBOX_HOME", "HOME")}
    return env | extra


@pytest.mark.parametrize("command", [["next-version"], ["status"], ["check", "--repair"]])
def test_an_empty_home_option_is_refused(tmp_path: Path, command: list[str]) -> None:
    done = run_env(clean_env(HOME=str(tmp_path / "h")), "--home", "", *command, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("plugbox: --home is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variable", ["HOME", "PLUGBOX_HOME"])
def test_an_empty_home_from_the_environment_is_refused(tmp_path: Path, variable: str) -> None:
    env = clean_env(HOME=str(tmp_path / "h")) | {variable: ""}
    done = run_env(env, "next-version", cwd=tmp_path)
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(f"plugbox: {variable} is")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["check"], ["check", "--repair"], ["prune"], ["status"],
                                     ["next-version"], ["log"]])
def test_a_home_that_is_a_file_is_refused(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "file"
    home.write_text("not a home\n")
    done = run_env(clean_env(PLUGBOX_HOME=str(home)), *command)
    assert done.returncode == 1
    assert one_line(done.stderr) == f"plugbox: {home}: the home is not a directory; " \
                                    "give the service's home with --home DIR or PLUGBOX_HOME"
    assert home.read_text() == "not a home\n"


def test_messages_and_hook_output_can_go_to_stderr_leaving_stdout_to_data(
        tmp_path: Path, monkeypatch, capfd) -> None:
    from plugbox_server import output
    monkeypatch.setattr(output, "_messages_to_stderr", False)
    output.messages_to_stderr()
    hooks.run("check", ["echo from the hook; echo to its stderr >&2"], version="V",
              cwd=tmp_path, env=dict(os.environ))
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ("plugbox: check of V: echo from the hook; echo to its stderr >&2\n"
                   "from the hook\nto its stderr\n")


# --- what an interrupted command leaves never blocks the next one ---------------------


def test_leftovers_of_interrupted_commands_never_block_a_rollback(tmp_path: Path) -> None:
    host = Host(tmp_path / "home", tmp_path / "ctl")
    first = host.deploy_version()
    second = host.deploy_version()
    staging = host.deploy / ".new-20991231T000000Z"
    (staging / "app").mkdir(parents=True)
    for i in range(50):
        (staging / "app" / f"{i}.txt").write_text("half uploaded")
    os.symlink("../nowhere", host.deploy / ".link-4242-7")
    orphan = host.deploy / ".plugbox" / "20200101T000000Z"
    orphan.mkdir()
    (orphan / "record.json").write_text("{}")
    assert host.run("check").returncode == 1

    done = host.run("rollback-to")

    assert done.returncode == 0, done.stderr
    assert host.live() == first
    said = done.stderr
    assert "cleared deploy/.new-20991231T000000Z: a leftover unfinished new version" in said
    assert "cleared deploy/.link-4242-7: a leftover temporary link" in said
    assert sorted(e for e in os.listdir(host.deploy) if e.startswith(".")) == [".lock", ".log", ".plugbox"]
    assert "cleared 2 leftovers of interrupted commands" in host.ok("log").stdout
    # A record of no version is not in deploy/'s own listing, which is all a rollback
    # reads: it blocks nothing, and check finds it (plugbox's own commands remove a
    # version's record before its directory, so only a hand leaves one).
    checked = host.run("check")
    assert checked.returncode == 1
    assert "deploy/.plugbox/20200101T000000Z: the record of no version" in checked.stdout
    assert "repaired: deploy/.plugbox/20200101T000000Z" in host.ok("check", "--repair").stdout
    assert sorted(os.listdir(host.deploy / ".plugbox")) == sorted([first, second])
    assert host.ok("check").stdout == "ok\n"


def test_the_staging_directory_goes_even_while_a_writer_renames_files_in_it(tmp_path: Path) -> None:
    """What rsync does in a staging directory when its caller went away: it goes on
    writing temporary files and renaming them. Removing the staging directory stops
    it and deletes the whole tree, entries vanishing under the walk included."""
    from plugbox_server.store import Store

    store = Store(tmp_path / "home")
    store.make_deploy()
    staging = store.make_staging("20261205T000000Z", None)
    for i in range(2000):
        (staging / f"{i:04d}").write_text("x")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, itertools\n"
        "for i in itertools.count():\n"
        "    open(f'.tmp{i}', 'w').close(); os.rename(f'.tmp{i}', f'new{i}')\n"
        "    if i > 100: os.unlink(f'new{i - 100}')\n")], cwd=staging)
    try:
        wait_for(lambda: any(name.startswith("new") for name in os.listdir(staging)), "the writer")
        store.remove_staging("20261205T000000Z")
        assert not os.path.lexists(staging)
        assert writer.wait(timeout=TIMEOUT) != 0  # stopped, not finished
    finally:
        writer.kill()
        writer.wait(timeout=TIMEOUT)


def test_finishing_a_remove_never_deletes_a_record_through_a_linked_plugbox_directory(tmp_path: Path) -> None:
    """deploy/.plugbox made a link to somewhere else, and a remove left half done: the
    next command finishes the remove and deletes nothing there (plugbox never
    writes through a link)."""
    host = Host(tmp_path / "home", tmp_path / "ctl")
    first = host.deploy_version()
    host.deploy_version()
    host.deploy_version()
    os.rename(host.deploy / first, host.deploy / f".removing-{first}")  # a remove cut short
    elsewhere = tmp_path / "elsewhere"
    os.rename(host.deploy / ".plugbox", elsewhere)
    os.symlink(elsewhere, host.deploy / ".plugbox")

    done = host.run("rollback-to")

    assert f"cleared deploy/.removing-{first}" in done.stderr
    assert not os.path.lexists(host.deploy / f".removing-{first}")
    assert (elsewhere / first / "record.json").is_file()
