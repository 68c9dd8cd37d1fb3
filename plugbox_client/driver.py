"""One driver for one host or many: what each plug command that works on hosts does, in order.

A command runs on the hosts of its config (`hosts`, or the one `host`): one
`Host` each, with its own Session (its own plugbox --serve, its own ssh master),
driven together by `_Hosts.each` (one thread a host; the only host runs in plug's
own thread). One host is a fleet of one: the differences are parameters of the
same steps, decided once in `_Hosts` (`gated`, the prefix of each line, the
summary), never a second copy of a command.

Runs nothing itself: sessions, rsync and the build go through transport.py and
upload.py; the messages are protocol.py's. Progress goes to stderr; the functions
return what the command reports on stdout, or raise a PlugboxError (its summary
printed first where there is one).

A deploy is one transaction on each host (the exchange is in protocol.py):

1. Each host takes its lock and makes a staging directory. With several hosts
   (`gated`), each first tells its newest version, and plug names the version
   once for all, after every host's newest.
2. rsync fills each staging directory, unchanged files hard-linked from live.
3. Each host renames it into place and runs post_upload; an ungated host goes
   on to switch by itself. Gated hosts wait: a failure on any host calls the
   deploy off everywhere (no host switches, each removes the new version); then
   they switch, all at once or `batch` at a time, each group's check passing
   before the next. When one fails (and switches itself back), the hosts
   already switched are told to revert and the others to call it off, so the
   fleet ends on one version; with `keep_going`, the others go on.

What only some commands need (the build, the upload, threads for several hosts)
is imported where it is needed: plug loads this module for every command, while
the host is waiting for its request.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from plugbox_client import transport
from plugbox_client.config import Config
from plugbox_server import protocol as P
from plugbox_server.errors import CONNECTION_FAILED, INTERRUPTED, REVERT_FAILED, USAGE, PlugboxError
from plugbox_server.names import login, new_version_name, validate_revision, validate_version, validate_version_spec
from plugbox_server.output import ask

if TYPE_CHECKING:
    from plugbox_client import artifact as artifacts
    from plugbox_client import upload


class Quiet(PlugboxError):
    """A failure the host has already explained on stderr: plug only exits with its code."""

    def __init__(self, code: int):
        super().__init__("", code=code)


def version_argument(name: str) -> str:
    """A version named on plug's command line (a name, a prefix, live, previous,
    live~N): refused (bad usage) before anything connects. The host resolves it."""
    try:
        return validate_version_spec(name)
    except PlugboxError as error:
        raise PlugboxError(error.message, "see `plug status` for the versions", code=USAGE) from None


def revision_argument(rev: str) -> str:
    """A git revision on plug's command line (--rev), refused before anything connects."""
    try:
        return validate_revision(rev)
    except PlugboxError as error:
        raise PlugboxError(error.message, "see `plug status` for the revisions", code=USAGE) from None


def caller() -> dict:
    """Who runs plug, and on which machine: every request says it, so that the
    host's lock names them to whoever it turns away (and a record keeps them)."""
    return {"user": login(), "machine": os.uname().nodename}


@dataclass
class Host:
    """One host of a command: its session, and how it fared."""

    name: str
    config: Config
    prefix: str = ""
    session: transport.Session | None = None
    was: str | None = None       # its live version before the command
    now: str | None = None       # its live version after it
    newest: str | None = None    # its newest version, once it holds the lock
    staging: dict | None = None  # where to upload, once the host has made it
    state: str = "connecting"    # how far it got: named, uploaded, prepared, switched, done
    result: str = ""             # the summary's word for how it ended
    code: int = 0                # its exit status, when it failed
    seconds: float = 0.0
    known: bool = True           # False: plug lost it, it finishes by itself

    def say(self, message: str) -> None:
        transport.show(f"{self.prefix}==> {message}")

    def request(self, message: dict) -> dict:
        return self.session.request(message)

    def expect(self, answer: dict, expected: str):
        """The payload of `expected` in the host's answer, or its failure (said already)."""
        if expected in answer:
            return answer[expected]
        if P.EXIT not in answer:
            raise P.ProtocolError(f"plugbox on {self.name} answered {str(answer)[:80]!r}, not {expected!r}")
        raise Quiet(P.exit_code(answer))

    def fail(self, result: str, error: BaseException) -> None:
        self.result = self.result or result
        self.code = self.code or getattr(error, "code", 1) or 1
        if str(error) and not isinstance(error, Quiet):
            transport.show(f"{self.prefix}plug: {error}")


