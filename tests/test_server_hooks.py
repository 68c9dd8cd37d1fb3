"""Hooks of the `plugbox` executable, run for real: real files, real /bin/sh, real processes.

Each version brings its own plugbox.toml, written into the version's directory
after `plugbox next-version`, as the client's upload would. The hooks append
lines to a trace file in a control directory of the test (`$CTL`), so the test
reads back which hook of which version ran, where, and what live was then.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import TIMEOUT, WAIT_FOR_GO, one_line, toml_of, tracing, wait_for
from plugbox_host import PLUGBOX, Host

HOOK_KEYS = ("post_upload", "stop", "start", "refresh", "check")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "home", tmp_path / "ctl")


def fails_when_armed(flag: str) -> str:
    """A hook line that fails while $CTL/<flag> exists, and succeeds otherwise."""
    return f'test ! -e "$CTL/{flag}"'


# --- environment and working directory -----------------------------------------------


ENV_LINE = ('echo "$0 pwd=$(pwd -P) home=$PLUGBOX_HOME version=$PLUGBOX_VERSION '
            'dir=$PLUGBOX_VERSION_DIR previous=[$PLUGBOX_PREVIOUS]" >> "$CTL/env"')


def env_hooks() -> dict[str, list[str]]:
    # $0 of `sh -c LINE` is "sh"; tell the hooks apart by the word each one echoes.
    return {key: [ENV_LINE.replace('"$0 ', f'"{key} ')] for key in
            ("post_upload", "stop", "start", "check")}


def test_hooks_get_the_environment_and_run_where_plugbox_1_says(host: Host) -> None:
    first = host.deploy_version(toml_of(env_hooks()))
    second = host.deploy_version(toml_of(env_hooks()))

    home = os.path.realpath(host.home)
    lines = (host.ctl / "env").read_text().splitlines()
    first_dir, second_dir = host.deploy / first, host.deploy / second
    assert lines == [
        f"post_upload pwd={os.path.realpath(first_dir)} home={host.home} version={first} "
        f"dir={first_dir} previous=[]",
        f"start pwd={home} home={host.home} version={first} dir={first_dir} previous=[]",
        f"check pwd={home} home={host.home} version={first} dir={first_dir} previous=[]",
        f"post_upload pwd={os.path.realpath(second_dir)} home={host.home} version={second} "
        f"dir={second_dir} previous=[{first}]",
        f"stop pwd={home} home={host.home} version={first} dir={first_dir} previous=[]",
        f"start pwd={home} home={host.home} version={second} dir={second_dir} "
        f"previous=[{first}]",
        f"check pwd={home} home={host.home} version={second} dir={second_dir} "
        f"previous=[{first}]",
    ]
    assert Path(lines[0].split(" dir=")[1].split(" ")[0]).is_absolute()


def test_home_given_with_the_option_reaches_the_hooks(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PLUGBOX_HOME"} | {"CTL": str(ctl)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PLUGBOX, "--home", str(home), *args], env=env, text=True,
                              capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

    name = run("next-version").stdout.strip()
    (home / "deploy" / name / "plugbox.toml").write_text(
        toml_of({"start": ['echo "$PLUGBOX_HOME $(pwd -P)" >> "$CTL/trace"']}))
    done = run("upgrade-to", name)
    assert done.returncode == 0, done.stderr
    assert (ctl / "trace").read_text() == f"{home} {os.path.realpath(home)}\n"


def test_a_version_without_plugbox_toml_or_without_hooks_has_no_hooks(host: Host) -> None:
    first = host.deploy_version(None)
    second = host.deploy_version(toml_of(shared=[]))
    assert host.live() == second
    host.ok("rollback-to")
    assert host.live() == first
    assert not (host.ctl / "trace").exists()


# --- order of steps ---------------------------------------------------------------------


def test_upgrade_runs_post_upload_stop_switch_start_check_in_order(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW")))

    done = host.ok("upgrade-to", new)

    # Each hook comes from its own version's plugbox.toml; the switch falls between
    # the old version's stop and the new one's start.
    assert host.trace() == [
        f"NEW post_upload {new} {old}",
        f"OLD stop {old} {old}",
        f"NEW start {new} {new}",
        f"NEW check {new} {new}",
    ]
    assert f"plugbox: live is now {new}" in done.stdout
    assert os.readlink(host.deploy / old / "next") == f"../{new}"
    assert os.path.realpath(host.home / "live") == str(host.deploy / new)


def test_upgrade_with_refresh_runs_no_stop_and_refresh_instead_of_start(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", *HOOK_KEYS)))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", *HOOK_KEYS)))

    host.ok("upgrade-to", new)

    assert host.trace() == [
        f"NEW post_upload {new} {old}",
        f"NEW refresh {new} {new}",
        f"NEW check {new} {new}",
    ]
    assert host.live() == new


def test_a_first_deploy_starts_even_with_a_refresh_hook(host: Host) -> None:
    # Nothing runs yet to be refreshed.
    first = host.upload(toml_of(tracing("NEW", *HOOK_KEYS)))

    host.ok("upgrade-to", first)

    assert host.trace() == [
        f"NEW post_upload {first} ",
        f"NEW start {first} {first}",
        f"NEW check {first} {first}",
    ]


def test_rollback_runs_stop_start_check_and_never_post_upload(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", *HOOK_KEYS)))
    new = host.deploy_version(toml_of(tracing("NEW", *HOOK_KEYS)))
    host.trace()

    done = host.ok("rollback-to")

    # Refresh hooks exist on both sides, but a rollback assumes live is broken.
    assert host.trace() == [
        f"NEW stop {new} {new}",
        f"OLD start {old} {old}",
        f"OLD check {old} {old}",
    ]
    assert f"plugbox: live is now {old}" in done.stdout
    # No link was rewritten: the version rolled back from is still old's next.
    assert os.readlink(host.deploy / old / "next") == f"../{new}"

    host.ok("upgrade-to", new)  # rolls forward again, by its refresh
    assert host.trace() == [
        f"NEW post_upload {new} {old}", f"NEW refresh {new} {new}", f"NEW check {new} {new}"]


def test_rollback_refresh_uses_refresh_instead_of_stop_and_start(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", *HOOK_KEYS)))
    new = host.deploy_version(toml_of(tracing("NEW", *HOOK_KEYS)))
    host.trace()

    host.ok("rollback-to", old, "--refresh")

    assert host.trace() == [f"OLD refresh {old} {old}", f"OLD check {old} {old}"]
    assert host.live() == old
    assert new in host.versions()


def test_rollback_refresh_without_a_refresh_hook_is_refused(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    new = host.deploy_version(toml_of(tracing("NEW")))
    host.trace()

    done = host.run("rollback-to", "--refresh")

    assert done.returncode == 1
    assert one_line(done.stderr) == (f"plugbox: {old} has no refresh hook; "
                                     "roll back without --refresh")
    assert host.live() == new
    assert host.trace() == []


# --- failures ---------------------------------------------------------------------------


def test_failing_post_upload_changes_nothing(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", extra={"post_upload": [
        "echo one >> \"$CTL/trace\"", "exit 3", "echo three >> \"$CTL/trace\""]})))

    done = host.run("upgrade-to", new)

    assert done.returncode == 4
    assert one_line(done.stderr) == (
        f"plugbox: post_upload of {new} failed: 'exit 3' exited 3; "
        f"nothing changed, the live version is still {old}")
    # The first failing line stops the list; the old version was never stopped.
    assert host.trace() == [f"NEW post_upload {new} {old}", "one"]
    assert host.live() == old
    assert not os.path.lexists(host.deploy / old / "next")
    assert "live is now" not in done.stdout


@pytest.mark.parametrize("failing", ["start", "check"])
def test_failing_start_or_check_switches_back_and_starts_the_previous(
        host: Host, failing: str) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", extra={failing: ["false", "echo never"]})))

    done = host.run("upgrade-to", new)

    assert done.returncode == 4, done.stderr
    assert host.live() == old
    assert os.path.realpath(host.home / "live") == str(host.deploy / old)
    trace = host.trace()
    assert trace[0] == f"NEW post_upload {new} {old}"
    assert trace[1] == f"OLD stop {old} {old}"
    assert f"NEW {failing} {new} {new}" in trace
    # The previous version is started again once live points at it again.
    assert trace[-1] == f"OLD start {old} {old}"
    # Both things are said: that it failed and switched back, and that old is up again.
    assert f"plugbox: {failing} of {new} failed: 'false' exited 1; switching back to {old}" \
        in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"plugbox: {failing} of {new} failed: 'false' exited 1; "
        f"switched back to {old}, which is up again")
    assert f"plugbox: live is now {new}" in done.stdout
    assert f"plugbox: live is back at {old}" in done.stdout
    assert "never" not in done.stdout
    assert "Traceback" not in done.stderr
    host.ok("check")


def test_failing_refresh_switches_back_and_refreshes_the_previous(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", *HOOK_KEYS)))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", *HOOK_KEYS, extra={"refresh": ["false"]})))

    done = host.run("upgrade-to", new)

    assert done.returncode == 4, done.stderr
    assert host.live() == old
    # Nothing was stopped, so the previous version comes back by its refresh.
    assert host.trace() == [
        f"NEW post_upload {new} {old}",
        f"NEW refresh {new} {new}",
        f"OLD refresh {old} {old}",
    ]
    assert done.stderr.splitlines()[-1].endswith(f"switched back to {old}, which is up again")


def test_a_failing_first_deploy_leaves_no_live_version(host: Host) -> None:
    first = host.upload(toml_of(tracing("V", extra={"check": ["false"]})))

    done = host.run("upgrade-to", first)

    assert done.returncode == 4, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"plugbox: check of {first} failed: 'false' exited 1; there is no live version now")
    assert host.trace() == [
        f"V post_upload {first} ",
        f"V start {first} {first}",
        f"V check {first} {first}",
        f"V stop {first} {first}",
    ]
    assert not os.path.lexists(host.deploy / "live")
    assert not os.path.lexists(host.home / "live")
    host.ok("check")
    second = host.deploy_version(None)
    assert host.live() == second


def test_when_the_previous_cannot_start_again_either_the_exit_is_5(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", extra={
        "start": [fails_when_armed("old-start-fails")]})))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", extra={"check": ["false"]})))
    host.arm("old-start-fails")

    done = host.run("upgrade-to", new)

    assert done.returncode == 5, done.stderr
    assert host.live() == old
    assert host.trace()[-1] == f"OLD start {old} {old}"
    assert done.stderr.splitlines()[-1] == (
        f"plugbox: check of {new} failed: 'false' exited 1; switched back to {old}, "
        f"but start of {old} failed: 'test ! -e \"$CTL/old-start-fails\"' exited 1")
    host.ok("check")


def test_a_failing_stop_in_upgrade_stops_the_upgrade(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", extra={
        "stop": [fails_when_armed("old-stop-fails")]})))
    host.trace()
    new = host.upload(toml_of(tracing("NEW")))
    host.arm("old-stop-fails")

    done = host.run("upgrade-to", new)

    assert done.returncode == 4, done.stderr
    assert host.live() == old
    assert host.trace() == [
        f"NEW post_upload {new} {old}",
        f"OLD stop {old} {old}",
        f"OLD start {old} {old}",
    ]
    stop_failed = f"plugbox: stop of {old} failed: 'test ! -e \"$CTL/old-stop-fails\"' exited 1"
    assert done.stderr.splitlines() == [
        f"{stop_failed}; starting {old} again",
        f"{stop_failed}; nothing switched, the live version is still {old}",
    ]
    assert "live is now" not in done.stdout
    host.ok("check")


def test_a_failing_stop_whose_restart_fails_too_exits_5(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", extra={
        "stop": [fails_when_armed("old-stop-fails")],
        "start": [fails_when_armed("old-start-fails")]})))
    new = host.upload(toml_of(tracing("NEW")))
    host.arm("old-stop-fails")
    host.arm("old-start-fails")

    done = host.run("upgrade-to", new)

    assert done.returncode == 5, done.stderr
    assert host.live() == old
    assert done.stderr.splitlines()[-1] == (
        f"plugbox: stop of {old} failed: 'test ! -e \"$CTL/old-stop-fails\"' exited 1; "
        f"nothing switched, but start of {old} failed: "
        f"'test ! -e \"$CTL/old-start-fails\"' exited 1")
    host.ok("check")


def test_a_failing_stop_in_rollback_is_reported_and_the_rollback_goes_on(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    new = host.deploy_version(toml_of(tracing("NEW", extra={"stop": ["exit 7"]})))
    host.trace()

    done = host.run("rollback-to")

    assert done.returncode == 0, done.stderr
    assert one_line(done.stderr) == (f"plugbox: stop of {new} failed: 'exit 7' exited 7; "
                                     "rolling back all the same")
    assert host.live() == old
    assert host.trace() == [
        f"NEW stop {new} {new}", f"OLD start {old} {old}", f"OLD check {old} {old}"]


def test_the_first_failing_line_stops_the_list(host: Host) -> None:
    host.deploy_version(toml_of({"start": ['echo 1 >> "$CTL/trace"']}))
    new = host.upload(toml_of({"check": [
        'echo a >> "$CTL/trace"', 'echo b >> "$CTL/trace"; exit 1', 'echo c >> "$CTL/trace"']}))
    host.trace()

    done = host.run("upgrade-to", new)

    assert done.returncode == 4
    assert host.trace() == ["a", "b", "1"]
    # Each line is announced before it runs; the one after the failure never is.
    assert "plugbox: check of " + new + ': echo b >> "$CTL/trace"; exit 1' in done.stdout
    assert 'echo c' not in done.stdout


# --- output streams -------------------------------------------------------------------


def read_until(process: subprocess.Popen, wanted: bytes, bound: float = 30.0) -> bytes:
    """Read the process's stdout until `wanted` shows up; fail after `bound` seconds."""
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + bound
        while wanted not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{wanted!r} never arrived; got {seen!r}"
            if selector.select(timeout=left):
                chunk = os.read(process.stdout.fileno(), 4096)
                assert chunk, f"stdout closed before {wanted!r}; got {seen!r}"
                seen += chunk
    return seen


