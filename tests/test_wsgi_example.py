"""examples/wsgi-app end to end: a real gunicorn deployed with `plug` while it serves.

Each test copies the example into a project of its own, points it at a fresh home
in tmp_path (host = "local") and a free port on 127.0.0.1 (HOME/config/bind), and
deploys it with the real plug, plugbox and rsync. The example's post_upload builds
its virtualenv with pip; here pip installs offline, from wheels made of the
gunicorn the tests run with (so gunicorn must be installed: it is in the `test`
extra). While plug works, a load of HTTP requests runs against /version, and every
answer is kept with its times.

What is asserted is what a client of the service sees: no failed request during a
refresh, the live version answering once plug returns, never a version other than
the two being switched between. Nothing depends on how fast the machine is: where
a test needs requests at a point of a switch, a gate at the start of the hook
(armed for that switch only) holds plug there until the load has had a given
number of answers, and every such wait is bounded by helpers.TIMEOUT.

The gap of a plain rollback (stop + start) is measured and printed, not asserted:
a measurement, marked slow, which the default run leaves out:
`pytest tests/test_wsgi_example.py -m slow -s -k gap`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import http.client
import importlib.metadata
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import TIMEOUT, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "wsgi-app"
PLUG_TIMEOUT = 180
RATE = 250         # requests per second, all threads together
THREADS = 10
LOAD_LIMIT = 300   # seconds: the load stops by itself after this, whatever happens
SEEN = 20          # answers the load must have had at each point a test holds a switch


# ---------------------------------------------------------------- offline wheels

def wheel_of_installed(name: str, directory: Path) -> Path:
    """A wheel of the installed pure-Python distribution `name`, made from its files.

    Lets pip build the example's virtualenv without reaching an index.
    """
    dist = importlib.metadata.distribution(name)
    wheel_info = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_info or "Tag: py3-none-any" not in wheel_info:
        pytest.fail(f"{name} is not a pure-Python wheel install; the test cannot repack it", pytrace=False)
    root = Path(dist.locate_file(""))
    info_dir = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.dist-info"
    dropped = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    files = [
        f for f in dist.files or []
        if not str(f).startswith("..") and "__pycache__" not in f.parts
        and not (f.parts[0].endswith(".dist-info") and f.name in dropped)
    ]
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    wheel = directory / f"{info_dir[:-len('.dist-info')]}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            data = (root / f).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            archive.writestr(str(f), data)
            writer.writerow([str(f), f"sha256={digest}", len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        archive.writestr(f"{info_dir}/RECORD", record.getvalue())
    return wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    try:
        importlib.metadata.distribution("gunicorn")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("gunicorn is not installed: `pip install -e '.[test]'`", pytrace=False)
    directory = tmp_path_factory.mktemp("wheels")
    # gunicorn and what it needs (none in 27; `packaging` in earlier versions), as
    # installed here: the service's pip finds nothing else offline.
    wanted, done = ["gunicorn"], set()
    while wanted:
        name = wanted.pop()
        if name in done:
            continue
        done.add(name)
        wheel_of_installed(name, directory)
        for requirement in importlib.metadata.requires(name) or []:
            if ";" not in requirement:  # extras and platform markers are not needed here
                wanted.append(re.split(r"[\s<>=!~\[(]", requirement, maxsplit=1)[0])
    return directory


# ---------------------------------------------------------------- the service

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ended(pid: int) -> bool:
    """Whether process pid is gone; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


