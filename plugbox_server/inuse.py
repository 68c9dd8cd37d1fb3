"""Which versions running processes use, as far as /proc shows.

Reads /proc and nothing else; changes nothing. A process uses a version when
its working directory, its executable, its root, a file it has mapped (shared
libraries, a virtualenv's extension modules) or a file it holds open lies in the
version's directory. Paths in /proc are already resolved, so a process started
through HOME/live shows the version it was started in.

Only the processes this user may look into count: /proc hides the cwd, exe,
maps and fds of other users' processes (unless plugbox runs as root), so a
service running as another user is not seen.
"""

from __future__ import annotations

import os

from plugbox_server.plain import Plain

PROC = "/proc"


class User(Plain):
    FIELDS = ("pid", "command")

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def users(deploy: str, names: "set[str] | list[str]") -> dict[str, list[User]]:
    """For each version in `names` that a process uses, the processes, by pid."""
    wanted = set(names)
    if not wanted:
        return {}
    root = os.path.realpath(deploy) + "/"
    found: dict[str, dict[int, User]] = {}
    me = os.getpid()
    try:
        pids = [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]
    except OSError:
        return {}  # no /proc (not Linux): nothing can be known
    for pid in sorted(pids):
        if pid == me:
            continue
        for path in _paths(pid):
            if not path.startswith(root):
                continue
            name = path[len(root):].split("/", 1)[0]
            if name in wanted:
                user = found.setdefault(name, {})
                if pid not in user:
                    user[pid] = User(pid, _command(pid))
    return {name: list(by_pid.values()) for name, by_pid in found.items()}


def _paths(pid: int):
    """Every path process `pid` holds: cwd, exe, root, mapped files, open files."""
    base = f"{PROC}/{pid}"
    for link in ("cwd", "exe", "root"):
        path = _readlink(f"{base}/{link}")
        if path:
            yield path + "/"  # the directory itself counts, not only what is below it
    try:
        with open(f"{base}/maps", encoding="utf-8", errors="replace") as maps:
            seen = set()
            for line in maps:
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/") and fields[5] not in seen:
                    seen.add(fields[5])
                    yield _undeleted(fields[5])
    except OSError:
        pass  # gone, or another user's process
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        return
    for fd in fds:
        path = _readlink(f"{base}/fd/{fd}")
        if path and path.startswith("/"):
            yield path + "/"


def _readlink(path: str) -> str | None:
    try:
        return _undeleted(os.readlink(path))
    except OSError:
        return None


def _undeleted(path: str) -> str:
    # A file deleted while in use shows as "PATH (deleted)": it is still PATH's.
    return path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path


def _command(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            words = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        words = []
    command = " ".join(w.decode(errors="replace") for w in words if w)
    if not command:
        try:
            with open(f"{PROC}/{pid}/comm", encoding="utf-8", errors="replace") as f:
                command = f.read().strip()
        except OSError:
            command = "?"
    command = command.replace("\n", " ")
    return command if len(command) <= 200 else command[:197] + "..."