def test_hook_output_streams_while_the_hook_runs(host: Host) -> None:
    host.deploy_version(None)
    new = host.upload(toml_of({"post_upload": ["echo preparing the version", WAIT_FOR_GO]}))

    process = subprocess.Popen([PLUGBOX, "upgrade-to", new], env=host.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    try:
        seen = read_until(process, b"preparing the version\n")
        # The line arrived while the hook still waits for us: it was not held back.
        assert process.poll() is None
        assert b"live is now" not in seen
        host.arm("go")
        rest, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)
    assert process.returncode == 0, seen + rest
    assert f"plugbox: live is now {new}".encode() in rest


# --- a caller that goes away ----------------------------------------------------------------


def test_an_upgrade_goes_on_to_its_end_when_the_caller_goes_away(host: Host) -> None:
    # As when the ssh connection drops, or plug is interrupted: plugbox's pipes close
    # while the start hook runs. It must not die between two steps with the old
    # version stopped and the new one half started.
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", extra={
        "start": ['touch "$CTL/started"', WAIT_FOR_GO, "echo the start hook still talks"],
        "check": ["echo checking"]})))
    process = subprocess.Popen([PLUGBOX, "upgrade-to", new], env=host.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for((host.ctl / "started").exists, "the start hook to begin")
        process.stdout.close()  # the caller is gone
        process.stderr.close()
        host.arm("go")
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)

    assert host.live() == new
    assert host.trace() == [
        f"NEW post_upload {new} {old}", f"OLD stop {old} {old}",
        f"NEW start {new} {new}", f"NEW check {new} {new}"]
    assert host.ok("log").stdout.splitlines()[-1].split()[-1] == "ok"
    host.ok("check")