class _Hosts:
    """The hosts of one command, each with its session open (or opening)."""

    def __init__(self, config: Config, serve: bool = True):
        self.config = config
        self.gated = len(config.hosts) > 1      # several hosts decide together
        self.began = time.monotonic()
        self.hosts = [Host(name, config.for_host(name), f"{name}: " if self.gated else "")
                      for name in config.hosts]
        try:
            for host in self.hosts:
                host.session = (transport.open_session(host.config, host.prefix) if serve else
                                transport.Session(host.config, host.prefix, serve=False))
        except BaseException:
            self.close()
            raise

    @property
    def label(self) -> str:
        """What "nothing changed on ..." names."""
        return "any host" if self.gated else self.hosts[0].session.label

    def each(self, work: Callable[[Host], None], failed: str, hosts: list[Host] | None = None) -> list[Host]:
        """work(host) on every host at once; the hosts where it raised, marked `failed`.

        The only host of a command runs in plug's own thread, so that Ctrl-C
        reaches what it is doing (rsync) as it would without threads, and what
        it raises goes straight to the command, which says it in its own words.
        """
        hosts = self.hosts if hosts is None else hosts
        if not hosts:
            return []
        if not self.gated:
            work(hosts[0])
            return []
        from concurrent.futures import ThreadPoolExecutor

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
                if not isinstance(error, Exception):
                    raise error
                host.fail(failed, error)
        return [host for host, error in errors if error is not None]

    def close(self) -> None:
        """End every session: all hosts see the end of their input at once, then each
        is waited for (not one host's end after another's)."""
        for host in self.hosts:
            if host.session is not None:
                host.session.end_input()
        for host in self.hosts:
            if host.session is not None:
                host.session.close(1 if self.interrupted else 5)

    interrupted = False  # plug is leaving: a session's end of input is all a host needs of it

    def names(self, hosts: list[Host]) -> str:
        return ", ".join(host.name for host in hosts)

    def table(self) -> None:
        """The summary on stdout: host, live version, result, seconds."""
        rows = [("HOST", "LIVE", "RESULT", "SECONDS")]
        for host in self.hosts:
            live = "?" if not host.known or host.state == "connecting" else host.now or "none"
            rows.append((host.name, live, host.result or "?",
                         f"{host.seconds or time.monotonic() - self.began:.1f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            print("  ".join(field.ljust(width) for field, width in zip(row, widths)) + "  " + row[3])
        sys.stdout.flush()


def say(message: str) -> None:
    transport.show(f"==> {message}")


class _Steps:
    """How long each step took, for the summary of one host."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.began = time.monotonic()

    @contextmanager
    def __call__(self, name: str):
        began = time.monotonic()
        try:
            yield
        finally:  # a step that told its own time (lock() splits connect) keeps it
            self.seconds.setdefault(name, time.monotonic() - began)

    def line(self) -> str:
        self.seconds["total"] = time.monotonic() - self.began
        return "seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.seconds.items())


# ---------------------------------------------------------------- the plain commands

def server_command(config: Config, request: dict, confirm: bool = False) -> int:
    """One plugbox command on every host at once; print what each prints (prefixed by
    its name when there are several); return the exit status. `confirm` (a remove or
    prune on a terminal): see _exchange."""
    hosts, answers, code = _exchange(config, request, confirm)
    _print_out(hosts, answers)
    return code


def _exchange(config: Config, request: dict, confirm: bool = False) -> tuple["_Hosts", dict[str, dict], int]:
    """Send `request` to every host; return the hosts, their last answers, and the
    exit status (the first host's that failed).

    With `confirm`, a host that has versions to remove shows its plan and waits,
    under its lock; once every host has answered, plug asks once (when more than
    one version would go) and tells each to go ahead, or calls it off everywhere.
    """
    if confirm:
        request = {**request, "confirm": True}
    hosts = _Hosts(config)
    answers: dict[str, dict] = {}
    plans: dict[str, dict] = {}
    try:
        def run(host: Host) -> None:
            answer = host.request(request)
            if P.PLAN in answer:  # it waits, under its lock, for a word
                plans[host.name] = P.read_plan(answer[P.PLAN], host.name)
            else:
                answers[host.name] = answer

        failed = hosts.each(run, "failed")
        if plans:
            go = _confirmed(hosts, plans)

            def settle(host: Host) -> None:
                host.session.quiet = not go  # called off: plug says it once, for every host
                answers[host.name] = _tell(hosts, host, {P.COMMIT if go else P.ABORT: True}, until=P.EXIT)

            failed += hosts.each(settle, "failed", [host for host in hosts.hosts if host.name in plans])
            if not go:
                raise PlugboxError("called off", "nothing was removed" + (" on any host" if hosts.gated else ""))
    finally:
        hosts.close()
    codes = [host.code for host in failed] + [P.exit_code(answer) for answer in answers.values()]
    return hosts, answers, next((code for code in codes if code), 0)


def _confirmed(hosts: "_Hosts", plans: dict[str, dict]) -> bool:
    """Whether a person agrees to the plans: asked only when more than one version would go."""
    doomed = {name for plan in plans.values() for name in plan["remove"]}
    if len(doomed) <= 1:
        return True
    for host in hosts.hosts:
        for line in plans.get(host.name, {}).get("lines", []):
            transport.show(f"{host.prefix}{line}")
    where = f" on {len(plans)} hosts" if hosts.gated else ""
    return ask(f"remove {len(doomed)} versions{where}? [y/N] ")


def _print_out(hosts: "_Hosts", answers: dict[str, dict]) -> None:
    """What each host printed, on stdout: prefixed by its name when there are several."""
    if not hosts.gated:
        sys.stdout.write(next(iter(answers.values()), {}).get(P.OUT, ""))
    else:
        for host in hosts.hosts:
            for line in answers.get(host.name, {}).get(P.OUT, "").splitlines():
                print(f"{host.prefix}{line}")
    sys.stdout.flush()


def status(config: Config, request: dict) -> int:
    """plugbox status on every host. One host: its list. Several: with "brief" in the
    request, one line per host (its live version, revision, who, when, message),
    else every host's list, prefixed; then whether their live versions differ.
    The version names seen are kept for shell completion."""
    hosts, answers, code = _exchange(config, request)
    from plugbox_client import completion

    completion.remember(config, [name for answer in answers.values() for name in answer.get("versions") or []
                                 if isinstance(name, str)])
    if request.get("json") and hosts.gated:
        states = {}
        for host in hosts.hosts:
            try:
                states[host.name] = json.loads(answers[host.name][P.OUT])
            except (KeyError, ValueError):
                states[host.name] = None
        lives = {name: state["live"] for name, state in states.items() if state}
        print(json.dumps({"hosts": states, "same_live": len(states) == len(lives)
                          and len(set(lives.values())) == 1}, indent=2))
    elif request.get("brief"):
        _table([("HOST", "LIVE", "REVISION", "BY", "WHEN", "MESSAGE")]
               + [(host.name, *_row(answers.get(host.name))) for host in hosts.hosts])
        print(_lives(hosts.hosts, answers))
    else:
        _print_out(hosts, answers)
        if hosts.gated:
            print(_lives(hosts.hosts, answers))
    sys.stdout.flush()
    return code


def _row(answer: dict | None) -> tuple[str, ...]:
    """A host's line of the compact view, from its answer."""
    if answer is None or P.exit_code(answer):
        return ("?",)
    row = answer.get("row")
    if not isinstance(row, list) or not all(isinstance(cell, str) for cell in row):
        return ("none",)
    return tuple(" ".join(cell.split()) for cell in row)


def _table(rows: list[tuple[str, ...]]) -> None:
    """Rows as aligned columns on stdout; the last cell of each row is not padded."""
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(max(map(len, rows)))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)).rstrip())


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


