"""A deploy is one transaction on the host: the lock, kills, Ctrl-C, lost connections.

The real plug, ssh, sshd, rsync and plugbox. Some tests hold the upload or a
hook at a gate (a file the test creates) to act at a known point: kill plug,
kill the ssh session, press Ctrl-C on a real terminal (a pty), or start a second
deploy. Every wait is bounded and ends by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import (INSTALLED_BIN, PLUG, SYSTEM_PATH, TIMEOUT, children, live, processes_naming,
                     start_or_fail, versions, wait_for, write_app, write_config)
from plugbox_server import protocol
from plugbox_server.names import login
from sshd import Sshd, write_client_config
from terminal import on_terminal, started_on_terminal

PATIENCE = 15  # "within seconds": how long cleanup may take after plug is gone

# rsync on the host, held at a gate: the upload is in progress (the staging
# directory exists, the lock is held) until the test opens the gate.
GATED_RSYNC = """#!/bin/sh
touch "$GATE/rsync-started"
i=0
while [ ! -e "$GATE/open" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
exec /usr/bin/rsync "$@"
"""


def gate_hook(name: str) -> str:
    """A hook line that says it runs, then waits (at most a minute) for the gate."""
    return (f'touch "$CTL/{name}-running"; i=0; '
            f'while [ ! -e "$CTL/{name}-open" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done')


def staging(home: Path) -> list[str]:
    deploy = home / "deploy"
    return sorted(e for e in os.listdir(deploy) if e.startswith(".new-")) if deploy.exists() else []


class Client:
    """plug as a user starts it, with its own ssh config file (so that its ssh
    processes can be found by name) and its own temporary directory."""

    def __init__(self, tmp_path: Path, project: Path, hosts: dict[str, Sshd], user_key: Path):
        self.project = project
        self.tmp = tmp_path / "plug-tmp"
        self.tmp.mkdir()
        self.config = write_client_config(tmp_path / "client_ssh_config", hosts, user_key,
                                          tmp_path / "known_hosts")
        self.ctl = tmp_path / "ctl"
        self.ctl.mkdir()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
        env.update(PLUG_SSH_CONFIG=str(self.config), TMPDIR=str(self.tmp))
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PLUG), *args], cwd=self.project, env=self.env(), capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

    def start(self, *args: str) -> tuple[subprocess.Popen, Path]:
        """plug in the background; its stdout and stderr go to one file."""
        log = self.tmp.parent / f"plug-{time.monotonic_ns()}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([str(PLUG), *args], cwd=self.project, env=self.env(),
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        return process, log

    def leftovers(self) -> list[str]:
        """ssh or rsync processes of this client, and files in its temporary directory."""
        return processes_naming(str(self.config)) + [f"temporary file {p}" for p in os.listdir(self.tmp)]


@pytest.fixture
def gated(tmp_path: Path, user_key: Path, sshd: Sshd):
    """A host alias `plugbox-gated` whose rsync waits at a gate; and `plugbox-test`."""
    gate = tmp_path / "gate"
    gate.mkdir()
    bin_dir = tmp_path / "gated-bin"
    bin_dir.mkdir()
    (bin_dir / "rsync").write_text(GATED_RSYNC)
    (bin_dir / "rsync").chmod(0o755)
    login = tmp_path / "gated-login"
    login.mkdir()
    server = Sshd(tmp_path / "gated-sshd", Path(f"{user_key}.pub"),
                  env={"HOME": str(login), "PATH": f"{bin_dir}:{INSTALLED_BIN}:{SYSTEM_PATH}",
                       "GATE": str(gate)})
    start_or_fail(server)
    yield server, gate
    (gate / "open").touch()  # whatever the test did, no rsync stays at the gate
    server.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def client(tmp_path: Path, home: Path, user_key: Path, sshd: Sshd, gated) -> Client:
    project = tmp_path / "project"
    write_app(project, {"app/a.txt": "a\n", "app/b.txt": "b\n"})
    write_config(project, home)
    return Client(tmp_path, project, {"plugbox-test": sshd, "plugbox-gated": gated[0]}, user_key)


def hooks_config(client: Client, home: Path, host: str = "plugbox-test", **hooks: list[str]) -> None:
    """plugbox.toml with hooks; $CTL, the test's control directory, is in their environment."""
    prefix = f'export CTL="{client.ctl}"; '
    write_config(client.project, home, host=host, hooks={k: [prefix + line for line in v] for k, v in hooks.items()})


def deployed_then_gated(client: Client, home: Path, gate: Path) -> str:
    """A first deploy through the gated host with its gate open; then the gate
    shut and a change to deploy: the next upload waits at the gate."""
    write_config(client.project, home, host="plugbox-gated")
    (gate / "open").touch()
    first = deploy_ok(client)
    (gate / "open").unlink()
    (gate / "rsync-started").unlink()
    bump(client, "two\n")
    return first


def deploy_ok(client: Client) -> str:
    done = client.run("deploy")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1]


