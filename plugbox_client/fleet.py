"""Several hosts (`[service] hosts`): each plug command on every host, together.

Every host has its own Session (its own plugbox --serve, its own ssh master),
driven by a thread of its own; what a host says comes prefixed by its name, one
whole line at a time. Nothing here runs a process itself: sessions and rsync go
through transport.py, as for one host.

A deploy runs in two phases (the exchange is in plugbox_server/serve.py):

1. On every host at once: take the lock, then (once every host holds its lock)
   one version name for all, chosen here after the newest version of every
   host; make the version, upload it, run its post_upload. A failure on any
   host calls the deploy off everywhere: no host switches, and the hosts remove
   the new version (or its staging directory) before they let go of the lock.
2. Switch: all hosts at once, or `batch` at a time, each group's check passing
   before the next group starts. Each host waits, still under its lock, until
   plug says commit or revert; when one host fails (and switches itself back),
   the hosts already switched are told to revert, those not yet switched to
   call it off, so the fleet ends on one version. With `keep_going` the other
   hosts go on, and the summary says which host is on which version.
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from plugbox_client import deploy as d
from plugbox_client import transport
from plugbox_client.config import Config
from plugbox_server.errors import REVERT_FAILED, PlugboxError
from plugbox_server.names import new_version_name, validate_version


@dataclass
class Host:
    name: str
    config: Config
    session: transport.Session | None = None
    was: str | None = None       # its live version before the command
    now: str | None = None       # its live version after it
    newest: str | None = None    # its newest version, once it holds the lock
    state: str = "connecting"    # how far it got: named, prepared, switched, done
    result: str = ""             # the summary's word for how it ended
    code: int = 0                # its exit status, when it failed
    seconds: float = 0.0
    known: bool = True           # False: plug lost it, it finishes by itself

    def say(self, message: str) -> None:
        transport.show(f"{self.name}: ==> {message}")

    def request(self, message: dict) -> dict:
        return self.session.request(message)

    def fail(self, result: str, error: BaseException) -> None:
        self.result = self.result or result
        self.code = self.code or getattr(error, "code", 1) or 1
        if str(error) and not isinstance(error, d.Quiet):
            transport.show(f"{self.name}: plug: {error}")


def _each(hosts: list[Host], work: Callable[[Host], None], failed: str) -> list[Host]:
    """work(host) on every host at once; the hosts where it raised, marked `failed`."""
    if not hosts:
        return []
    pool = ThreadPoolExecutor(max_workers=len(hosts))
    try:
        futures = [(host, pool.submit(work, host)) for host in hosts]
        errors = [(host, future.exception()) for host, future in futures]
    except BaseException:  # Ctrl-C: every host sees the end of its input now, not after the others
        for host in hosts:
            host.session.quiet = True
            host.session.end_input()
        pool.shutdown(wait=False)
        raise
    pool.shutdown()
    for host, error in errors:
        if error is not None:
            host.fail(failed, error)
    return [host for host, error in errors if error is not None]


def _sessions(config: Config) -> list[Host]:
    hosts = [Host(name, config.for_host(name)) for name in config.hosts]
    try:
        for host in hosts:
            host.session = transport.open_session(host.config, prefix=f"{host.name}: ")
    except BaseException:
        _close(hosts)
        raise
    return hosts


def _close(hosts: list[Host]) -> None:
    for host in hosts:
        if host.session is not None:
            host.session.close()


def _answer(host: Host, answer: dict, expected: str):
    """The payload of `expected` in the host's answer, or its failure (said already)."""
    if expected in answer:
        return answer[expected]
    if "exit" not in answer:
        raise PlugboxError(f"plugbox on {host.name} answered {str(answer)[:80]!r}, not {expected!r}",
                           "run `plug bootstrap` to install the plugbox that matches plug")
    raise d.Quiet(d._exit(answer))


# ---------------------------------------------------------------- deploy