def test_a_hang_up_does_not_stop_a_command_half_way(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", extra={
        "start": ['touch "$CTL/started"', WAIT_FOR_GO]})))
    process = subprocess.Popen([PLUGBOX, "upgrade-to", new], env=host.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for((host.ctl / "started").exists, "the start hook to begin")
        process.send_signal(signal.SIGHUP)
        host.arm("go")
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)

    assert process.returncode == 0, err
    assert host.live() == new
    assert host.trace()[-1] == f"NEW check {new} {new}"


# --- plugbox.toml errors ------------------------------------------------------------------


BAD_TOMLS = {
    "not toml": ("[hooks\nstart = ['true']\n", "not valid TOML"),
    "unknown hook": ("[hooks]\nrestart = ['true']\n", "[hooks] restart: unknown key"),
    "a string, not a list": ("[hooks]\nstart = 'true'\n", "[hooks] start: must be a list of non-empty strings"),
    "hooks not a table": ("hooks = 3\n", "[hooks]: must be a table"),
}


@pytest.mark.parametrize("kind", BAD_TOMLS)
def test_a_bad_plugbox_toml_is_refused_naming_the_file_and_nothing_changes(
        host: Host, kind: str) -> None:
    text, why = BAD_TOMLS[kind]
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(text)
    before = sorted(os.listdir(host.deploy / old))

    done = host.run("upgrade-to", new)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"plugbox: deploy/{new}/plugbox.toml: ")
    assert why in line
    assert host.live() == old
    assert sorted(os.listdir(host.deploy / old)) == before  # no next link
    assert host.trace() == []
    assert done.stdout == ""


