"""A real OpenSSH server on 127.0.0.1 for the client's tests (a library, not a test module).

Each `Sshd` runs `sshd -D -e -f CONFIG -E LOG` on a free loopback port with its own
host key, its own authorized_keys file and its own log, so a test can count logins
("Accepted publickey" lines) before and after a command. It logs in the user who
runs the tests: as root it may log anybody in (and needs the privilege-separation
directory, which it creates); as anybody else it can only log in that same user,
which is all the tests need.

The session environment is fixed by `SetEnv` in the server's own config: HOME is a
directory of the test's own (so the real user's shell start-up files, which may
put other pythons on PATH, are never read and nothing is written into the real
home) and PATH is chosen by the caller. sshd still starts the session in the
user's real home directory: remote commands must use absolute paths.

`write_client_config` writes the matching ssh client config (one `Host` block per
server, strict host key checking against a known_hosts file of our own, batch
mode), for `ssh -F CONFIG ALIAS`.

May touch: the directories it is given, /run/sshd (created when running as root),
and processes it starts itself.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

LISTENING = "Server listening on"
ACCEPTED = "Accepted publickey"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# Where Debian/Ubuntu's sshd wants its privilege-separation chroot when run as root.
PRIVSEP_DIR = Path("/run/sshd")


class SshdError(Exception):
    """The test ssh server could not be set up; the message says why and what to do."""


def find_sshd() -> str:
    """Absolute path of sshd (it refuses to run from a relative one)."""
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
    )
    found = shutil.which("sshd", path=search)
    if found is None:
        raise SshdError(
            "sshd: not found in PATH nor /usr/sbin; install openssh-server "
            "(apt-get install openssh-server): the client tests need a real ssh server"
        )
    return os.path.abspath(found)


def login_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def make_key(path: Path, comment: str) -> Path:
    """An ed25519 key pair without passphrase at PATH and PATH.pub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_checked(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    )
    path.chmod(0o600)
    return path


def run_checked(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SshdError(f"{argv[0]}: not found; install openssh-client") from None
    if done.returncode != 0:
        raise SshdError(
            f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}"
        )


def free_port() -> int:
    # Another process may take the port between close and sshd's bind: `start`
    # notices sshd's bind failure and tries another port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config_quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise SshdError(f"cannot put {value!r} into an ssh config file")
    return f'"{value}"'


class Sshd:
    """One sshd on 127.0.0.1, living in DIRECTORY (keys, config, pid file, log)."""

    def __init__(
        self,
        directory: Path,
        authorized_key: Path,
        env: dict[str, str] | None = None,
        max_file_size: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.authorized_key = Path(authorized_key)
        self.env = dict(env or {})
        # RLIMIT_FSIZE of sshd, inherited by every session: a write past it fails
        # (EFBIG), as on a full disk, so an upload can fail for real.
        self.max_file_size = max_file_size
        self.config = self.directory / "sshd_config"
        self.log = self.directory / "sshd.log"
        self.stderr = self.directory / "sshd.stderr"
        self.pid_file = self.directory / "sshd.pid"
        self.authorized_keys = self.directory / "authorized_keys"
        self.host_key = self.directory / "ssh_host_ed25519_key"
        self.user = login_user()
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Sshd:
        sshd = find_sshd()
        if not self.host_key.exists():
            make_key(self.host_key, "plugbox-test-host")
        shutil.copyfile(self.authorized_key, self.authorized_keys)
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        failure = ""
        for _attempt in range(5):
            self.port = free_port()
            self.write_config()
            failure = self.launch(sshd)
            if not failure:
                return self
            if "Address already in use" not in failure:
                break
        raise SshdError(f"sshd did not start on 127.0.0.1:{self.port}: {failure}")

    def settings(self) -> dict[str, str]:
        """sshd_config's keywords and their values, in order (sshd takes the first
        value of a keyword, so a subclass replaces one in this dict)."""
        settings = {
            "ListenAddress": "127.0.0.1",
            "Port": str(self.port),
            "HostKey": config_quote(str(self.host_key)),
            "PidFile": config_quote(str(self.pid_file)),
            "AuthorizedKeysFile": config_quote(str(self.authorized_keys)),
            "AllowUsers": self.user,
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "UsePAM": "no",
            # Our files live in tmp directories that sshd's owner checks would refuse.
            "StrictModes": "no",
            "PermitRootLogin": "prohibit-password",
            "PermitUserEnvironment": "no",
            "AllowTcpForwarding": "yes",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "LogLevel": "VERBOSE",
            "Subsystem": "sftp internal-sftp",
        }
        if os.geteuid() != 0:
            # Only root may give a session a terminal: sshd must chown the pty to the
            # tty group, and as anybody else that kills the session. Refused instead,
            # `ssh -t` goes on without one (the tests of `plug ssh` allow for that).
            settings["PermitTTY"] = "no"
        if self.env:
            settings["SetEnv"] = " ".join(config_quote(f"{k}={v}") for k, v in self.env.items())
        return settings

    def write_config(self) -> None:
        self.config.write_text("".join(f"{key} {value}\n" for key, value in self.settings().items()))

    def launch(self, sshd: str) -> str:
        """Start sshd and wait until it listens; return "" or why it failed."""
        self.log.write_text("")
        # With -E, sshd logs to the file; stderr only gets what comes before
        # (a bad option): a file, so that nothing can fill a pipe and block it.
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self.config), "-E", str(self.log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=self.limit if self.max_file_size is not None else None,
            )
        # sshd logs "Server listening" right after listen(2): from then on the port
        # accepts connections. Reading the log avoids a probe connection in it.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if LISTENING in self.log_text():
                return ""
            if self.process.poll() is not None:
                self.process = None
                said = self.log_text() + self.stderr.read_text(errors="replace")
                return said.strip() or "exited at once"
            time.sleep(0.02)
        self.stop()
        return f"not listening after {START_TIMEOUT:.0f}s; log: {self.log_text().strip()}"

    def limit(self) -> None:
        """Runs in the child, before exec: sshd and its sessions inherit the limit."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_size, self.max_file_size))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests look at ----------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logins(self) -> int:
        """How many logins this server has accepted since it started."""
        return self.log_text().count(ACCEPTED)

    def known_hosts_line(self) -> str:
        key = Path(f"{self.host_key}.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"


def write_client_config(
    path: Path, hosts: dict[str, Sshd], identity: Path, known_hosts: Path
) -> Path:
    """An ssh client config with one `Host ALIAS` block per server in HOSTS."""
    known_hosts.write_text("".join(s.known_hosts_line() for s in hosts.values()))
    blocks = []
    for alias, server in hosts.items():
        blocks.append(
            "\n".join(
                [
                    f"Host {alias}",
                    "    HostName 127.0.0.1",
                    f"    Port {server.port}",
                    f"    User {server.user}",
                    "",
                ]
            )
        )
    blocks.append(
        "\n".join(
            [
                "Host *",
                f"    IdentityFile {config_quote(str(identity))}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {config_quote(str(known_hosts))}",
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    UpdateHostKeys no",
                "    CheckHostIP no",
                "    BatchMode yes",
                "    PasswordAuthentication no",
                "    ConnectTimeout 15",
                "    LogLevel ERROR",
                "",
            ]
        )
    )
    path.write_text("\n".join(blocks))
    return path