def deploy(config: Config, message: str | None = None, wait_lock: float = 0,
           batch: int = 0, keep_going: bool = False) -> list[str]:
    """Deploy to every host in two phases; returns the summary (raises after printing it on failure)."""
    began = time.monotonic()
    hosts = _sessions(config)
    name = None
    try:
        for line in config.prepare:
            d.say(f"prepare: {line}")
            code = transport.run(["sh", "-c", line], cwd=config.project).code
            if code != 0:
                raise PlugboxError(f"prepare: `{line}` exited with {code}",
                                   "nothing changed on any host; fix the build and deploy again")
        sources = d.upload_sources(config)
        text = config.path.read_text(encoding="utf-8")
        request = d._request(config, {"command": "deploy", "two_phase": True, "config": text,
                                      "origin": d.origin(config, message), "wait_lock": wait_lock})

        def lock(host: Host) -> None:
            newest = _answer(host, host.request(request), "newest")
            if not isinstance(newest, dict):
                raise PlugboxError(f"plugbox on {host.name} answered {str(newest)[:80]!r}")
            host.newest, host.was = newest.get("name"), newest.get("live")
            for known in (host.newest, host.was):
                if known is not None:
                    validate_version(known)
            host.state = "named"

        failed = _each(hosts, lock, "")
        for host in failed:
            host.result = "unreachable" if host.code == transport.CONNECTION_FAILED else "refused"
        if not failed:
            # Plug's clock, after every host's newest version: the same name everywhere.
            name = new_version_name([host.newest for host in hosts if host.newest])

            def prepare(host: Host) -> None:
                upload = _answer(host, host.request({"name": name}), "upload")
                version, live, path = d._staging(upload, host.name)
                if version != name:
                    raise PlugboxError(f"plugbox on {host.name} named the version {version}, not {name}",
                                       "run `plug bootstrap` to install the plugbox that matches plug")
                host.say(f"new version {name}" + (f", unchanged files hard-linked from {live}" if live else ""))
                started = time.monotonic()
                count = d._rsync(sources, host.session.destination(path + "/"), config=host.config,
                                 rsh=host.session.rsh, link_dest=f"../{live}" if live else None, progress=False)
                host.say(f"uploaded in {time.monotonic() - started:.1f} s: {count.files()}")
                host.session.send({"uploaded": True})
                host.state = "uploaded"
                _answer(host, host.session.receive(), "prepared")
                host.state = "prepared"
                host.say("prepared: waiting for the other hosts")

            failed = _each(hosts, prepare, "")
            for host in failed:
                host.result = {"named": "upload failed", "uploaded": "post_upload failed"}.get(host.state, "failed")
        if failed:
            return _called_off(hosts, failed, name, began)
        return _switch(hosts, name, batch, keep_going, began)
    except KeyboardInterrupt:
        switching = [host.name for host in hosts if host.state in ("switching", "switched")]
        for host in hosts:
            host.session.quiet = True
        if switching:
            raise PlugboxError(f"interrupted while {', '.join(switching)} switched to {name}",
                               "those hosts finish by themselves, the others keep their version: "
                               "see `plug status`", code=130) from None
        raise PlugboxError("interrupted before the switch",
                           "nothing changed on any host: each removes what it had made", code=130) from None
    finally:
        _close(hosts)


def _called_off(hosts: list[Host], failed: list[Host], name: str | None, began: float) -> list[str]:
    """Phase 1 failed somewhere: every host removes what it made; nothing switched."""
    def call_off(host: Host) -> None:
        if host.state in ("named", "prepared"):  # it waits for plug: a word ends it at once
            host.session.send({"abort": True})
            while "exit" not in host.session.receive():
                pass
        host.session.close(30)  # the end of its input: a host removes its staging directory
        host.result = host.result or "called off"

    _each([host for host in hosts if host not in failed], call_off, "called off")
    for host in failed:
        host.session.close(30)
    for host in hosts:
        host.now = host.was
    _table(hosts, began)
    raise PlugboxError(
        f"{_names(failed)} failed before the switch",
        "no host switched" + (f", and {name} was removed from every host" if name else "")
        + ": fix it and deploy again", code=failed[0].code)