def bump(client: Client, text: str) -> None:
    (client.project / "app" / "a.txt").write_text(text)


# -- the lock ----------------------------------------------------------------------


def test_a_second_deploy_is_refused_before_it_uploads_anything(client: Client, home: Path) -> None:
    first = deploy_ok(client)
    hooks_config(client, home, post_upload=[gate_hook("post")])
    bump(client, "two\n")
    one, log = client.start("deploy")
    wait_for(lambda: (client.ctl / "post-running").exists(), "the first deploy's post_upload")
    before = sorted(os.listdir(home / "deploy"))

    second = client.run("deploy")

    assert second.returncode == 3, second.stderr
    message = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(message) == 1
    # Who holds it, and on which machine: what plug told the host.
    assert f"deploy/ is locked by {login()}@{os.uname().nodename} (plugbox deploy, pid " in message[0]
    assert "--wait-lock" in message[0]
    assert "files:" not in second.stdout and "new version" not in second.stderr
    assert sorted(os.listdir(home / "deploy")) == before  # nothing made, nothing uploaded
    (client.ctl / "post-open").touch()
    assert one.wait(TIMEOUT) == 0, log.read_text()
    assert live(home) not in (None, first)
    assert staging(home) == []


def test_wait_lock_waits_and_says_so(client: Client, home: Path) -> None:
    deploy_ok(client)
    hooks_config(client, home, post_upload=[gate_hook("post")])
    bump(client, "two\n")
    one, one_log = client.start("deploy")
    wait_for(lambda: (client.ctl / "post-running").exists(), "the first deploy's post_upload")
    (client.ctl / "post-running").unlink()
    two, two_log = client.start("deploy", "--wait-lock", "60")
    wait_for(lambda: "waiting up to 60 s for the lock" in two_log.read_text(), "the second deploy to wait")
    assert two.poll() is None
    time.sleep(1)  # the lock stays held a second more: the second deploy's wait, in its summary
    (client.ctl / "post-open").touch()
    assert one.wait(TIMEOUT) == 0, one_log.read_text()
    assert two.wait(TIMEOUT) == 0, two_log.read_text()
    assert len(versions(home)) == 3 and staging(home) == []
    # The time spent waiting is the lock's, not the connection's.
    seconds = dict(pair.split() for pair in two_log.read_text().splitlines()[-1]
                   .removeprefix("seconds: ").split(", "))
    assert float(seconds["lock"]) >= 1.0 > float(seconds["connect"]), two_log.read_text()


# -- plug killed, the connection lost ------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_plug_killed_mid_upload_leaves_nothing_behind(client: Client, home: Path, gated, signum) -> None:
    _, gate = gated
    first = deployed_then_gated(client, home, gate)
    before = sorted(os.listdir(home / "deploy"))
    process, log = client.start("deploy")
    wait_for(lambda: (gate / "rsync-started").exists() and staging(home), "the upload to begin")

    process.send_signal(signum)
    code = process.wait(TIMEOUT)

    if signum != signal.SIGKILL:
        assert code == 130
        said = [line for line in log.read_text().splitlines() if line.startswith("plug: ")]
        assert said and "interrupted before the upload was complete" in said[-1], log.read_text()
        assert "nothing changed on plugbox-gated" in said[-1]
    wait_for(lambda: not client.leftovers(),
             lambda: f"no ssh process nor temporary file (left: {client.leftovers()})", PATIENCE)
    wait_for(lambda: staging(home) == [], "the host to remove the staging directory", PATIENCE)
    assert sorted(os.listdir(home / "deploy")) == before and live(home) == first
    (gate / "open").touch()
    second = deploy_ok(client)  # no repair needed: the lock is free, nothing is left over
    assert live(home) == second != first
    assert client.run("check").stdout == "ok\n"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP])