@dataclass
class Service:
    project: Path
    home: Path
    port: int
    env: dict
    ctl: Path  # $CTL of the hooks: the gates' files (see `gate`)

    def plug(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "plugbox_client", *args], cwd=self.project, env=self.env,
            capture_output=True, text=True, timeout=PLUG_TIMEOUT, stdin=subprocess.DEVNULL,
        )
        if check:
            assert result.returncode == 0, describe(result)
        return result

    def held_plug(self, load: Load, *args: str, hold: tuple[str, ...]) -> Held:
        """Run plug, holding it at the start of each hook in `hold`, in turn, until the
        load has had SEEN answers to requests sent since plug got there."""
        for hook in hold:
            (self.ctl / f"hold-{hook}").touch()
        log = self.ctl / f"plug-{time.monotonic_ns()}"
        start = time.monotonic()
        with open(f"{log}.out", "w+") as out, open(f"{log}.err", "w+") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "plugbox_client", *args], cwd=self.project, env=self.env,
                stdout=out, stderr=err, text=True, stdin=subprocess.DEVNULL)
            windows = {}
            try:
                for hook in hold:
                    wait_for(lambda: (self.ctl / f"held-{hook}").exists() or process.poll() is not None,
                             f"plug {' '.join(args)} to reach its {hook} hook")
                    assert process.poll() is None, f"plug ended before its {hook} hook"
                    since = time.monotonic()
                    load.served(SEEN, since)
                    windows[hook] = load.answered(since, time.monotonic())
                    (self.ctl / f"go-{hook}").touch()
                code = process.wait(timeout=PLUG_TIMEOUT)
            except BaseException:
                for hook in hold:  # a failed test leaves no hook waiting
                    (self.ctl / f"go-{hook}").touch()
                raise
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=TIMEOUT)
                for hook in hold:  # whatever happened, no gate stays armed
                    (self.ctl / f"hold-{hook}").unlink(missing_ok=True)
            end = time.monotonic()
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(args, code, out.read(), err.read())
        return Held(result, start, end, windows)

    def live(self) -> str:
        return os.readlink(self.home / "deploy" / "live")

    def versions(self) -> list[str]:
        return sorted(p.name for p in (self.home / "deploy").iterdir() if p.name[0].isdigit())

    def ask(self) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/version")
            response = connection.getresponse()
            return response.status, response.read().decode().strip()
        finally:
            connection.close()

    def answers(self, count: int = 20) -> set[str]:
        """What /version answers to `count` requests in a row (all must succeed)."""
        seen = set()
        for _ in range(count):
            status, body = self.ask()
            assert status == 200, (status, body)
            seen.add(body)
        return seen

    def processes(self) -> list[int]:
        """This home's gunicorn processes: the masters of the pidfiles, and every worker.

        Only processes whose command line runs this home's gunicorn: a pid left in a
        stale pidfile may belong to anybody by now.
        """
        mark = f"{self.home}/live/env/bin/gunicorn".encode()
        candidates = []
        for name in ("gunicorn.pid", "gunicorn.pid.2", "gunicorn.pid.old"):
            try:
                candidates.append(int((self.home / "shared" / "run" / name).read_text()))
            except (OSError, ValueError):
                pass
        candidates += [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
        found = []
        for pid in dict.fromkeys(candidates):
            try:
                if mark in Path(f"/proc/{pid}/cmdline").read_bytes() and not ended(pid):
                    found.append(pid)
            except OSError:
                pass
        return found

    def kill_all(self) -> None:
        """Stop whatever gunicorn this home still runs: TERM, a bounded wait, then KILL."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while any(not ended(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.05)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def gate(hook: str) -> str:
    """A hook line: when $CTL/hold-HOOK exists, take it away (one switch only), say
    $CTL/held-HOOK and wait for $CTL/go-HOOK (at most TIMEOUT); otherwise do nothing."""
    return (f'[ ! -e "$CTL/hold-{hook}" ] || {{ rm -f "$CTL/hold-{hook}"; touch "$CTL/held-{hook}"; '
            f'i=0; while [ ! -e "$CTL/go-{hook}" ]; do i=$((i+1)); [ "$i" -le {TIMEOUT * 20} ] || exit 9; '
            f'sleep 0.05; done; rm -f "$CTL/go-{hook}" "$CTL/held-{hook}"; }}')


def add_gates(project: Path, hooks: tuple[str, ...] = ("refresh", "check")) -> None:
    """Put `gate(hook)` first in each of `hooks` of the project's plugbox.toml."""
    config = project / "plugbox.toml"
    text = config.read_text()
    for hook in hooks:
        text, count = re.subn(rf"(?m)^{hook} = \[", lambda _: f"{hook} = [{json.dumps(gate(hook))}, ", text)
        assert count == 1, f"examples/wsgi-app/plugbox.toml: no `{hook} = [...` line"
    config.write_text(text)


def use_refresh(project: Path, line: str) -> None:
    """Replace the refresh hook of the project's plugbox.toml by `line` (a TOML string)."""
    config = project / "plugbox.toml"
    text, count = re.subn(r"(?m)^refresh = .*$", lambda _: f"refresh = [{line}]", config.read_text())
    assert count == 1
    config.write_text(text)


@pytest.fixture
def service(tmp_path, wheelhouse):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    port = free_port()
    (home / "config" / "bind").write_text(f"127.0.0.1:{port}\n")
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "README.md", "demo-home"))
    config = project / "plugbox.toml"
    text, count = re.subn(r'(?m)^home = ".*?"', lambda _: f'home = "{home}"', config.read_text())
    assert count == 1, "examples/wsgi-app/plugbox.toml: no `home = ...` line"
    config.write_text(text)
    add_gates(project)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_", "PIP_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse),
               CTL=str(ctl))
    running = Service(project, home, port, env, ctl)
    yield running
    running.kill_all()
    assert not running.processes(), "gunicorn processes outlived the test"


# ---------------------------------------------------------------- the load