def test_rollback_to_a_version_with_a_bad_plugbox_toml_changes_nothing(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    new = host.deploy_version(toml_of(tracing("NEW")))
    host.ok("rollback-to")
    (host.deploy / new / "plugbox.toml").write_text("[hooks]\nbegin = ['true']\n")
    host.trace()

    for command in (["rollback-to", new], ["upgrade-to", new]):
        done = host.run(*command)
        assert done.returncode == 1, command
        assert one_line(done.stderr).startswith(
            f"plugbox: deploy/{new}/plugbox.toml: [hooks] begin: unknown key")
        # The live version was not even stopped.
        assert host.live() == old
        assert host.trace() == []


def test_a_bad_plugbox_toml_of_the_live_version_refuses_the_upgrade(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    (host.deploy / old / "plugbox.toml").write_text("[hooks]\nstop = [1]\n")
    new = host.upload(toml_of(tracing("NEW")))
    host.trace()

    done = host.run("upgrade-to", new)

    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        f"plugbox: deploy/{old}/plugbox.toml: [hooks] stop: must be a list of non-empty strings")
    assert host.live() == old
    assert host.trace() == []


def test_a_bad_plugbox_toml_of_the_live_version_does_not_block_a_rollback(host: Host) -> None:
    # rollback-to is how one leaves a broken version; its stop cannot be read, so it is
    # reported and skipped, as a failing stop is.
    old = host.deploy_version(toml_of(tracing("OLD")))
    new = host.deploy_version(toml_of(tracing("NEW")))
    (host.deploy / new / "plugbox.toml").write_text("[hooks]\nstop = [1]\n")
    host.trace()

    done = host.run("rollback-to")

    assert done.returncode == 0, done.stderr
    assert one_line(done.stderr) == (
        f"plugbox: deploy/{new}/plugbox.toml: [hooks] stop: must be a list of non-empty strings, "
        "not list [1]; rolling back all the same")
    assert host.live() == old
    assert host.trace() == [f"OLD start {old} {old}", f"OLD check {old} {old}"]


# --- shared paths -------------------------------------------------------------------------


def test_shared_paths_are_relative_links_into_home_shared_made_before_post_upload(
        host: Host) -> None:
    post_upload = [
        # Created empty before post_upload, which can write through the links.
        'find media/ var/log/ -mindepth 1 | wc -l >> "$CTL/trace"',
        "echo picture > media/cat.jpg",
        "echo started >> var/log/app.log",
    ]
    first = host.deploy_version(toml_of({"post_upload": post_upload},
                                        shared=["media", "var/log"]))
    shared = host.home / "shared"
    assert (shared / "media" / "cat.jpg").read_text() == "picture\n"
    assert (shared / "var" / "log" / "app.log").read_text() == "started\n"
    assert os.readlink(host.deploy / first / "media") == "../../shared/media"
    assert os.readlink(host.deploy / first / "var" / "log") == "../../../shared/var/log"
    assert host.trace() == ["0"]

    # The next version sees the same data, and removing a version keeps it.
    second = host.deploy_version(toml_of(
        {"post_upload": ['cat media/cat.jpg var/log/app.log >> "$CTL/trace"']},
        shared=["media", "var/log"]))
    assert host.trace() == ["picture", "started"]
    host.ok("remove", "-v", first)
    assert (shared / "media" / "cat.jpg").read_text() == "picture\n"
    assert os.readlink(host.deploy / second / "media") == "../../shared/media"
    host.ok("check")


def test_a_shared_path_uploaded_as_a_real_directory_is_refused(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW"), shared=["logs", "media"]),
                      files={"media/old-upload.jpg": "x"})

    done = host.run("upgrade-to", new)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line == (f"plugbox: deploy/{new}/media: uploaded, but listed in service.shared; "
                    "leave shared paths out of the upload")
    assert host.trace() == []  # not even post_upload ran
    assert host.live() == old
    # Nothing was made for the other shared path either.
    assert not (host.home / "shared").exists()
    assert not os.path.lexists(host.deploy / new / "logs")
    assert (host.deploy / new / "media").is_dir()
    assert not (host.deploy / new / "media").is_symlink()
    assert (host.deploy / new / "media" / "old-upload.jpg").read_text() == "x"


@pytest.mark.parametrize("entry", ["/abs", "../out", "previous", "next", "plugbox.toml", "."])
def test_a_shared_path_outside_the_version_or_owned_by_plugbox_is_refused(
        host: Host, entry: str) -> None:
    old = host.deploy_version(None)
    new = host.upload(toml_of({"post_upload": ['echo ran >> "$CTL/trace"']}, shared=[entry]))

    done = host.run("upgrade-to", new)

    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        f"plugbox: deploy/{new}/plugbox.toml: [service] shared: {entry!r} ")
    assert host.live() == old
    assert not (host.home / "shared").exists()
    assert host.trace() == []