# ---------------------------------------------------------------- deploy

def origin(config: Config, message: str | None, artifact: artifacts.Artifact | None = None) -> dict:
    """Who deploys, from which machine and source, and why, and from what artifact:
    the version's record keeps it."""
    made_from = {"artifact": artifact.name, "artifact_sha256": artifact.sha256} if artifact else {}
    from plugbox_client import source

    return {**caller(), **source.describe(config.project), "message": message, **made_from}


UNCHANGED = "unchanged"  # a host's state when its live version has the artifact already


def _nothing_to_deploy(live: str | None, artifact: artifacts.Artifact) -> str:
    return f"nothing to deploy: live version {live} has {artifact.short} already; --force deploys it again"


def prepare(config: Config, nothing_changed: str, steps: tuple[Callable[[], None], ...] = (),
            out: Callable[[str], None] | None = None, err: Callable[[str], None] | None = None) -> None:
    """Run the prepare steps here, in the project directory: `steps` first (Python
    functions: a fabfile's @service.prepare), then [build] prepare. `out`, `err`:
    where what they and plug say goes, as transport.run takes them (default: the
    terminal)."""
    tell = out or say
    for step in steps:
        tell(f"prepare: {getattr(step, '__name__', step)}()")
        try:
            step()
        except PlugboxError:
            raise
        except Exception as error:
            said = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise PlugboxError(f"prepare: {getattr(step, '__name__', step)}() failed: {said}",
                               f"nothing changed on {nothing_changed}; fix the build and deploy again") from None
    for line in config.prepare:
        tell(f"prepare: {line}")
        code = transport.run(["sh", "-c", line], cwd=config.project, out=out, err=err).code
        if code != 0:
            raise PlugboxError(f"prepare: `{line}` exited with {code}",
                               f"nothing changed on {nothing_changed}; fix the build and deploy again")