def test_plug_killed_after_the_upload_lets_the_host_finish(client: Client, home: Path, signum) -> None:
    first = deploy_ok(client)
    hooks_config(client, home, post_upload=[gate_hook("post")], start=["echo started >&2"])
    bump(client, "two\n")
    process, log = client.start("deploy")
    wait_for(lambda: (client.ctl / "post-running").exists(), "post_upload")

    process.send_signal(signum)
    process.wait(TIMEOUT)
    wait_for(lambda: not client.leftovers(),
             lambda: f"no ssh process nor temporary file (left: {client.leftovers()})", PATIENCE)
    (client.ctl / "post-open").touch()

    wait_for(lambda: live(home) not in (None, first), "the host to finish the deploy")
    new = live(home)
    assert versions(home) == [first, new] and staging(home) == []
    entries = client.run("log").stdout.splitlines()
    assert entries[-1].split()[2:4] == ["deploy", new] and entries[-1].endswith("ok")


def test_ssh_session_killed_mid_upload_the_host_cleans_up(client: Client, home: Path, gated) -> None:
    server, gate = gated
    first = deployed_then_gated(client, home, gate)
    process, log = client.start("deploy")
    wait_for(lambda: (gate / "rsync-started").exists() and staging(home), "the upload to begin")

    for pid in children(server.process.pid):  # sshd's per-connection processes
        os.kill(pid, signal.SIGKILL)

    assert process.wait(TIMEOUT) == 255, log.read_text()
    assert "failed: lost the connection (rsync exited with" in log.read_text()
    assert "nothing changed on plugbox-gated" in log.read_text()
    wait_for(lambda: staging(home) == [], "the host to remove the staging directory", PATIENCE)
    assert versions(home) == [first] and live(home) == first
    (gate / "open").touch()
    assert deploy_ok(client) != first


# -- Ctrl-C on a real terminal ----------------------------------------------------


def ctrl_c(client: Client, args: list[str], ready) -> tuple[int, str]:
    """Run plug on a pty, press Ctrl-C once `ready()`; return its exit status and output."""
    seen = on_terminal([str(PLUG), *args], "\x03", env=client.env(), cwd=client.project, type_when=ready)
    return seen.code, seen.shown


@pytest.mark.parametrize("hook", ["post_upload", "check"])
def test_ctrl_c_after_the_upload_the_deploy_completes(client: Client, home: Path, hook: str) -> None:
    first = deploy_ok(client)
    hooks_config(client, home, **{hook: [gate_hook(hook), "echo said after the gate"]})
    bump(client, "two\n")

    code, text = ctrl_c(client, ["deploy"], lambda: (client.ctl / f"{hook}-running").exists())
    (client.ctl / f"{hook}-open").touch()

    assert code == 130, text
    assert "interrupted after the upload of" in text and "finishes the deploy by itself" in text
    wait_for(lambda: live(home) not in (None, first), "the host to finish the deploy")
    new = live(home)
    wait_for(lambda: client.run("log").stdout.splitlines()[-1].endswith("ok"), "the deploy to end well")
    assert versions(home) == [first, new] and staging(home) == []
    wait_for(lambda: not client.leftovers(),
             lambda: f"no ssh process nor temporary file (left: {client.leftovers()})", PATIENCE)
    # Nobody was listening any more, but the host kept what the hook said.
    assert "said after the gate" not in text
    assert "said after the gate" in client.run("log", "--output").stdout


def test_ctrl_c_during_the_upload_changes_nothing(client: Client, home: Path, gated) -> None:
    _, gate = gated
    first = deployed_then_gated(client, home, gate)

    code, text = ctrl_c(client, ["deploy"], lambda: (gate / "rsync-started").exists() and staging(home))

    assert code == 130, text
    assert "interrupted before the upload was complete; nothing changed on plugbox-gated" in text
    wait_for(lambda: staging(home) == [], "the host to remove the staging directory", PATIENCE)
    assert versions(home) == [first] and live(home) == first
    wait_for(lambda: not client.leftovers(),
             lambda: f"no ssh process nor temporary file (left: {client.leftovers()})", PATIENCE)


