"""Many Ansible "hosts" behind one sshd on 127.0.0.1 (a library, not a test module).

Each host is a throwaway Unix user, `pbx-a01`, `pbx-a02`, ..., with its own home
(`/home/pbx-a01`, made by useradd) and the rig's public key in its
`~/.ssh/authorized_keys`. One sshd (tests/sshd.py, with a config of its own here)
listens on a free loopback port and lets exactly those users in; its sessions get
PATH=/usr/bin:/bin, on which python3 (3.11 or newer) and rsync must be found, and
the user's own HOME. `Rig.inventory` is an INI inventory naming one Ansible host per
user, all on 127.0.0.1 and that port, with the rig's key, the rig's own known_hosts
file, StrictHostKeyChecking and a control socket directory of the rig's own.

Creating users needs root. The users carry a marker in their GECOS field: a user of
that name without the marker is never touched (the rig refuses to start), and one
with it, left over from a run that was killed, is reused and its home emptied.
`Rig.close` ends the ssh control masters Ansible left running, stops sshd, waits for
the users' sessions to end and deletes the users and their homes (userdel -r).
Only one rig runs at a time on a machine: a flock on LOCK_FILE, waited for.

May touch: /etc/passwd, /etc/shadow, /etc/group (useradd/userdel of users named
PREFIX + NN only, and only those with the marker), their homes under HOME_BASE,
LOCK_FILE, the directory it is given, /run/sshd, and processes it starts itself
(sshd, ssh masters) or that run as the rig's users.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sshd import Sshd, SshdError, make_key

PREFIX = "pbx-a"
MARKER = "plugbox ansible rig"
HOME_BASE = Path("/home")
LOCK_FILE = Path("/tmp/plugbox-ansible-rig.lock")
SESSION_PATH = "/usr/bin:/bin"
LOCK_WAIT = 600.0
SESSIONS_END_WAIT = 10.0


class RigError(Exception):
    """The rig could not be set up; the message says why and what to do."""


def user_names(count: int) -> list[str]:
    if not 1 <= count <= 99:
        raise RigError(f"a rig has 1 to 99 hosts, not {count}")
    return [f"{PREFIX}{i:02d}" for i in range(1, count + 1)]


def find_ansible() -> Path | None:
    """The bin/ directory holding ansible-playbook: $PLUGBOX_ANSIBLE_BIN, else the one
    beside this python (the test environment's, which has plugbox for the controller),
    else PATH."""
    given = os.environ.get("PLUGBOX_ANSIBLE_BIN")
    if given:
        return Path(given) if (Path(given) / "ansible-playbook").exists() else None
    beside = Path(sys.executable).parent
    if (beside / "ansible-playbook").exists():
        return beside
    found = shutil.which("ansible-playbook")
    return Path(found).parent if found else None


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kwargs)
    if done.returncode != 0:
        raise RigError(f"{shlex.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _ours(name: str) -> pwd.struct_passwd | None:
    """The passwd entry of NAME if it is a rig user; None if there is no such user."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_gecos != MARKER:
        raise RigError(f"user {name} exists and is not a rig user (GECOS {entry.pw_gecos!r}); "
                       "the rig leaves it alone: remove it or run the rig elsewhere")
    return entry


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _processes_of(uids: set[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) in uids:
                    found.append(int(entry.name))
                break
    return found


class RigSshd(Sshd):
    """tests/sshd.Sshd for many users, each with its own ~/.ssh/authorized_keys."""

    def __init__(self, directory: Path, public_key: Path, users: list[str]) -> None:
        super().__init__(directory, public_key, env={"PATH": SESSION_PATH})
        self.users = users

    def settings(self) -> dict[str, str]:
        return {
            **super().settings(),
            "AuthorizedKeysFile": ".ssh/authorized_keys",
            "AllowUsers": " ".join(self.users),
            "StrictModes": "yes",
            "PermitRootLogin": "no",
            # Ansible opens one connection per host at once (forks): the default
            # MaxStartups (10:30:100) would drop some of 20 or 50 at random.
            "MaxStartups": "200",
            "MaxSessions": "50",
        }

    def logins_of(self, user: str) -> int:
        return self.log_text().count(f"Accepted publickey for {user} ")


class Rig:
    """COUNT users behind one sshd, and an inventory for them, in DIRECTORY."""

    def __init__(self, directory: Path, count: int = 20) -> None:
        self.directory = Path(directory)
        self.users = user_names(count)
        self.key = self.directory / "id_ed25519"
        self.known_hosts = self.directory / "known_hosts"
        self.inventory = self.directory / "inventory.ini"
        self.control_dir = self.directory / "cp"
        self.ansible_home = self.directory / "ansible-home"
        self.sshd: RigSshd | None = None
        self.python3 = ""
        self._lock: int | None = None
        self.created: list[str] = []   # users this rig made (the others it reused)
        self.timings: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Rig:
        if os.geteuid() != 0:
            raise RigError("the rig creates users: run as root")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self.python3 = self._session_tools()
            if not self.key.exists():
                make_key(self.key, "plugbox-rig")
            began = time.monotonic()
            self._make_users()
            self.timings["users"] = time.monotonic() - began
            self.sshd = RigSshd(self.directory / "sshd", Path(f"{self.key}.pub"), self.users)
            self.sshd.start()
            self.known_hosts.write_text(self.sshd.known_hosts_line())
            self.control_dir.mkdir(mode=0o700, exist_ok=True)
            self.ansible_home.mkdir(exist_ok=True)
            self._write_inventory()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """End everything the rig started and delete its users; safe to call twice."""
        try:
            self._end_masters()
            if self.sshd is not None:
                self.sshd.stop()
            self._remove_users()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take_lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RigError(f"another rig holds {LOCK_FILE} since {LOCK_WAIT:.0f}s") from None
                time.sleep(0.5)
        self._lock = fd

    def _session_tools(self) -> str:
        """The python3 a session finds on SESSION_PATH, checked; rsync must be there too."""
        python3 = shutil.which("python3", path=SESSION_PATH)
        if python3 is None or shutil.which("rsync", path=SESSION_PATH) is None:
            raise RigError(f"the rig's sessions need python3 and rsync on {SESSION_PATH}: "
                           "apt-get install python3 rsync")
        done = _run([python3, "-c", "import sys; print(sys.version_info >= (3, 11))"])
        if done.stdout.strip() != "True":
            raise RigError(f"{python3} is older than Python 3.11; plugbox needs 3.11 or newer")
        return python3

    def _make_users(self) -> None:
        public = Path(f"{self.key}.pub").read_text()
        for name in self.users:
            entry = _ours(name)
            if entry is None:
                _run(["useradd", "--create-home", "--home-dir", str(HOME_BASE / name),
                      "--shell", "/bin/sh", "--comment", MARKER, "--user-group",
                      # "*", not useradd's "!": with UsePAM no, sshd refuses a locked account.
                      "--password", "*", name])
                self.created.append(name)
                entry = pwd.getpwnam(name)
            home = Path(entry.pw_dir)
            _empty(home)   # a reused user starts as a new one
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text(public)
            (ssh_dir / "authorized_keys").chmod(0o600)
            for path in (ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _write_inventory(self) -> None:
        assert self.sshd is not None
        common = " ".join([
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "UpdateHostKeys=no",
        ])
        lines = ["[rig]"]
        lines += [f"{name} ansible_user={name}" for name in self.users]
        lines += [
            "",
            "[rig:vars]",
            "ansible_host=127.0.0.1",
            f"ansible_port={self.sshd.port}",
            f"ansible_ssh_private_key_file={self.key}",
            f"ansible_ssh_common_args='{common}'",
            f"ansible_control_path_dir={self.control_dir}",
            f"ansible_python_interpreter={self.python3}",
            "",
        ]
        self.inventory.write_text("\n".join(lines))

    def _end_masters(self) -> None:
        """Ask each ssh control master Ansible left in control_dir to exit."""
        if not self.control_dir.is_dir():
            return
        for socket in self.control_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "rig"],
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)

    def _remove_users(self) -> None:
        ours = []
        for name in self.users:
            try:
                entry = _ours(name)
            except RigError:
                continue
            if entry is not None:
                ours.append(entry)
        uids = {e.pw_uid for e in ours}
        deadline = time.monotonic() + SESSIONS_END_WAIT
        while (left := _processes_of(uids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _processes_of(uids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        problems = []
        for entry in ours:
            done = subprocess.run(["userdel", "--remove", entry.pw_name], capture_output=True,
                                  text=True, timeout=60, stdin=subprocess.DEVNULL)
            # 12: the home (or mail spool) could not be removed; the user is gone.
            if done.returncode not in (0, 12):
                problems.append(f"userdel {entry.pw_name}: exit {done.returncode}: {done.stderr.strip()}")
        if problems:
            raise RigError("; ".join(problems))

    # -- what tests use --------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for ansible commands against the rig."""
        ansible_bin = find_ansible()
        path = os.environ.get("PATH", "")
        if ansible_bin is not None:
            path = f"{ansible_bin}{os.pathsep}{path}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
            "PATH": path,
            "ANSIBLE_HOME": str(self.ansible_home),
            "ANSIBLE_LOCAL_TEMP": str(self.ansible_home / "tmp"),
            "ANSIBLE_FORKS": str(len(self.users)),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_GALAXY_SERVER_LIST": "",
        }
        env.update(extra)
        return env

    def ansible(self, program: str, *args: str, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run an ansible PROGRAM (ansible, ansible-playbook, ...) with the rig's inventory."""
        return subprocess.run([program, "-i", str(self.inventory), *args], capture_output=True,
                              text=True, timeout=timeout, env=env or self.env(),
                              stdin=subprocess.DEVNULL)

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)


def main() -> int:
    """`python tests/ansible_rig.py N`: start a rig of N hosts, print it, wait for Enter."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    directory = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/plugbox-rig")
    try:
        with Rig(directory, count) as rig:
            print(f"inventory: {rig.inventory}  (users {rig.users[0]}..{rig.users[-1]}, "
                  f"port {rig.sshd.port}); Enter ends it", flush=True)
            sys.stdin.readline()
    except (RigError, SshdError) as error:
        print(f"rig: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