def deploy(config: Config, message: str | None = None, wait_lock: float = 0,
           batch: int = 0, keep_going: bool = False, artifact: Path | None = None,
           force: bool = False, quiet: bool = False,
           change: tuple[dict[str, str], list[str]] | None = None,
           prepare_steps: tuple[Callable[[], None], ...] = ()) -> list[str]:
    """prepare (while ssh connects), then one transaction on each host; returns the summary.

    `artifact`: the file `--artifact` names, built already: prepare is not run.
    A host whose live version was made from the same artifact makes nothing
    (unless `force`) and takes no further part.

    On a terminal the upload shows one progress bar per host (unless `quiet`);
    otherwise plain lines only. `change`, an environment change (values set,
    names unset), makes the new version on each host from its live version's
    files instead: no build, no upload. `prepare_steps`: Python functions run
    before [build] prepare (see prepare).
    """
    from plugbox_client import upload

    hosts = _Hosts(config)
    steps = _Steps()
    gated = hosts.gated
    name: str | None = None
    counts: dict[str, upload.Count] = {}
    scratch = contextlib.ExitStack()
    bars = None
    try:
        with steps("prepare"):
            what = None
            if change is None:
                if artifact is None:
                    prepare(config, hosts.label, prepare_steps)
                what = upload.contents(config, artifact, lambda: scratch.enter_context(transport.scratch()))
                if what.artifact:
                    say(f"artifact {what.artifact.name}: {what.artifact.files} "
                        f"file{'' if what.artifact.files == 1 else 's'}, sha256 {what.artifact.sha256}")
                fields = dict(config=config.path.read_text(encoding="utf-8"), force=force or None)
            else:  # the values go over the session's stdin, in the request, and nowhere else
                fields = dict(env_set=change[0] or None, env_unset=change[1] or None)
            request = P.request("deploy", config.home, origin=origin(config, message, what and what.artifact),
                                wait_lock=wait_lock or None, gated=gated or None, **fields)

        def lock(host: Host) -> None:
            host.session.send(request)
            began = time.monotonic()
            host.session.greet()  # connected: what follows is the wait for the host's lock
            if wait_lock and not gated:
                steps.seconds["connect"] = time.monotonic() - began
                began = time.monotonic()
            answer = host.session.receive()
            if wait_lock and not gated:
                steps.seconds["lock"] = time.monotonic() - began
            if what and what.artifact and P.EXIT in answer and P.exit_code(answer) == 0 and answer.get(P.UNCHANGED):
                host.was, = P.read_versions(answer, host.name, "name")
                host.now, host.state, host.result = host.was, UNCHANGED, "nothing to deploy"
                if gated:
                    host.say(_nothing_to_deploy(host.was, what.artifact))
                return
            if gated:
                host.newest, host.was = P.read_versions(host.expect(answer, P.NEWEST), host.name, "name", "live")
                host.state = "named"
            elif change is None:
                host.staging = host.expect(answer, P.UPLOAD)
            else:  # the host made the version and switched to it by itself: this is its last word
                if P.exit_code(answer):
                    raise Quiet(P.exit_code(answer))
                host.now, host.was = answer.get("name"), answer.get("was")

        with steps("connect"):  # with --wait-lock, split into connect and lock by lock()
            failed = hosts.each(lock, "")
        for host in failed:
            host.result = "unreachable" if host.code == CONNECTION_FAILED else "refused"

        def send(host: Host) -> None:
            if change is not None:  # the host fills the version itself, from live's files
                if gated:
                    host.expect(host.request({P.NAME: name}), P.PREPARED)
                    host.now, host.state = name, "prepared"
                    host.say(f"new version {name}, live's files with the new environment: waiting for "
                             "the other hosts")
                return
            if gated:
                host.staging = host.expect(host.request({P.NAME: name}), P.UPLOAD)
            version, host.was, path = P.read_versions(host.staging, host.name, "name", "live", "path")
            if gated and version != name:
                raise P.ProtocolError(f"plugbox on {host.name} named the version {version}, not {name}")
            host.now = version
            host.say(f"new version {version}" + (f", unchanged files hard-linked from {host.was}"
                                                 if host.was else ""))
            started = time.monotonic()
            try:
                counts[host.name] = upload.rsync(
                    what, host.session.destination(path + "/"), config=host.config, rsh=host.session.rsh,
                    link_dest=f"../{host.was}" if host.was else None,
                    progress=bars.of(host.name) if bars else None, prefix=host.prefix)
            except PlugboxError as error:
                if host.session.ended(1):  # rsync died of it, with one of several exit statuses
                    raise transport.HostGone(f"lost the connection ({error.message})") from None
                raise
            if gated:
                host.say(f"uploaded in {time.monotonic() - started:.1f} s: {counts[host.name].files()}")
            host.session.send({P.UPLOADED: True})
            host.state = "uploaded"
            if gated:
                host.expect(host.session.receive(), P.PREPARED)
                host.state = "prepared"
                host.say("prepared: waiting for the other hosts")

        taking_part = [host for host in hosts.hosts if host.state != UNCHANGED]
        if not failed and not taking_part:
            if not gated:
                return [_nothing_to_deploy(hosts.hosts[0].was, what.artifact)]
            hosts.table()
            return [f"nothing to deploy: every host has {what.artifact.short} live already; "
                    "--force deploys it again"]
        if not failed:
            if gated:  # plug's clock, after every host's newest version: one name everywhere
                name = new_version_name([host.newest for host in taking_part if host.newest])
            uploads = change is None and not quiet and _terminal()  # an environment change sends nothing
            shown = [host.name for host in taking_part] if uploads else None
            with _bars(shown) as bars, steps("upload"):
                failed = hosts.each(send, "", taking_part)
            for host in failed:
                host.result = {"named": "upload failed", "uploaded": "post_upload failed"}.get(host.state, "failed")
        if failed:
            return _called_off(hosts, failed, name)
        if gated and change is None and config.hooks.get("release"):
            _release(hosts, taking_part, name)
        if gated:
            return _switch(hosts, name, batch, keep_going)
        host = hosts.hosts[0]
        if change is not None:
            return [f"version {host.now} is live (was {host.was})", f"environment: {changed(change)}",
                    f"seconds: total {time.monotonic() - steps.began:.1f}"]
        with steps("switch"):
            answer = host.session.receive()
        if P.exit_code(answer):
            raise Quiet(P.exit_code(answer))
        count = counts[host.name]
        return [f"version {host.now} is live" + (f" (was {host.was})" if host.was else " (first deploy)"),
                f"files: {count.files()}; {upload.human(count.wire_bytes)} sent over the wire",
                steps.line()]
    except KeyboardInterrupt:
        hosts.interrupted = True
        for host in hosts.hosts:
            host.session.quiet = True
        raise _interrupted(hosts, name) from None
    except PlugboxError as error:
        if gated:  # said in the table already
            raise
        raise _one_failed(hosts.hosts[0], error) from None
    finally:
        hosts.close()
        scratch.close()


