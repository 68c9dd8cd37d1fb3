"""A warm connection: `keep_connection` (or PLUG_KEEP_CONNECTION) keeps the ssh master
after a command, so that the next one skips the login; `plug disconnect` closes it.

The real plug, ssh and sshd. Each test gets its own XDG_RUNTIME_DIR, where plug keeps
its masters (XDG_RUNTIME_DIR/plug/), so a master of one test is never another's. A
master that plug keeps runs in the background, as `ssh: SOCKET [mux]`: it is found
by the name of that directory. What runs on the host is found among the descendants
of the test's own sshd.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import TIMEOUT, Plug, live, one_line_error, processes_naming, wait_for, write_app, write_config
from sshd import Sshd

PATIENCE = 15  # "within seconds": how long cleanup may take after plug is gone


@pytest.fixture
def runtime() -> Path:
    """A short XDG_RUNTIME_DIR of the test's own (a socket's path has ~100 bytes);
    a master a failed test left is closed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="pk-", dir="/tmp"))
    yield directory
    for socket in (directory / "plug").glob("*") if (directory / "plug").exists() else ():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "kept"], capture_output=True,
                       timeout=TIMEOUT)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def plug(project_dir: Path, ssh_config: Path, runtime: Path) -> Plug:
    plug = Plug(project_dir, ssh_config)
    plug.env["XDG_RUNTIME_DIR"] = str(runtime)
    return plug


@pytest.fixture
def app(project_dir: Path) -> Path:
    write_app(project_dir, {"app/a.txt": "a\n"})
    return project_dir


def masters(runtime: Path) -> list[str]:
    """The masters plug keeps in this test's directory, and their sockets."""
    kept = runtime / "plug"
    sockets = [f"socket {p.name}" for p in kept.iterdir()] if kept.exists() else []
    return processes_naming(str(kept)) + sockets


