"""What more than one test module uses: one home for it (a library, not a test module).

Test modules import from here and from the other libraries (sshd.py, plugbox_host.py,
terminal.py), never from one another nor from conftest.py, whose fixtures take their
constants from here too.

- bounds: TIMEOUT, and wait_for, the one bounded wait for a condition;
- the places the tests run things from: INSTALLED_BIN, SYSTEM_PATH, BARE_SYSTEM_PATH,
  start_or_fail for a test sshd;
- `plug` as a user runs it over ssh (PLUG, Plug) and the host's layout as `ls -l`
  shows it (live, versions), with a project's files (write_app, write_config);
- `plugbox` in-process (plugbox, ok, refused, deploy, new_version, link, snapshot);
- hook lines and plugbox.toml texts for the real `plugbox` (toml_of, tracing,
  WAIT_FOR_GO) and the one line of a refusal (one_line, one_line_error).

Not for sshd.py: bench/run.py imports it outside pytest, and this module needs pytest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import typer.main
from typer.testing import CliRunner

from plugbox_server.cli import app
from plugbox_server.names import is_version_name
from sshd import Sshd, SshdError

T = TypeVar("T")

# --- bounds ---------------------------------------------------------------------------

TIMEOUT = 120  # seconds: a bound on every wait and every command run, never an assertion
POLL = 0.05    # seconds between two looks at a condition


def wait_for(predicate: Callable[[], T], what: str | Callable[[], str],
             seconds: float = TIMEOUT) -> T:
    """Until predicate() is true, looked at every POLL s; return what it returned.

    After `seconds` the test fails, saying what it waited for (`what`, or what
    `what()` says then: the state at the end of the wait). A bound, not an
    assertion, unless the caller passes `seconds` that a specification names.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            pytest.fail(f"waited {seconds:g} s for {said}", pytrace=False)
        time.sleep(POLL)


# --- where things run from ----------------------------------------------------------------

def installed_bin() -> str:
    """Where `pip install -e .` put the `plugbox` and `plug` console scripts.

    Sessions on the `sshd` fixture find plugbox there, first on PATH, as on a host
    where plugbox is installed; the bare host is the other case.
    """
    here = Path(sys.executable).parent
    if (here / "plugbox").exists():
        return str(here)
    found = shutil.which("plugbox")
    return str(Path(found).parent) if found else str(here)


INSTALLED_BIN = installed_bin()
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
BARE_SYSTEM_PATH = "/usr/bin:/bin"


def start_or_fail(server: Sshd) -> Sshd:
    """Start a test sshd; if it cannot start, the test fails (never skips), saying why."""
    try:
        return server.start()
    except SshdError as error:
        pytest.fail(f"test ssh server: {error}", pytrace=False)


# --- `plug` over ssh, as a user runs it ------------------------------------------------

# The console script installed next to the python running the tests (pip install -e .).
PLUG = Path(sys.executable).parent / "plug"
if not PLUG.exists():
    PLUG = Path(shutil.which("plug") or PLUG)


@dataclass
class Run:
    code: int
    out: str
    err: str


