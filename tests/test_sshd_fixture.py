"""The test ssh servers themselves: logins work, are counted, and jumps go through."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sshd import Sshd


def test_login_runs_a_command_and_is_counted(sshd: Sshd, ssh_run) -> None:
    before = sshd.logins()
    done = ssh_run("plugbox-test", "true")
    assert done.returncode == 0, done.stderr
    assert sshd.logins() == before + 1


def test_session_sees_the_fixture_environment(sshd: Sshd, ssh_run) -> None:
    done = ssh_run("plugbox-test", 'printf "%s\\n%s\\n" "$HOME" "$(command -v plugbox)"')
    assert done.returncode == 0, done.stderr
    home, plugbox = done.stdout.splitlines()
    assert home == str(sshd.env["HOME"])
    # The plugbox installed with the tests, not one a shell start-up file found.
    assert plugbox == f"{sshd.env['PATH'].split(':')[0]}/plugbox", "pip install -e . first"


def test_unknown_host_key_is_refused(sshd: Sshd, ssh_config: Path, tmp_path: Path) -> None:
    # StrictHostKeyChecking must really check: with an empty known_hosts, no login.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    before = sshd.logins()
    done = subprocess.run(
        ["ssh", "-F", str(ssh_config), "-o", f"UserKnownHostsFile={empty}",
         "plugbox-test", "true"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr
    assert sshd.logins() == before


def test_jump_host_is_used(sshd: Sshd, jump_sshd: Sshd, ssh_run) -> None:
    target, jump = sshd.logins(), jump_sshd.logins()
    done = ssh_run("-J", "plugbox-jump", "plugbox-test", "echo through")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "through\n"
    assert (sshd.logins(), jump_sshd.logins()) == (target + 1, jump + 1)


def test_direct_login_does_not_touch_the_jump_host(jump_sshd: Sshd, ssh_run) -> None:
    before = jump_sshd.logins()
    assert ssh_run("plugbox-test", "true").returncode == 0
    assert jump_sshd.logins() == before


def test_bare_host_has_python_without_packages_and_no_plugbox(bare_host, ssh_run) -> None:
    script = (
        "import importlib.util as u, sys; "
        "print(sys.prefix); "
        "print([m for m in ('pip', 'typer', 'plugbox_server') if u.find_spec(m)])"
    )
    done = ssh_run(
        "plugbox-bare",
        f"python3 -c \"{script}\"; command -v plugbox || echo no-plugbox; "
        "command -v rsync",
        config=bare_host.ssh_config,
    )
    assert done.returncode == 0, done.stderr
    prefix, found, plugbox, rsync = done.stdout.splitlines()
    assert bare_host.path.startswith(prefix + "/bin")
    assert found == "[]"
    assert plugbox == "no-plugbox"
    assert rsync.endswith("/rsync")
    assert bare_host.sshd.logins() == 1


def test_stop_ends_the_server(tmp_path: Path, user_key: Path) -> None:
    server = Sshd(tmp_path / "s", Path(f"{user_key}.pub"))
    with server:
        pid = server.process.pid
        assert server.port is not None
    assert server.process is None
    # The process is gone, not left behind.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"sshd {pid} still runs after stop")