def _terminal() -> bool:
    """Whether stderr is a terminal that can draw progress bars (not TERM=dumb)."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def _bars(names: list[str] | None):
    """One progress bar per name on stderr (progress.Bars), or none: None."""
    if names is None:
        return contextlib.nullcontext(None)
    from plugbox_client.progress import Bars  # rich: only when there is a bar to draw

    return Bars(names)


def changed(change: tuple[dict[str, str], list[str]]) -> str:
    """An environment change in words: the names, never the values."""
    set_names, unset = sorted(change[0]), sorted(change[1])
    return "; ".join(([f"set {', '.join(set_names)}"] if set_names else []) +
                     ([f"unset {', '.join(unset)}"] if unset else []))


def _one_failed(host: Host, error: PlugboxError) -> PlugboxError:
    """What a failure of the only host means: after the upload, that the host
    finishes by itself; during the upload, that nothing changed."""
    if host.state == "uploaded":
        if isinstance(error, transport.HostGone):
            return transport.HostGone(f"{error.message} after the upload of {host.now}",
                                      "the host finishes the deploy by itself: see `plug status` and `plug log`")
        return error
    if not host.now or isinstance(error, Quiet):
        return error
    host.session.close()  # the host removes the staging directory when its input ends
    return PlugboxError(f"upload of {host.now} failed: {error.message}",
                        f"nothing changed on {host.session.label}: " +
                        (f"live is still {host.was}" if host.was else "there is still no live version"),
                        code=error.code)


def _interrupted(hosts: _Hosts, name: str | None) -> PlugboxError:
    """What a Ctrl-C (or SIGTERM, SIGHUP) during a deploy leaves, in one line."""
    if not hosts.gated:
        host = hosts.hosts[0]
        label = host.session.label
        if host.state == "uploaded":
            return PlugboxError(f"interrupted after the upload of {host.now}",
                                f"{label} finishes the deploy by itself: follow it with `plug status` "
                                "and `plug log --output`", code=INTERRUPTED)
        return PlugboxError("interrupted before the upload was complete", f"nothing changed on {label}",
                            code=INTERRUPTED)
    switching = [host for host in hosts.hosts if host.state in ("switching", "switched")]
    if switching:
        return PlugboxError(f"interrupted while {hosts.names(switching)} switched to {name}",
                            "those hosts finish by themselves, the others keep their version: "
                            "see `plug status`", code=INTERRUPTED)
    return PlugboxError("interrupted before the switch",
                        "nothing changed on any host: each removes what it had made", code=INTERRUPTED)


def _release(hosts: _Hosts, taking_part: list[Host], name: str) -> None:
    """The release step, once, on one host, after every host prepared and before any
    switches: [release] host (else the first; a host with nothing to deploy hands it
    to the first that has). A failure calls the deploy off everywhere."""
    chosen = next((host for host in taking_part if host.name == hosts.config.release_host), taking_part[0])
    chosen.say(f"release step of {name}, for every host")
    try:
        answer = _tell(hosts, chosen, {P.RELEASE: True})
        released = chosen.expect(answer, P.RELEASED)
    except PlugboxError as error:
        chosen.fail("release failed", error)
        chosen.state = "done"  # it removed the new version itself
        _called_off(hosts, [chosen], name, f"the release step failed on {chosen.name}")
    if isinstance(released, dict) and not released.get("ran"):
        chosen.say(f"release step skipped: {released.get('why')}")


def _called_off(hosts: _Hosts, failed: list[Host], name: str | None, why: str = "") -> list[str]:
    """Phase 1 failed somewhere: every host removes what it made; nothing switched."""
    def call_off(host: Host) -> None:
        if host.state in ("named", "prepared"):  # it waits for plug: a word ends it at once
            host.session.send({P.ABORT: True})
            while P.EXIT not in host.session.receive():
                pass
        host.session.close(30)  # the end of its input: a host removes its staging directory
        host.result = host.result or "called off"

    hosts.each(call_off, "called off", [host for host in hosts.hosts if host not in failed])
    for host in failed:
        host.session.close(30)
    for host in hosts.hosts:
        host.now = host.was
    hosts.table()
    raise PlugboxError(
        why or f"{hosts.names(failed)} failed before the switch",
        "no host switched" + (f", and {name} was removed from every host" if name else "")
        + (f"; {failed[0].name} keeps what it printed: `plug log --output`" if why else
           ": fix it and deploy again"), code=failed[0].code)


def _tell(hosts: _Hosts, host: Host, message: dict, until: str | None = None) -> dict:
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
        host.seconds = time.monotonic() - hosts.began


def _switch(hosts: _Hosts, name: str, batch: int, keep_going: bool) -> list[str]:
    """Phase 2: switch in groups; put the fleet back together if a host fails."""
    def switch(host: Host) -> None:
        host.state = "switching"
        host.expect(_tell(hosts, host, {P.SWITCH: True}), P.SWITCHED)
        host.state = "switched"

    everyone = [host for host in hosts.hosts if host.state != UNCHANGED]
    unchanged = [host for host in hosts.hosts if host.state == UNCHANGED]
    groups = [everyone[i:i + batch] for i in range(0, len(everyone), batch)] if batch else [everyone]
    failed: list[Host] = []
    for group in groups:
        failed += hosts.each(switch, "failed, switched back", group)
        if failed and not keep_going:
            break

    for host in failed:
        if host.code == REVERT_FAILED:
            host.result = "failed, switched back, not up"

    def end(host: Host, word: str, result: str) -> None:
        answer = _tell(hosts, host, {word: True}, until=P.EXIT)
        host.result = host.result or result
        if P.exit_code(answer) == REVERT_FAILED:
            host.result, host.code = "switched back, not up", REVERT_FAILED
        host.state = "done"

    switched = [host for host in everyone if host.state == "switched"]
    waiting = [host for host in everyone if host.state == "prepared"]
    if failed and not keep_going:
        hosts.each(lambda host: end(host, P.REVERT, "switched back"), "revert failed", switched)
        hosts.each(lambda host: end(host, P.ABORT, "not switched"), "abort failed", waiting)
    else:
        hosts.each(lambda host: end(host, P.COMMIT, "switched"), "failed", switched)
    for host in everyone:
        host.now = name if host.result == "switched" else host.was
    hosts.table()
    if not failed:
        return [f"version {name} is live on {len(everyone)} hosts"
                + (f"; nothing to deploy on {hosts.names(unchanged)}" if unchanged else "")]
    if keep_going:
        on_new = [host for host in everyone if host.result == "switched"]
        raise PlugboxError(
            f"{name} failed on {hosts.names(failed)}",
            f"carried on (--keep-going): {hosts.names(on_new) or 'no host'} on {name}, the others as the "
            "table says; deploy again or `plug rollback` to bring them together", code=failed[0].code)
    lost = [host for host in everyone if not host.known]
    if lost:
        raise PlugboxError(
            f"{name} failed on {hosts.names(failed)}; the others were switched back",
            f"plug lost {hosts.names(lost)}, which finishes by itself: see `plug status`", code=failed[0].code)
    raise PlugboxError(f"{name} failed on {hosts.names(failed)}",
                       "every host is back on the version it had; see the lines above", code=failed[0].code)


def dry_run(config: Config, artifact: Path | None = None, force: bool = False) -> list[str]:
    """What a deploy would do on each host, from its real state; changes nothing anywhere.

    Counts with `rsync --dry-run` against each host's live version itself (what
    --link-dest would compare with); on a first deploy, against an empty local
    directory, and names the first files it would send. prepare is not run: the
    counts are for the project (or the artifact) as it is now. A host whose live
    version has the artifact already would make nothing (unless `force`).
    """
    from plugbox_client import upload

    hosts = _Hosts(config)
    found: dict[str, tuple[str | None, list[str], upload.Count | None]] = {}
    # "hold": the session, and so the connection rsync rides on, stays up until plug closes it.
    request = P.request("status", config.home, json=True, hold=True)
    try:
        with transport.scratch() as scratch:
            what = upload.contents(config, artifact, lambda: scratch)

            def look(host: Host) -> None:
                answer = host.request(request)
                if P.exit_code(answer):
                    raise Quiet(P.exit_code(answer))
                try:
                    state = json.loads(answer[P.OUT])
                    live, home = state["live"], state["home"]
                    names = [entry["name"] for entry in state["versions"]]
                    records = {entry["name"]: entry.get("record") or {} for entry in state["versions"]}
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise P.ProtocolError(f"plugbox on {host.session.label} printed no state plug "
                                          "understands") from None
                if (what.artifact and not force and live
                        and records.get(live, {}).get("artifact_sha256") == what.artifact.sha256):
                    found[host.name] = (live, names, None)
                    return
                if not host.session.hello.get("rsync"):  # the deploy would be refused: say it now
                    raise _no_rsync(host)
                if live:
                    validate_version(live)
                    count = upload.rsync(what, host.session.destination(f"{home}/deploy/{live}/"),
                                         config=host.config, rsh=host.session.rsh, dry_run=True,
                                         prefix=host.prefix)
                else:
                    empty = Path(scratch, f"empty-{host.name}")
                    empty.mkdir()
                    count = upload.rsync(what, str(empty) + "/", config=host.config, rsh=None, dry_run=True,
                                         prefix=host.prefix)
                found[host.name] = (live, names, count)

            failed = hosts.each(look, "failed")
    finally:
        hosts.close()
    if failed:
        raise Quiet(failed[0].code)
    name = new_version_name([n for _, names, _ in found.values() for n in names])
    lines = [f"would make version {name} (named by "
             + ("plug's clock, after every host's newest" if hosts.gated else "the host's clock")
             + " when it happens)"]
    if what.artifact:
        lines.append(f"artifact {what.artifact.name}: {what.artifact.files} "
                     f"file{'' if what.artifact.files == 1 else 's'}, sha256 {what.artifact.sha256}")
    for host in hosts.hosts:
        live, _, count = found[host.name]
        if count is None:
            lines.append(host.prefix + _nothing_to_deploy(live, what.artifact))
            continue
        lines += [host.prefix + (f"it would replace live version {live}" if live else
                                 "no live version: it would be the first deploy"),
                  host.prefix + f"files: would send {count.sent} ({upload.human(count.sent_size)}), "
                  f"hard-link {count.linked}" + (f", copy {count.copied}" if count.copied else "")]
        lines += [f"{host.prefix}  {path}" for path in count.names]
        if count.sent > len(count.names):
            lines.append(f"{host.prefix}  ... and {count.sent - len(count.names)} more")
    prepared = config.prepare and artifact is None
    lines.append("dry run: nothing changed" + (", prepare not run" if prepared else ""))
    return lines


def _no_rsync(host: Host) -> PlugboxError:
    return PlugboxError(f"rsync is not installed on {host.session.label}",
                        "install rsync there (apt-get install rsync); nothing changed")


# ---------------------------------------------------------------- rollback

def rollback(config: Config, version: str | None, refresh: bool, wait_lock: float = 0,
             rev: str | None = None) -> list[str]:
    """Switch live back on every host; returns the summary lines.

    VERSION (or `rev`) is resolved on each host, under its lock (a prefix, live~N
    ...: see chain.resolve). One host decides by itself (VERSION, or its live's
    previous). Several are asked first, under their locks, and all go to the
    same version: the one VERSION names on every host (they must agree), or the
    previous of the newest live one, so that a fleet that has drifted apart (one
    host rolled back by hand) comes back together; nothing is rolled back
    unless every host has it. Hosts where it is live already are left as they are.
    """
    if version:
        version_argument(version)
    if rev is not None:
        revision_argument(rev)
    hosts = _Hosts(config)
    gated = hosts.gated
    versions: dict[str, set[str]] = {}
    previous: dict[str, str | None] = {}
    named: dict[str, str | None] = {}
    target = version
    try:
        request = P.request("rollback", config.home, version=version, rev=rev, refresh=refresh or None,
                            wait_lock=wait_lock or None, gated=gated or None, origin=caller())

        def ready(host: Host) -> None:
            state = host.expect(host.request(request), P.READY)
            host.was, previous[host.name], named[host.name] = P.read_versions(
                state, host.name, "live", "previous", "version")
            if not isinstance(state.get("versions"), list):
                raise P.ProtocolError(f"plugbox on {host.name} answered {str(state)[:80]!r}")
            versions[host.name] = set(state["versions"])
            host.state = "ready"

        if gated:
            failed = hosts.each(ready, "refused")
            try:
                if failed:
                    raise PlugboxError(f"the rollback stopped at {hosts.names(failed)}",
                                       "nothing was rolled back on any host", code=failed[0].code)
                asked = _agreed(hosts, named, version or f"--rev {rev}") if version or rev else None
                target = rollback_target({host.name: (host.was, previous[host.name], versions[host.name])
                                          for host in hosts.hosts}, asked)
            except PlugboxError:
                for host in hosts.hosts:  # called off: each host lets go of its lock, nothing changed
                    if host in failed:  # it has said why: all of it is shown before plug's own line
                        host.session.close()
                        continue
                    host.session.quiet = True
                    host.session.send({P.ABORT: True})
                raise

        def go(host: Host) -> None:
            answer = host.request({P.VERSION: target}) if gated else host.request(request)
            host.seconds = time.monotonic() - hosts.began
            if P.exit_code(answer):
                host.now = host.was
                raise Quiet(P.exit_code(answer))
            host.now, was = answer.get("name"), answer.get("was")
            if not gated:
                host.was = was
            host.result = "already live" if host.now == host.was else "rolled back"

        failed = hosts.each(go, "failed")
    finally:
        hosts.close()
    if not gated:
        host = hosts.hosts[0]
        return [f"version {host.now} is live" + (f" (was {host.was})" if host.was else ""),
                f"seconds: total {host.seconds:.1f}"]
    hosts.table()
    if failed:
        raise PlugboxError(f"the rollback to {target} failed on {hosts.names(failed)}",
                           "the hosts are on the versions the table shows; see the lines above",
                           code=failed[0].code)
    return [f"version {target} is live on {len(hosts.hosts)} hosts"]


def _agreed(hosts: _Hosts, named: dict[str, str | None], asked: str) -> str:
    """The one version that `asked` names on every host (each resolved it), or a refusal."""
    where: dict[str, list[str]] = {}
    for host in hosts.hosts:
        where.setdefault(named[host.name] or "none", []).append(host.name)
    if len(where) > 1:
        raise PlugboxError(f"{asked} names different versions: "
                           + "; ".join(f"{version} on {', '.join(names)}" for version, names in where.items()),
                           "nothing was rolled back on any host; name the version")
    return next(iter(where))


def rollback_target(states: dict[str, tuple[str | None, str | None, set[str]]], version: str | None) -> str:
    """The version every host of a rollback goes to, from each host's (live, its
    previous, versions): VERSION, or the previous of the newest live one. Refused
    (nothing is rolled back anywhere) unless every host has it."""
    live = {name: state for name, state in states.items() if state[0]}
    target = version
    if target is None:
        if not live:
            raise PlugboxError("there is no live version to roll back from on any host",
                               "name a version: `plug rollback VERSION`")
        newest = max(live, key=lambda name: live[name][0])
        target = live[newest][1]
        if target is None:
            raise PlugboxError(f"the live version {live[newest][0]} on {newest} has no previous version",
                               "see `plug status`")
    missing = [name for name, (_, _, have) in states.items() if target not in have]
    if missing:
        raise PlugboxError(f"no version {target} on {', '.join(missing)}",
                           "nothing was rolled back on any host; see `plug status`")
    return target


# ---------------------------------------------------------------- bootstrap, exec, ssh

def bootstrap(config: Config, zipapp: Path, into_home: bool = False) -> list[str]:
    """Install (or upgrade) plugbox on every host and create the layout; returns the
    report. A host that fails does not stop the others: the report names it, and
    the command fails at the end.

    plugbox goes to the login's ~/.local/bin, where plug finds it for every home of
    that login, or with `into_home` to HOME/.local/bin, for that home alone.
    """
    import tempfile

    from plugbox_client import argv as A

    hosts = _Hosts(config, serve=False)
    reports: dict[str, list[str]] = {}

    def install(host: Host) -> None:
        session = host.session
        said: list[str] = []
        installed = session.ride(A.remote_install(host.config.home, into_home), stdin=zipapp, capture=True,
                                 err=said.append)
        why = next((line for line in reversed("".join(said).splitlines()) if line.strip()), "")
        if installed.code == CONNECTION_FAILED and not session.local:
            raise transport.HostGone(f"could not connect to {session.label}" + (f": {why}" if why else ""),
                                     f"check the host in plugbox.toml and that `ssh {session.label}` works")
        if installed.code != 0:  # what the host lacks, in its own words (INSTALL_PLUGBOX)
            raise PlugboxError(f"could not install plugbox on {session.label}: " + (why or f"exit {installed.code}"))
        # The plugbox just installed, asked over the same connection: hello, and the home.
        with tempfile.NamedTemporaryFile("wb", prefix="plug-") as asked:
            asked.write(P.encode(P.request("hello", host.config.home)))
            asked.flush()
            served = session.ride(A.remote_serve(host.config.home, session.env["PLUGBOX_USER"])
                                  if not session.local else
                                  [*transport.local_plugbox(host.config.home), *P.ARGS],
                                  stdin=Path(asked.name), capture=True)
        try:
            hello, answer = (P.decode(line, f"plugbox on {session.label}") for line in served.stdout.splitlines())
            hello = hello[P.HELLO]
        except (ValueError, KeyError, TypeError, P.ProtocolError):
            raise PlugboxError(f"plugbox was installed on {session.label} but does not run there",
                               "see the message above") from None
        if P.exit_code(answer):
            raise Quiet(P.exit_code(answer))
        home = answer.get("home")
        reports[host.name] = [
            *(f"plugbox {hello.get('plugbox')} installed on {session.label} as {path}"
              for path in installed.stdout.split("\n") if path),
            "it serves " + (f"the service in {home} alone" if into_home else
                            "every service of this ssh login whose home has no plugbox of its own"),
            f"layout ready in {home}: deploy/, shared/, config/",
        ]
        if hosts.gated:
            for line in reports[host.name]:
                print(f"{host.prefix}{line}", flush=True)

    try:
        failed = hosts.each(install, "failed")
    finally:
        hosts.close()
    if not hosts.gated:
        return reports[hosts.hosts[0].name]
    if failed:
        raise PlugboxError(f"plugbox was not installed on {len(failed)} of {len(hosts.hosts)} hosts",
                           "see the lines above", code=failed[0].code)
    return []


def on_host(config: Config, name: str | None) -> Config:
    """The config for the host `name` of its hosts (--host NAME), or as it is."""
    if name is None:
        return config
    if name not in config.hosts:
        raise PlugboxError(f"no host {name!r} in {config.path.name}" + (f" (stage {config.stage})" if config.stage else ""),
                           f"the hosts are {', '.join(config.hosts)}", code=USAGE)
    return config.for_host(name)


def disconnect(config: Config) -> list[str]:
    """Close the connection kept to every host (keep_connection) now; one line per host."""
    return [f"closed the connection kept to {name}" if transport.disconnect(config.for_host(name)) else
            f"no connection kept to {name}" for name in config.hosts]


def exec_in_live(config: Config, command: list[str], tty: bool = False) -> int:
    """`plugbox exec -- COMMAND` in the live version of every host: on this terminal
    for one host; for several, at once, each line prefixed by its host, and the
    status of the first host (in the config's order) where it failed."""
    if tty and len(config.hosts) > 1:
        raise PlugboxError(f"-t gives a terminal to one command, and {config.path.name} names "
                           f"{len(config.hosts)} hosts", f"choose one with --host NAME ({', '.join(config.hosts)})",
                           code=USAGE)
    return _on_hosts_in_live(config, ["exec", "--", *command], tty)


def shell_in_live(config: Config) -> int:
    """An interactive login shell on the host in HOME/live; returns its exit status."""
    if len(config.hosts) > 1:
        raise PlugboxError(f"plug ssh opens one shell, and {config.path.name} names {len(config.hosts)} hosts",
                           f"choose one with --host NAME ({', '.join(config.hosts)})", code=USAGE)
    return _on_hosts_in_live(config, ["shell"], tty=True)


def _on_hosts_in_live(config: Config, args: list[str], tty: bool) -> int:
    """plugbox ARGS on each host, riding the session that checked plugbox is there and
    speaks plug's protocol: on this terminal for one host, prefixed lines for several."""
    hosts = _Hosts(config)
    codes: dict[str, int] = {}
    try:
        def run(host: Host) -> None:
            answer = host.request(P.request("hello", host.config.home, hold=True))
            if P.exit_code(answer):
                raise Quiet(P.exit_code(answer))
            if not hosts.gated:
                codes[host.name] = host.session.plugbox(args, tty=tty).code
                return
            line = lambda text: transport.show(f"{host.prefix}{text.rstrip(chr(10))}")  # noqa: E731
            codes[host.name] = host.session.plugbox(args, stdin=transport.DEVNULL, out=line, err=line).code

        failed = hosts.each(run, "failed")
    finally:
        hosts.close()
    return next((host.code for host in failed), 0) or next((code for code in codes.values() if code), 0)