class Plug:
    """Runs the installed `plug` in the project directory against one ssh config."""

    def __init__(self, project: Path, ssh_config: Path):
        self.project = project
        self.ssh_config = ssh_config
        self.env: dict[str, str] = {}  # more environment for plug, as a test needs

    def environ(self) -> dict[str, str]:
        """The environment plug runs in."""
        env = {**os.environ, "PLUG_SSH_CONFIG": str(self.ssh_config), **self.env}
        env.pop("PLUG_SSH_OPTIONS", None)
        return env

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        """plug in the background, its stdout and stderr into `log`."""
        with open(log, "wb") as out:
            return subprocess.Popen([str(PLUG), *args], cwd=self.project, env=self.environ(),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def __call__(self, *args: str, cwd: Path | None = None) -> Run:
        if not PLUG.exists():
            pytest.fail(f"{PLUG}: not found; run `pip install -e .`", pytrace=False)
        done = subprocess.run(
            [str(PLUG), *args],
            cwd=cwd or self.project,
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        # An expected failure never shows a traceback, whatever the test checks next.
        assert "Traceback" not in done.stderr, done.stderr
        return Run(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str) -> Run:
        run = self(*args)
        assert run.code == 0, f"plug {' '.join(args)}: exit {run.code}\n{run.out}{run.err}"
        return run

    def deploy(self) -> str:
        """`plug deploy`, which must succeed; returns the new live version."""
        return summary(self.ok("deploy")).split()[1]


def summary(run: Run) -> str:
    """The line of `plug deploy` that says which version is live now."""
    lines = [line for line in run.out.splitlines() if line.startswith("version ")]
    assert len(lines) == 1 and " is live" in lines[0], run.out
    return lines[0]


def one_line_error(run: Run) -> str:
    """The message of a refused command: one `plug: ...` line on stderr."""
    assert run.code != 0
    lines = [line for line in run.err.splitlines() if line.startswith("plug: ")]
    assert len(lines) == 1, run.err
    return lines[0]


def toml_value(value: object) -> str:
    # A TOML basic string is written like a JSON string; lists likewise.
    return json.dumps(value)


def write_config(project: Path, home: Path | str, host: str = "plugbox-test", **keys) -> Path:
    """plugbox.toml in PROJECT: [service] host/home/jump, [build] from KEYS."""
    service = {"host": host, "home": str(home)}
    for key in ("jump", "shared"):
        if key in keys:
            service[key] = keys.pop(key)
    hooks = keys.pop("hooks", {})
    build = keys or {"upload": ["app"]}
    lines = ["[service]"] + [f"{k} = {toml_value(v)}" for k, v in service.items()]
    lines += ["", "[build]"] + [f"{k} = {toml_value(v)}" for k, v in build.items()]
    if hooks:
        lines += ["", "[hooks]"] + [f"{k} = {toml_value(v)}" for k, v in hooks.items()]
    path = project / "plugbox.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_app(project: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# -- the host's layout, as `ls -l` shows it -------------------------------------

def versions(home: Path) -> list[str]:
    deploy = home / "deploy"
    if not deploy.exists():
        return []
    return sorted(
        p.name for p in deploy.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    )


def live(home: Path) -> str | None:
    link = home / "deploy" / "live"
    return os.readlink(link) if link.is_symlink() else None


# --- `plugbox` in-process ------------------------------------------------------------------
#
# The click command is built once, at import: pyfakefs replaces `Path` in every
# loaded module by a stand-in that is not a class, and typer, which otherwise
# builds the command at each call, would then stop converting --home to a Path.

COMMAND = typer.main.get_command(app)
RUNNER = CliRunner()
BOOKKEEPING = {".lock", ".log"}


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None  # an exception that escaped: a traceback


def plugbox(home: Path | str, *args: str) -> Ran:
    with RUNNER.isolation() as (out, err, _):
        code, escaped = 0, None
        try:
            COMMAND.main(args=["--home", str(home), *args], prog_name="plugbox")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except Exception as error:  # noqa: BLE001 - reported by the assertions
            code, escaped = 1, error
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return Ran(code, out.getvalue().decode(), err.getvalue().decode(), escaped)


def ok(home: Path | str, *args: str) -> str:
    ran = plugbox(home, *args)
    assert (ran.exit_code, ran.stderr, ran.exception) == (0, "", None), ran
    return ran.stdout


def snapshot(home: Path | str) -> dict[str, tuple]:
    """Every entry under home: links with their text, directories, files with their bytes.

    deploy/.lock and deploy/.log are left out: the lock is taken and the log
    records even a refusal.
    """
    found: dict[str, tuple] = {}

    def walk(directory: str, relative: str) -> None:
        for entry in os.scandir(directory):
            path = f"{relative}{entry.name}"
            if relative == "deploy/" and entry.name in BOOKKEEPING:
                continue
            if entry.is_symlink():
                found[path] = ("link", os.readlink(entry.path))
            elif entry.is_dir():
                found[path] = ("dir",)
                walk(entry.path, path + "/")
            else:
                with open(entry.path, "rb") as f:
                    found[path] = ("file", f.read())

    walk(str(home), "")
    return found


def refused(home: Path, *args: str, code: int = 1) -> str:
    """Run a command that must be refused; return its one line on stderr."""
    before = snapshot(home)
    ran = plugbox(home, *args)
    assert ran.exception is None, ran
    assert ran.exit_code == code, ran
    assert "Traceback" not in ran.stderr + ran.stdout
    assert snapshot(home) == before, "a refused command changed the home"
    if code != 2:  # typer's own usage errors print the usage too
        assert ran.stderr.startswith("plugbox: "), ran
        assert ran.stderr.endswith("\n") and ran.stderr.count("\n") == 1, ran
    return ran.stderr


def link(home: Path, path: str) -> str | None:
    """The text of the link HOME/PATH, or None if there is none."""
    try:
        return os.readlink(home / path)
    except FileNotFoundError:
        return None


def new_version(home: Path, files: dict[str, str] | None = None) -> str:
    """next-version, then the upload (a file or two) the client would do."""
    out = ok(home, "next-version")
    name = out.rstrip("\n")
    assert out == name + "\n" and is_version_name(name)
    for relative, text in (files or {"app.py": f"print('{name}')\n"}).items():
        (home / "deploy" / name / relative).write_text(text)
    return name


def deploy(home: Path, files: dict[str, str] | None = None) -> str:
    name = new_version(home, files)
    assert ok(home, "upgrade-to", name) == f"plugbox: live is now {name}\n"
    return name


# --- hooks for the real `plugbox` ----------------------------------------------------------

# A hook line that waits for the test to create $CTL/go (at most 30 s), then goes on.
WAIT_FOR_GO = ('i=0; while [ ! -e "$CTL/go" ]; do i=$((i+1)); '
               '[ "$i" -le 600 ] || exit 9; sleep 0.05; done')


def toml_of(hooks: dict[str, list[str]] | None = None, shared: list[str] | None = None) -> str:
    """A plugbox.toml; json.dumps writes valid TOML basic strings."""
    text = ""
    if shared is not None:
        text += f"[service]\nshared = {json.dumps(shared)}\n"
    if hooks:
        text += "[hooks]\n"
        text += "".join(f"{key} = [{', '.join(json.dumps(l) for l in lines)}]\n"
                        for key, lines in hooks.items())
    return text


def traced(tag: str, hook: str) -> str:
    """A hook line that records: tag, hook, the version it runs for, and live at that moment."""
    return (f'echo "{tag} {hook} $PLUGBOX_VERSION '
            f'$(readlink "$PLUGBOX_HOME/deploy/live")" >> "$CTL/trace"')


def tracing(tag: str, *keys: str,
            extra: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Hooks that each record themselves; `extra` lines are added after the record."""
    keys = keys or ("post_upload", "stop", "start", "check")
    hooks = {key: [traced(tag, key)] for key in keys}
    for key, lines in (extra or {}).items():
        hooks.setdefault(key, []).extend(lines)
    return hooks


def one_line(stderr: str) -> str:
    """The one line of a refusal on stderr, which shows no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- processes ---------------------------------------------------------------------


def processes_naming(marker: str) -> list[str]:
    """The command lines of running processes that mention `marker` (pytest aside)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (an sshd's per-connection processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


# --- a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of a few hundred inodes, mounted for this test alone."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("the full-disk cases mount a small tmpfs, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=300,mode=0755",
                           "plugbox-test", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_inodes(directory: Path, leave: int) -> None:
    """Create empty files in `directory` until exactly `leave` inodes are free."""
    directory.mkdir(exist_ok=True)
    made = []
    for i in range(10_000):  # more than the disk has
        try:
            (directory / str(i)).touch()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
            break
        made.append(directory / str(i))
    else:
        pytest.fail("the disk never filled")
    for path in made[len(made) - leave:]:
        path.unlink()
    assert os.statvfs(directory).f_ffree == leave