def test_ctrl_c_mid_upload_round_after_round_never_blocks_a_rollback(client: Client, home: Path) -> None:
    """Ctrl-C to the whole group (plug, its rsync, its ssh) while rsync writes a tree of
    thousands of small files into the staging directory, so that the host's cleanup
    runs while rsync still renames its temporary files: every time, the staging
    directory goes, and a rollback works at once."""
    tree = {f"app/many/{i // 100:02d}/{i:04d}.txt": f"{i}\n" for i in range(3000)}
    write_app(client.project, tree)
    first = deploy_ok(client)
    bump(client, "two\n")
    second = deploy_ok(client)
    interrupted = 0
    for round in range(6):
        write_app(client.project, {path: f"{round} {text}" for path, text in tree.items()})

        def uploading() -> bool:
            return any(sum(len(files) for _, _, files in os.walk(home / "deploy" / entry)) > 300
                       for entry in staging(home))

        code, text = ctrl_c(client, ["deploy"], uploading)
        if code != 130:  # the upload outran the look: this round proves nothing
            assert code == 0, text
            client.run("rollback")
            continue
        interrupted += 1
        assert "interrupted before the upload was complete" in text, text
        wait_for(lambda: staging(home) == [], "the host to remove the staging directory", PATIENCE)
        assert live(home) == second and set(versions(home)) >= {first, second}
        back = client.run("rollback")
        assert back.returncode == 0, back.stderr
        assert live(home) == first
        forth = client.run("rollback", second)
        assert forth.returncode == 0, forth.stderr
    assert interrupted >= 3, f"only {interrupted} of 6 Ctrl-C landed during the upload"
    assert client.run("check").stdout == "ok\n"


def test_a_second_ctrl_c_says_what_plug_is_still_doing(client: Client, home: Path) -> None:
    import select

    first = deploy_ok(client)
    # A build step slow to stop: it notes the TERM that plug's first Ctrl-C sends it,
    # and ends only when the test lets it (or after a minute).
    ctl = client.ctl
    write_config(client.project, home, upload=["app"], prepare=[
        f"touch {ctl}/built; trap 'touch {ctl}/termed' TERM; trap '' INT; i=0; "
        f"while [ ! -e {ctl}/let-go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"])
    bump(client, "two\n")
    process, main = started_on_terminal([str(PLUG), "deploy"], env=client.env(), cwd=client.project)
    shown = b""

    def read() -> bytes:
        nonlocal shown
        while select.select([main], [], [], 0.05)[0]:
            try:
                shown += os.read(main, 65536)
            except OSError:
                break
        return shown

    try:
        wait_for(lambda: (ctl / "built").exists(), "the build to run")
        os.write(main, b"\x03")
        wait_for(lambda: (ctl / "termed").exists(), "plug to stop the build after the first Ctrl-C")
        os.write(main, b"\x03")  # while plug waits for the build to end
        wait_for(lambda: b"still ending what was interrupted" in read(),
                 lambda: f"plug to say it is still ending: {shown!r}")
        (ctl / "let-go").touch()
        assert process.wait(timeout=TIMEOUT) == 130
        read()
    finally:
        process.kill()
        os.close(main)
    text = shown.decode(errors="replace")
    assert "interrupted before the upload was complete; nothing changed on plugbox-test" in text, text
    assert live(home) == first and versions(home) == [first]


# -- plug exec and plug ssh: nothing outlives plug ------------------------------------


def test_plug_exec_killed_leaves_nothing_here_nor_on_the_host(client: Client, home: Path) -> None:
    deploy_ok(client)
    # The marker is made on the host: plug's own command line does not hold it.
    process, _ = client.start("exec", "--", "sh", "-c", 'i=987; exec tail -f /dev/null --sleep-interval=$i')
    wait_for(lambda: processes_naming("--sleep-interval=987"), "the command to run on the host")

    process.kill()
    process.wait(timeout=TIMEOUT)

    wait_for(lambda: not processes_naming("--sleep-interval=987") and not client.leftovers(),
             lambda: f"nothing left (left: {processes_naming('--sleep-interval=987') + client.leftovers()})",
             PATIENCE)