# -- plugbox exec: a command in the live version, with the hooks' environment ------


def test_exec_runs_in_the_live_version_with_the_hooks_environment(host: Host) -> None:
    refused = host.run("exec", "--", "true")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (f"plugbox: no live version in {host.home}/deploy; "
                              "deploy one first: `plugbox upgrade-to VERSION`\n")
    first = host.deploy_version()
    second = host.deploy_version()
    script = 'pwd; echo "$PLUGBOX_HOME|$PLUGBOX_VERSION|$PLUGBOX_VERSION_DIR|$PLUGBOX_PREVIOUS|$CTL"; exit 5'

    done = host.run("exec", "--", "sh", "-c", script)

    directory = host.deploy / second
    assert (done.returncode, done.stderr) == (5, "")
    assert done.stdout == f"{directory}\n{host.home}|{second}|{directory}|{first}|{host.ctl}\n"
    # It changes nothing: the log has only the deploys.
    assert "exec" not in host.ok("log").stdout


@pytest.mark.parametrize(("command", "code", "said"), [
    ("no-such-command", 127, "plugbox: 'no-such-command': command not found on this host\n"),
    ("./app", 126, "plugbox: could not run './app': Permission denied\n"),  # a directory
])
def test_exec_says_when_the_command_cannot_run(host: Host, command: str, code: int, said: str) -> None:
    version = host.deploy_version()
    (host.deploy / version / "app").mkdir()
    done = host.run("exec", "--", command)
    assert (done.returncode, done.stdout, done.stderr) == (code, "", said)