def _tell(host: Host, message: dict, began: float, until: str | None = None) -> dict:
    """Send `message` to the host and return its answer (the first that has `until`);
    a host lost meanwhile finishes by itself, and the table says so."""
    host.session.send(message)
    try:
        answer = host.session.receive()
        while until and until not in answer:
            answer = host.session.receive()
        return answer
    except transport.HostGone:
        host.known, host.result = False, "lost: it finishes by itself"
        raise
    finally:
        host.seconds = time.monotonic() - began


def _switch(hosts: list[Host], name: str, batch: int, keep_going: bool, began: float) -> list[str]:
    """Phase 2: switch in groups; put the fleet back together if a host fails."""
    def switch(host: Host) -> None:
        host.state = "switching"
        _answer(host, _tell(host, {"switch": True}, began), "switched")
        host.state = "switched"

    groups = [hosts[i:i + batch] for i in range(0, len(hosts), batch)] if batch else [hosts]
    failed: list[Host] = []
    for group in groups:
        failed += _each(group, switch, "failed, switched back")
        if failed and not keep_going:
            break

    for host in failed:
        if host.code == REVERT_FAILED:
            host.result = "failed, switched back, not up"

    def end(host: Host, word: str, result: str) -> None:
        answer = _tell(host, {word: True}, began, until="exit")
        host.result = host.result or result
        if d._exit(answer) == REVERT_FAILED:
            host.result, host.code = "switched back, not up", REVERT_FAILED
        host.state = "done"

    switched = [host for host in hosts if host.state == "switched"]
    waiting = [host for host in hosts if host.state == "prepared"]
    if failed and not keep_going:
        _each(switched, lambda host: end(host, "revert", "switched back"), "revert failed")
        _each(waiting, lambda host: end(host, "abort", "not switched"), "abort failed")
    else:
        _each(switched, lambda host: end(host, "commit", "switched"), "failed")
    for host in hosts:
        host.now = name if host.result == "switched" else host.was
    _table(hosts, began)
    if not failed:
        return [f"version {name} is live on {len(hosts)} hosts"]
    if keep_going:
        on_new = [host for host in hosts if host.result == "switched"]
        raise PlugboxError(
            f"{name} failed on {_names(failed)}",
            f"carried on (--keep-going): {_names(on_new) or 'no host'} on {name}, the others as the table says; "
            "deploy again or `plug rollback` to bring them together", code=failed[0].code)
    lost = [host for host in hosts if not host.known]
    if lost:
        raise PlugboxError(
            f"{name} failed on {_names(failed)}; the others were switched back",
            f"plug lost {_names(lost)}, which finishes by itself: see `plug status`", code=failed[0].code)
    raise PlugboxError(f"{name} failed on {_names(failed)}",
                       "every host is back on the version it had; see the lines above", code=failed[0].code)


def _names(hosts: list[Host]) -> str:
    return ", ".join(host.name for host in hosts)