@dataclass
class Answer:
    sent: float            # time.monotonic() when the request went out
    done: float
    version: str | None    # the body of a 200 answer
    error: str | None      # why the request failed; None when it did not


class Load:
    """GET /version from THREADS threads at RATE requests/s in all, each on a new connection.

    Runs until stop(), or LOAD_LIMIT seconds, or RATE * LOAD_LIMIT requests, whichever
    comes first. Keeps every answer.
    """

    def __init__(self, port: int):
        self.port = port
        self.answers: list[Answer] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "load threads did not stop"

    def _run(self, index: int) -> None:
        period = THREADS / RATE
        due = self.started + index * period / THREADS
        deadline = self.started + LOAD_LIMIT
        for _ in range(RATE * LOAD_LIMIT // THREADS):
            pause = due - time.monotonic()
            if (pause > 0 and self.halt.wait(pause)) or self.halt.is_set() or time.monotonic() > deadline:
                return
            self.answers.append(self._one())
            # Keep the rate, but never burst to catch up after a slow answer.
            due = max(due + period, time.monotonic())

    def _one(self) -> Answer:
        sent = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/version")
            response = connection.getresponse()
            body = response.read().decode().strip()
            if response.status != 200:
                return Answer(sent, time.monotonic(), None, f"status {response.status}")
            return Answer(sent, time.monotonic(), body, None)
        except (OSError, http.client.HTTPException) as error:
            return Answer(sent, time.monotonic(), None, type(error).__name__)
        finally:
            connection.close()

    def served(self, count: int, since: float = float("-inf")) -> None:
        """Until `count` answers have come to requests sent since `since` (bounded)."""
        wait_for(lambda: len(self.between(since, float("inf"))) >= count,
                 lambda: f"{count} answers (only {len(self.between(since, float('inf')))} so far)")

    def answered(self, start: float, end: float) -> list[Answer]:
        """The answers to requests sent at `start` or later and answered before `end`."""
        return [a for a in list(self.answers) if start <= a.sent and a.done < end]

    def between(self, start: float, end: float) -> list[Answer]:
        """The answers to requests sent in [start, end)."""
        return [a for a in list(self.answers) if start <= a.sent < end]


def failures(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.error is not None]


def shown(answers: list[Answer], origin: float) -> str:
    return "\n".join(f"  +{a.sent - origin:.3f}s..{a.done - origin:.3f}s {a.version or a.error}"
                     for a in answers[:20])


@dataclass
class Held:
    result: subprocess.CompletedProcess
    start: float
    end: float
    windows: dict[str, list[Answer]]  # hook -> the answers given while plug was held there


@dataclass
class Switch:
    command: str
    before: str
    after: str
    start: float
    end: float
    windows: dict[str, list[Answer]]


def switch(service: Service, *args: str, load: Load | None = None, hold: tuple[str, ...] = ()) -> Switch:
    before = service.live()
    if hold:
        held = service.held_plug(load, *args, hold=hold)
        assert held.result.returncode == 0, describe(held.result)
        result, start, end, windows = held.result, held.start, held.end, held.windows
    else:
        start = time.monotonic()
        result = service.plug(*args)
        end = time.monotonic()
        windows = {}
    after = service.live()
    assert after != before, describe(result)
    # Once plug has returned, the service answers the live version, and only it.
    assert service.answers() == {after}
    return Switch(" ".join(args), before, after, start, end, windows)


# ---------------------------------------------------------------- the tests

def test_refresh_under_load_never_fails_a_request(service):
    """Deploy v1; under load deploy v2, v3, then `rollback --refresh` to v2.

    Each switch is held at the start of its refresh hook (live already names the new
    version, the old gunicorn still serves) and of its check hook (the refresh done)
    until the load has had SEEN answers there: the load runs through every switch,
    however fast or slow the machine.
    """
    service.plug("deploy")
    v1 = service.live()
    assert service.answers() == {v1}

    with Load(service.port) as load:
        load.served(50)
        held = ("refresh", "check")
        switches = [switch(service, "deploy", load=load, hold=held),
                    switch(service, "deploy", load=load, hold=held)]
        v2, v3 = switches[0].after, switches[1].after
        switches.append(switch(service, "rollback", "--refresh", v2, load=load, hold=held))
        assert switches[-1].after == v2
        load.served(SEEN, since=switches[-1].end)  # answers after the last switch too
    answers = list(load.answers)
    origin = load.started

    failed = failures(answers)
    assert not failed, f"{len(failed)} of {len(answers)} requests failed:\n{shown(failed, origin)}"
    edges = [origin] + [s.start for s in switches] + [float("inf")]
    lives = [v1] + [s.after for s in switches]
    for s in switches:
        during = load.between(s.start, s.end)
        # The load really ran through the switch: until the refresh, the old version
        # answered, though live named the new one; once refreshed, only the new one...
        before_refresh, after_refresh = s.windows["refresh"], s.windows["check"]
        assert {a.version for a in before_refresh} == {s.before}, \
            f"{s.command}, before its refresh:\n{shown(before_refresh, origin)}"
        assert {a.version for a in after_refresh} == {s.after}, \
            f"{s.command}, after its refresh:\n{shown(after_refresh, origin)}"
        # ... and met no version other than the two switched between...
        strays = [a for a in during if a.version not in (s.before, s.after)]
        assert not strays, f"{s.command} {s.before} -> {s.after}:\n{shown(strays, origin)}"
    for i, version in enumerate(lives):
        # ... and once a switch is done, only the version it made live answers.
        settled = load.between(switches[i - 1].end if i else origin, edges[i + 1])
        wrong = [a for a in settled if a.version != version]
        assert not wrong, f"while {version} was live:\n{shown(wrong, origin)}"

    # v2 and v3 have v1's requirements.txt: all three use one virtualenv, built once.
    links = {os.readlink(service.home / "deploy" / v / "env") for v in (v1, v2, v3)}
    assert len(links) == 1, links


@pytest.mark.slow
def test_plain_rollback_gap(service):
    """A measurement, not a check: how long a stop + start leaves the service unreachable.

    Prints, for six plain rollbacks under load, how many requests failed and for how
    long (the figures of "A plain rollback" in the README); a plain rollback may fail
    requests, so no figure is asserted. What is asserted is only what must hold
    whatever the figures: each rollback succeeds and leaves the version it names
    answering, alone, and every request sent outside the rollbacks succeeds.
    """
    service.plug("deploy")
    v1 = service.live()
    service.plug("deploy")
    v2 = service.live()
    rounds = []
    with Load(service.port) as load:
        load.served(50)
        for target in (v1, v2, v1, v2, v1, v2):
            # `plug rollback` to live's previous, then forward again by name: both stop + start.
            s = switch(service, "rollback", *([] if target == v1 else [target]))
            assert s.after == target
            rounds.append(s)
            load.served(SEEN, since=s.end)  # a settled service before the next round
    origin = load.started

    lines = []
    gaps = []
    for s in rounds:
        during = sorted(load.between(s.start, s.end), key=lambda a: a.sent)
        failed = failures(during)
        # Unreachable: from the first failed request to the last one, by sending time.
        gap = failed[-1].sent - failed[0].sent if failed else 0.0
        gaps.append(gap)
        slowest = max((a.done - a.sent for a in during), default=0.0)
        kinds = sorted({a.error for a in failed})
        lines.append(f"  rollback to {s.after}: plug took {s.end - s.start:.2f} s, {len(during)} requests, "
                     f"{len(failed)} failed {kinds or ''}, unreachable {gap * 1000:.0f} ms, "
                     f"slowest answer {slowest * 1000:.0f} ms")
    print(f"\nplain rollback (stop + start) under {RATE} requests/s, {os.cpu_count()} cores:")
    print("\n".join(lines))
    print(f"  unreachable: median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")
    # Requests outside the rollbacks all succeeded: the load itself is sound.
    quiet = [a for a in load.answers if not any(s.start <= a.sent < s.end for s in rounds)]
    assert not failures(quiet), shown(failures(quiet), origin)


def test_refresh_that_keeps_old_code_fails_check_and_switches_back(service):
    """A refresh that leaves the old master serving: check times out, live goes back."""
    service.plug("deploy")
    v1 = service.live()
    # Says yes, changes nothing: the old code goes on serving, as after a HUP of a
    # master that holds the old version directory.
    use_refresh(service.project, """'kill -0 "$(cat shared/run/gunicorn.pid)"'""")
    service.env["WSGI_APP_CHECK_TIMEOUT"] = "3"

    with Load(service.port) as load:
        load.served(50)
        # Held at the start of the check (live names v2 by then) until the load has
        # had SEEN answers there: the load runs through the deploy.
        held = service.held_plug(load, "deploy", hold=("check",))
        result = held.result
        assert result.returncode != 0, describe(result)
        assert service.live() == v1
        assert service.answers() == {v1}
        load.served(SEEN, since=held.end)  # answers after plug returned too
    v2 = next(v for v in service.versions() if v != v1)
    output = result.stdout + result.stderr
    assert f"did not answer {v2}" in output, output
    assert f"live is back at {v1}" in output, output

    answers = list(load.answers)
    assert not failures(answers), shown(failures(answers), load.started)
    # v1 answered all along: while live named v2 and its check ran too.
    assert {a.version for a in answers} == {v1}