# -- the release step, by hand -----------------------------------------------------------


def test_upgrade_to_runs_post_upload_then_release_then_switches(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", "stop")))
    host.trace()
    new = host.upload(toml_of(tracing("NEW", "post_upload", "release", "start")))

    host.ok("upgrade-to", new)

    assert host.trace() == [f"NEW post_upload {new} {old}", f"NEW release {new} {old}",
                            f"OLD stop {old} {old}", f"NEW start {new} {new}"]
    assert "(release ran)" in host.ok("log").stdout.splitlines()[-1]


def test_a_failing_release_switches_nothing(host: Host) -> None:
    old = host.deploy_version(toml_of(tracing("OLD", "stop")))
    host.trace()
    new = host.upload(toml_of({"release": ["exit 5"]}))

    done = host.run("upgrade-to", new)

    assert done.returncode == 4
    assert f"release of {new} failed: 'exit 5' exited 5; nothing switched, the live version is still {old}" \
        in done.stderr
    assert host.live() == old and host.trace() == []


def test_an_environment_change_never_runs_the_release_step(host: Host) -> None:
    host.deploy_version(toml_of(tracing("V", "release")))
    host.trace()
    done = subprocess.run([PLUGBOX, "env", "set", "KEY"], input="x\n", env=host.env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert host.trace() == []


# --- a version without a start hook after one with ----------------------------------------


def test_a_version_without_start_after_one_with_says_the_service_is_left_stopped(host: Host) -> None:
    first = host.deploy_version(toml_of(tracing("a", "stop", "start")))
    second = host.upload(toml_of(tracing("b", "stop")))  # its start hook forgotten
    host.trace()

    done = host.ok("upgrade-to", second)

    assert host.trace() == [f"a stop {first} {first}"]  # stopped, and nothing started
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning == [
        f"plugbox: warning: {second} has no start hook, and the stop hook of {first} ran: nothing runs the "
        f"service now; start it yourself, or `plugbox rollback-to {first}`, whose start hook starts it, "
        "and add a start hook to plugbox.toml"]
    # Run by plug, the way back is named as plug's command.
    host.ok("rollback-to", first)  # stop of b, start of a
    third = host.upload(toml_of({}))
    done = subprocess.run([PLUGBOX, "upgrade-to", third], env=host.env(PLUGBOX_CLIENT="plug"), capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0
    assert f"or `plug rollback {first}`, whose start hook" in done.stderr


@pytest.mark.parametrize("toml", [
    toml_of(tracing("b", "stop", "start")),     # a start hook: it starts
    toml_of(tracing("b", "refresh")),           # a refresh instead of stop + start: nothing stopped
])
def test_no_warning_when_something_starts_the_service_or_nothing_stopped_it(host: Host, toml: str) -> None:
    host.deploy_version(toml_of(tracing("a", "stop", "start")))
    second = host.upload(toml)
    assert "warning" not in host.ok("upgrade-to", second).stderr