def serving(sshd: Sshd, marker: str = "--serve") -> list[str]:
    """The command lines that mention `marker` among the processes the sshd runs."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = []
    for pid in parents:
        up = pid
        while up in parents and up != sshd.process.pid:
            up = parents[up]
        if up == sshd.process.pid and pid != up:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{pid}: {cmdline}")
    return found


def test_consecutive_commands_log_in_once_and_disconnect_closes(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd, runtime: Path
) -> None:
    write_config(app, service_home, keep_connection=300)
    logins = sshd.logins()

    first = plug.deploy()
    assert sshd.logins() == logins + 1
    assert masters(runtime), "no master kept after the command"
    plug.ok("status")
    (app / "app" / "a.txt").write_text("b\n")
    second = plug.deploy()
    assert plug.ok("rollback").code == 0 and live(service_home) == first
    plug.ok("exec", "--", "true")
    assert sshd.logins() == logins + 1  # four commands, one login
    assert second != first

    closed = plug.ok("disconnect")
    assert closed.out == "closed the connection kept to plugbox-test\n"
    wait_for(lambda: not masters(runtime), lambda: f"the master to end (left: {masters(runtime)})", PATIENCE)
    assert plug.ok("disconnect").out == "no connection kept to plugbox-test\n"
    plug.ok("status")
    assert sshd.logins() == logins + 2  # closed: the next command logs in again


def test_the_environment_wins_over_the_file(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd, runtime: Path
) -> None:
    write_config(app, service_home, keep_connection=300)
    plug.env["PLUG_KEEP_CONNECTION"] = "0"
    logins = sshd.logins()
    plug.ok("status")
    plug.ok("status")
    assert sshd.logins() == logins + 2
    assert masters(runtime) == []

    write_config(app, service_home)
    plug.env["PLUG_KEEP_CONNECTION"] = "300"
    plug.ok("status")
    plug.ok("status")
    assert sshd.logins() == logins + 3
    assert plug.ok("disconnect").out == "closed the connection kept to plugbox-test\n"

    plug.env["PLUG_KEEP_CONNECTION"] = "1m"
    refused = plug("status")
    assert refused.code == 2
    assert one_line_error(refused) == (
        "plug: PLUG_KEEP_CONNECTION is '1m', not a whole number of seconds; set it to the seconds to keep "
        "the connection after a command, or 0 for none")
    assert sshd.logins() == logins + 3


def test_a_bad_keep_connection_is_refused_before_connecting(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd
) -> None:
    config = write_config(app, service_home)
    config.write_text(config.read_text().replace("[build]", "keep_connection = 1.5\n\n[build]"))
    logins = sshd.logins()
    refused = plug("status")
    assert refused.code == 2
    assert one_line_error(refused) == (
        f"plug: {config}: [service] keep_connection: 1.5 is not a whole number of seconds above 0; give the "
        "seconds to keep the connection after a command, such as 60, or leave it out to keep none")
    assert sshd.logins() == logins


def test_the_master_ends_by_itself(plug: Plug, app: Path, service_home: Path, sshd: Sshd, runtime: Path) -> None:
    write_config(app, service_home, keep_connection=1)
    logins = sshd.logins()
    plug.ok("status")
    wait_for(lambda: not masters(runtime), lambda: f"the master to end by itself (left: {masters(runtime)})")
    plug.ok("status")
    assert sshd.logins() == logins + 2


def test_without_it_nothing_outlives_the_command(
    plug: Plug, app: Path, service_home: Path, ssh_config: Path, runtime: Path
) -> None:
    write_config(app, service_home)
    plug.ok("status")
    plug.deploy()
    assert masters(runtime) == []
    assert processes_naming(str(ssh_config)) == []
    assert plug.ok("disconnect").out == "no connection kept to plugbox-test\n"


def test_a_killed_plug_leaves_no_plugbox_on_the_host(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd, runtime: Path, tmp_path: Path
) -> None:
    write_config(app, service_home, keep_connection=300)
    plug.deploy()
    # A deploy held in its build: its session (plugbox --serve on the host) waits for the request.
    gate = tmp_path / "built"
    write_config(app, service_home, keep_connection=300,
                 prepare=[f"touch {gate}; exec sleep 60"], upload=["app"])
    process = plug.start("deploy", log=tmp_path / "deploy.log")
    try:
        wait_for(lambda: gate.exists() and serving(sshd), "the build to run and plugbox to serve")
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)
    finally:
        process.kill()
    wait_for(lambda: not serving(sshd), lambda: f"plugbox on the host to end (left: {serving(sshd)})", PATIENCE)
    assert masters(runtime), "the master is kept: the opt-in"

    # A command run by `plug exec` ends with plug too, over the kept master.
    process = plug.start("exec", "--", "sh", "-c", "i=982; exec tail -f /dev/null --sleep-interval=$i",
                         log=tmp_path / "exec.log")
    try:
        wait_for(lambda: serving(sshd, "--sleep-interval=982"), "the command to run on the host")
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)
    finally:
        process.kill()
    wait_for(lambda: not serving(sshd, "--sleep-interval=982"),
             lambda: f"the command on the host to end (left: {serving(sshd, '--sleep-interval=982')})", PATIENCE)
    assert plug.ok("disconnect").out == "closed the connection kept to plugbox-test\n"


def test_through_a_jump_host_the_kept_connection_is_its_own(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd, jump_sshd: Sshd, runtime: Path
) -> None:
    write_config(app, service_home, keep_connection=300)
    plug.ok("status")
    direct = {p.name for p in (runtime / "plug").iterdir()}
    write_config(app, service_home, keep_connection=300, jump=["plugbox-jump"])
    logins = sshd.logins(), jump_sshd.logins()

    plug.ok("status")
    plug.ok("status")

    assert (sshd.logins(), jump_sshd.logins()) == (logins[0] + 1, logins[1] + 1)  # not the direct one's
    through = {p.name for p in (runtime / "plug").iterdir()} - direct
    assert len(through) == 1
    assert plug.ok("disconnect").out == "closed the connection kept to plugbox-test\n"
    wait_for(lambda: {p.name for p in (runtime / "plug").iterdir()} == direct, "the master through the jump to end",
             PATIENCE)