def test_plug_ssh_killed_leaves_nothing_here_nor_on_the_host(client: Client, home: Path) -> None:
    deploy_ok(client)
    process, main = started_on_terminal([str(PLUG), "ssh"], env={**client.env(), "SHELL": "/bin/sh"},
                                        cwd=client.project)
    try:
        os.write(main, b"exec sleep 986.5\n")
        wait_for(lambda: processes_naming("sleep 986.5"), "the shell's command to run on the host")
        process.kill()
        process.wait(timeout=TIMEOUT)
        wait_for(lambda: not processes_naming("sleep 986.5") and not client.leftovers(),
                 lambda: f"nothing left (left: {processes_naming('sleep 986.5') + client.leftovers()})",
                 PATIENCE)
    finally:
        process.kill()
        os.close(main)


def test_ctrl_c_on_plug_exec_exits_130_and_ends_the_command(client: Client, home: Path) -> None:
    deploy_ok(client)
    code, text = ctrl_c(client, ["exec", "--", "sh", "-c", "i=985; sleep $i.5"],
                        lambda: processes_naming("sleep 985.5"))

    assert code == 130, text
    assert text.strip().splitlines()[-1].endswith("plug: interrupted")  # after the terminal's ^C
    wait_for(lambda: not processes_naming("sleep 985.5"), "the command on the host to end", PATIENCE)


# -- hosts that do not answer, or answer in another protocol ---------------------------


def test_a_host_that_never_answers_fails_in_one_line(client: Client, home: Path, tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never says a word
    port = silent.getsockname()[1]
    client.config.write_text(client.config.read_text().replace(
        "Host plugbox-test\n", f"Host plugbox-silent\n    HostName 127.0.0.1\n    Port {port}\n\nHost plugbox-test\n", 1))
    write_config(client.project, home, host="plugbox-silent")
    try:
        began = time.monotonic()
        done = client.run("status")
        took = time.monotonic() - began
    finally:
        silent.close()
    assert done.returncode == 255
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("plug: could not connect to plugbox-silent"), done.stderr
    assert took < 60  # bounded by ConnectTimeout (10 s), not by the test's own limit (TIMEOUT)
    assert not client.leftovers()


def fake_plugbox(home: Path, script: str) -> None:
    path = home / ".local" / "bin" / "plugbox"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_a_plugbox_of_another_protocol_is_refused(client: Client, home: Path) -> None:
    fake_plugbox(home, """echo '{"hello": {"plugbox": "9.0", "protocol": 99}}'; cat >/dev/null\n""")
    done = client.run("status")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"plugbox 9.0 on plugbox-test speaks protocol 99, this plug speaks {protocol.NUMBER}" in lines[0]
    assert "run `plug bootstrap`" in lines[0]


def test_a_plugbox_without_the_protocol_is_refused(client: Client, home: Path) -> None:
    # What an older plugbox does with --serve: typer's usage error.
    fake_plugbox(home, "echo 'Usage: plugbox [OPTIONS] COMMAND [ARGS]...' >&2\n"
                       "echo \"Error: No such option: --serve\" >&2; exit 2\n")
    done = client.run("deploy")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["plug: plugbox on plugbox-test does not speak plug's protocol; "
                     "run `plug bootstrap` to install the plugbox that matches plug"], done.stderr
    assert not (home / "deploy").exists()


def test_plugbox_refuses_a_plug_of_another_protocol(tmp_path: Path) -> None:
    plugbox = Path(INSTALLED_BIN) / "plugbox"
    other = str(protocol.NUMBER + 1)
    done = subprocess.run([str(plugbox), "--serve", other], input='{"command": "status"}\n',
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PLUGBOX_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert done.stdout.startswith('{"hello": {"plugbox": ')
    assert f"plug speaks protocol {other}, this plugbox" in done.stderr and "run `plug bootstrap`" in done.stderr
    assert not (tmp_path / "deploy").exists()