def _table(hosts: list[Host], began: float) -> None:
    """The summary on stdout: host, live version, result, seconds."""
    rows = [("HOST", "LIVE", "RESULT", "SECONDS")]
    for host in hosts:
        live = "?" if not host.known or host.state == "connecting" else host.now or "none"
        rows.append((host.name, live, host.result or "?", f"{host.seconds or time.monotonic() - began:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(field.ljust(width) for field, width in zip(row, widths)) + "  " + row[3])
    sys.stdout.flush()


# ---------------------------------------------------------------- rollback

def rollback(config: Config, version: str | None, refresh: bool, wait_lock: float = 0) -> list[str]:
    """Roll every host back to one version, checked on every host (under its lock) first.

    Without VERSION: the previous version of the newest live one, so that a fleet
    that has drifted apart (one host rolled back by hand) comes back together.
    Hosts where the version is live already are left as they are.
    """
    began = time.monotonic()
    hosts = _sessions(config)
    versions: dict[str, set[str]] = {}
    previous: dict[str, str | None] = {}
    try:
        request = d._request(config, {"command": "rollback", "two_phase": True, "version": version,
                                      "refresh": refresh, "wait_lock": wait_lock})

        def ready(host: Host) -> None:
            state = _answer(host, host.request(request), "ready")
            try:
                host.was, previous[host.name] = state["live"], state["previous"]
                versions[host.name] = set(state["versions"])
            except (KeyError, TypeError):
                raise PlugboxError(f"plugbox on {host.name} answered {str(state)[:80]!r}",
                                   "run `plug bootstrap` to install the plugbox that matches plug") from None
            host.state = "ready"

        failed = _each(hosts, ready, "refused")
        try:
            if failed:
                raise PlugboxError(f"the rollback stopped at {_names(failed)}", "nothing was rolled back on any host",
                                   code=failed[0].code)
            target = version or _previous_of_newest(hosts, previous)
            missing = [host for host in hosts if target not in versions[host.name]]
            if missing:
                raise PlugboxError(f"no version {target} on {_names(missing)}",
                                   "nothing was rolled back on any host; see `plug status`")
        except PlugboxError:
            for host in hosts:  # called off: each host lets go of its lock, nothing changed
                host.session.quiet = True
                host.session.send({"abort": True})
            raise

        def go(host: Host) -> None:
            answer = host.request({"version": target})
            host.seconds = time.monotonic() - began
            if d._exit(answer):
                host.now = host.was
                raise d.Quiet(d._exit(answer))
            host.now = answer.get("name")
            host.result = "already live" if host.now == host.was else "rolled back"

        failed = _each(hosts, go, "failed")
    finally:
        _close(hosts)
    _table(hosts, began)
    if failed:
        raise PlugboxError(f"the rollback to {target} failed on {_names(failed)}",
                           "the hosts are on the versions the table shows; see the lines above",
                           code=failed[0].code)
    return [f"version {target} is live on {len(hosts)} hosts"]


def _previous_of_newest(hosts: list[Host], previous: dict[str, str | None]) -> str:
    live = [host for host in hosts if host.was]
    if not live:
        raise PlugboxError("there is no live version to roll back from on any host",
                           "name a version: `plug rollback VERSION`")
    newest = max(live, key=lambda host: host.was)
    target = previous[newest.name]
    if target is None:
        raise PlugboxError(f"the live version {newest.was} on {newest.name} has no previous version",
                           "see `plug status`")
    return target


# ---------------------------------------------------------------- the other commands

def server_command(config: Config, request: dict) -> int:
    """One plugbox command on every host at once; each host's output, prefixed by it."""
    hosts = _sessions(config)
    answers: dict[str, dict] = {}
    try:
        def run(host: Host) -> None:
            answers[host.name] = host.request(d._request(host.config, request))
            if d._exit(answers[host.name]):
                raise d.Quiet(d._exit(answers[host.name]))

        failed = _each(hosts, run, "failed")
    finally:
        _close(hosts)
    status = request.get("command") == "status"
    if status and request.get("json"):
        states = {}
        for host in hosts:
            try:
                states[host.name] = json.loads(answers[host.name]["out"])
            except (KeyError, ValueError):
                states[host.name] = None
        lives = {name: state["live"] for name, state in states.items() if state}
        print(json.dumps({"hosts": states, "same_live": len(states) == len(lives) and len(set(lives.values())) == 1},
                         indent=2))
    else:
        for host in hosts:
            for line in answers.get(host.name, {}).get("out", "").splitlines():
                print(f"{host.name}: {line}")
        if status:
            print(_lives(hosts, answers))
    sys.stdout.flush()
    return failed[0].code if failed else 0


def _lives(hosts: list[Host], answers: dict[str, dict]) -> str:
    """One line: the live version of every host, and whether they differ."""
    lives: dict[str, list[str]] = {}
    for host in hosts:
        answer = answers.get(host.name, {})
        live = (answer.get("live") or "no version") if "live" in answer else "unknown"
        lives.setdefault(live, []).append(host.name)
    if len(lives) == 1:
        return f"live on every host: {next(iter(lives))}"
    return "live versions differ: " + "; ".join(f"{', '.join(names)} on {live}" for live, names in lives.items())


def dry_run(config: Config) -> list[str]:
    """What a deploy would do on each host, one host after the other; changes nothing."""
    return [f"{name}: {line}" for name in config.hosts for line in d.dry_run(config.for_host(name))]
