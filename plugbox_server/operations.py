"""One function per `plugbox` command; each takes the home explicitly.

Each command that changes state takes the lock, reads the chain, refuses (with
nothing changed) when the chain is broken or the request is wrong, then writes
in the order chain.py sets out, and logs what it did.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from plugbox_server import chain as c
from plugbox_server import hooks, inuse, record
from plugbox_server.errors import REVERT_FAILED, HookFailed, PlugboxError
from plugbox_server.names import new_version_name, validate_version
from plugbox_server.output import keep_going_when_the_caller_goes, say
from plugbox_server.store import Store

REPAIR_HINT = "run `plugbox check --repair`"


def warn(message: str) -> None:
    say(message, err=True)


@dataclass
class _Logged:
    """What a command tells the log: the live version before and after."""

    before: str | None = None
    after: str | None = None


@contextmanager
def _changing(store: Store, command: str):
    """Lock deploy/, check the chain is sound, and log the outcome whatever it is."""
    keep_going_when_the_caller_goes()
    with store.lock(command):
        logged = _Logged()
        outcome = "failed"
        try:
            chain = store.read()
            broken = c.problems(chain)
            if broken:
                raise PlugboxError(f"deploy/ needs repair: {broken[0].message}", REPAIR_HINT)
            logged.before = logged.after = chain.live_version()
            yield chain, logged
            outcome = "ok"
        except PlugboxError as error:
            verdict = "failed" if isinstance(error, HookFailed) else "refused"
            outcome = f"{verdict}: {error.message}"
            raise
        except BaseException as error:
            outcome = f"interrupted: {type(error).__name__}"
            raise
        finally:
            store.append_log(command, logged.before, logged.after, outcome)


def _existing(chain: c.Chain, name: str) -> str:
    validate_version(name)
    if name not in chain.versions:
        raise PlugboxError(f"no version {name} in deploy/", "see `plugbox status`")
    return name


class _Service:
    """Runs the hooks of versions of one home, each from the version's own plugbox.toml."""

    def __init__(self, store: Store, chain: c.Chain):
        self.store = store
        self.chain = chain
        self.configs: dict[str, hooks.VersionConfig] = {}

    def config(self, name: str) -> hooks.VersionConfig:
        if name not in self.configs:
            self.configs[name] = hooks.load(self.store.version_dir(name),
                                            f"deploy/{name}/{hooks.CONFIG}")
        return self.configs[name]

    def run(self, hook: str, name: str) -> None:
        lines = self.config(name).hooks.get(hook)
        if not lines:
            return
        directory = self.store.version_dir(name)
        cwd = directory if hook == "post_upload" else self.store.home
        env = hooks.environment(self.store.home, name, directory, self.chain.previous(name))
        hooks.run(hook, lines, version=name, cwd=cwd, env=env)


# --- the commands ---------------------------------------------------------------


def next_version(home: Path, *, origin: dict | None = None) -> tuple[str, str | None]:
    """Make the next version; return its name and its previous (the live version, if any).

    `origin` is who made it and from what source, as plug sends it (see
    record.create); by hand, the user is PLUGBOX_USER or the login.
    """
    origin = record.checked_origin(origin or {})  # refuse before anything is made
    store = Store(home)
    store.make_deploy()
    with _changing(store, "next-version") as (chain, logged):
        name = new_version_name(list(chain.versions) + list(chain.removing))
        live = chain.live_version()
        store.make_version(name, live,
                           fill=lambda directory: record.create(store, name, origin, directory=directory))
        logged.after = name
        return name, live


def upgrade_to(home: Path, version: str) -> None:
    store = _existing_store(home)
    with _changing(store, f"upgrade-to {version}") as (chain, logged):
        _existing(chain, version)
        live = chain.live_version()
        if version == live:
            raise PlugboxError(f"{version} is already live", "see `plugbox status`")
        made_against = chain.previous(version)
        if made_against != live:
            against = f"against {made_against}" if made_against else "as a first version"
            raise PlugboxError(
                f"{version} was made {against}, but the live version is {live or 'none'}",
                "deploy again to make a version against the live one")
        service = _Service(store, chain)
        config = service.config(version)
        if live:
            service.config(live)
        # The upload is complete: what is in the version now is what was uploaded.
        # (A deploy seals it first; by hand, upgrade-to does, re-creating a record
        # that an rsync --delete of the user's own removed.)
        if not (record.load(store, version) or {}).get("sealed"):
            record.seal(store, version, previous=live)
        shown = f"deploy/{version}"
        hooks.link_shared(store.home, store.version_dir(version), config, shown)
        try:
            service.run("post_upload", version)
        except HookFailed as error:
            record.event(store, version, "failed", command="upgrade-to", hook="post_upload")
            raise HookFailed(f"{error.message}; nothing changed, "
                             f"the live version is still {live or 'none'}") from None
        record.after_post_upload(store, version)

        if live:
            store.set_link(f"{live}/next", c.link_to(version))
        # Refresh reloads a running service; on a first deploy nothing runs yet.
        refresh = live is not None and config.has("refresh")
        if live and not refresh:
            try:
                service.run("stop", live)
            except HookFailed as error:
                warn(f"{error.message}; starting {live} again")
                try:
                    _bring_up(service, live, refresh=False)
                except HookFailed as again:
                    raise HookFailed(f"{error.message}; nothing switched, but {again.message}",
                                     code=REVERT_FAILED) from None
                raise HookFailed(f"{error.message}; nothing switched, "
                                 f"the live version is still {live}") from None
        _switch(service, logged, live, version, refresh, "upgrade-to")


def rollback_to(home: Path, version: str | None = None, refresh: bool = False) -> None:
    store = _existing_store(home)
    command = f"rollback-to {version or ''}".strip() + (" --refresh" if refresh else "")
    with _changing(store, command) as (chain, logged):
        live = chain.live_version()
        if version is None:
            if live is None:
                raise PlugboxError("there is no live version to roll back from",
                                   "name a version: `plugbox rollback-to VERSION`")
            version = chain.previous(live)
            if version is None:
                raise PlugboxError(f"the live version {live} has no previous version",
                                   "see `plugbox status`")
        _existing(chain, version)
        if version == live:
            raise PlugboxError(f"{version} is already live", "see `plugbox status`")
        service = _Service(store, chain)
        # Read VERSION's plugbox.toml now: a malformed one must refuse before the stop.
        config = service.config(version)
        if refresh and not config.has("refresh"):
            raise PlugboxError(f"{version} has no refresh hook",
                               "roll back without --refresh")
        if live and not refresh:
            try:
                service.run("stop", live)
            except PlugboxError as error:
                # The live version is assumed broken: its stop failing, or its
                # plugbox.toml being unreadable, is no reason to stay on it.
                warn(f"{error.message}; rolling back all the same")
        _switch(service, logged, live, version, refresh, "rollback-to")


def _switch(service: _Service, logged: _Logged, live: str | None, version: str,
            refresh: bool, command: str) -> None:
    """Switch live to `version` and bring it up; on failure switch back and bring `live` up."""
    store = service.store
    store.switch_live(version)
    logged.after = version
    # The history is written after the fact: a kill right after the switch may
    # leave it one event short, never claim a switch that did not happen.
    record.event(store, version, "live", command=command)
    if live:
        record.event(store, live, "away", command=command)
    say(f"live is now {version}")
    hook = "refresh" if refresh else "start"
    try:
        service.run(hook, version)
        hook = "check"
        service.run(hook, version)
    except HookFailed as error:
        record.event(store, version, "failed", command=command, hook=hook)
        warn(f"{error.message}; switching back to {live or 'no live version'}")
        if not refresh:
            try:
                service.run("stop", version)
            except HookFailed as stop_error:
                warn(stop_error.message)
        store.switch_live(live)
        logged.after = live
        record.event(store, version, "away", command=command)
        if live:
            record.event(store, live, "live", command=command)
        if live is None:
            raise HookFailed(f"{error.message}; there is no live version now") from None
        say(f"live is back at {live}")
        try:
            _bring_up(service, live, refresh=refresh and service.config(live).has("refresh"),
                      stopped_version=version if refresh else None)
        except PlugboxError as revert_error:  # its hook failed, or its plugbox.toml is unreadable
            raise HookFailed(f"{error.message}; switched back to {live}, but "
                             f"{revert_error.message}", code=REVERT_FAILED) from None
        raise HookFailed(f"{error.message}; switched back to {live}, which is up again") from None


def _bring_up(service: _Service, name: str, refresh: bool, stopped_version: str | None = None):
    """Start `name` again: by its refresh, or (stopping `stopped_version` first) by its start."""
    if refresh:
        service.run("refresh", name)
        return
    if stopped_version:
        service.run("stop", stopped_version)
    service.run("start", name)


def remove(home: Path, versions: list[str]) -> None:
    store = _existing_store(home)
    with _changing(store, "remove " + " ".join(versions)) as (chain, logged):
        live = chain.live_version()
        for name in versions:
            _existing(chain, name)
            if name == live:
                raise PlugboxError(f"{name} is live and cannot be removed",
                                   "roll back or deploy first")
        for name, processes in sorted(inuse.users(str(store.deploy), versions).items()):
            raise PlugboxError(f"{name} is in use by {_listed(processes)}",
                               "stop it first; nothing was removed")
        for name in dict.fromkeys(versions):
            _remove_one(store, name)
            say(f"removed {name}")


def _listed(processes: list[inuse.User]) -> str:
    shown = ", ".join(str(p) for p in processes[:3])
    return shown + (f" and {len(processes) - 3} more" if len(processes) > 3 else "")


def _remove_one(store: Store, name: str) -> None:
    store.begin_remove(name)
    store.apply(c.plan_finish_remove(name, store.read()))


def prune(home: Path, keep: int = 5) -> tuple[list[str], int]:
    """Remove versions as plan_prune says; returns them and how many versions are left."""
    if keep < 1:
        raise PlugboxError(f"--keep {keep}: keep at least 1 version", code=2)
    store = Store(home)
    if not store.exists():
        return [], 0
    with _changing(store, f"prune --keep {keep}") as (chain, logged):
        using = inuse.users(str(store.deploy), chain.versions)
        _, histories = _histories(store, chain)
        doomed = c.plan_prune(chain, keep, in_use=set(using), histories=histories)
        for name in sorted(set(c.plan_prune(chain, keep, histories=histories)) - set(doomed)):
            say(f"kept {name}: in use by {_listed(using[name])}")
        for name in doomed:
            _remove_one(store, name)
            say(f"removed {name}")
        return doomed, len(chain.versions) - len(doomed)


@dataclass
class Row:
    name: str
    state: str
    previous: str | None
    next: str | None
    record: dict | None = None


def _histories(store: Store, chain: c.Chain) -> tuple[dict[str, dict], dict[str, list]]:
    """The records of the versions that have one, and their histories."""
    records = {name: r for name in chain.versions if (r := record.load(store, name)) is not None}
    return records, {name: r["history"] for name, r in records.items()}


def status(home: Path) -> tuple[str | None, list[Row]]:
    store = Store(home)
    chain = store.read()
    records, histories = _histories(store, chain)
    states = chain.states(histories)
    rows = [Row(name, states[name], chain.previous(name), chain.next(name), records.get(name))
            for name in sorted(chain.versions, reverse=True)]
    return chain.live_version(), rows


def verify(home: Path, version: str | None = None) -> tuple[str, dict]:
    """Compare `version` (default: live) with its record; see record.verify. Changes nothing."""
    store = _existing_store(home)
    chain = store.read()
    if version is None:
        version = chain.live_version()
        if version is None:
            raise PlugboxError("there is no live version to verify", "name one: `plugbox verify VERSION`")
    _existing(chain, version)
    return version, record.verify(store, version)


def check(home: Path, repair: bool = False) -> tuple[list[str], list[str]]:
    """(problems left, repairs made); problems are printed by the caller."""
    store = Store(home)
    if not repair:
        left = [p.message for p in c.problems(store.read())]
        holder = store.holder()
        if left and holder:
            warn(f"deploy/ is locked by {holder}: what it is doing may show as problems; "
                 "check again when it has finished")
        return left, []
    if not store.exists():
        return [], []
    done: list[str] = []
    with store.lock("check --repair"):
        # One problem per pass, read afresh, since one repair may settle or uncover
        # another; each repair removes a leftover or a link, so the passes are bounded.
        for _ in range(10 + 3 * len(c.problems(store.read()))):
            fixable = [p for p in c.problems(store.read()) if p.repair]
            if not fixable:
                break
            problem = fixable[0]
            store.apply(list(problem.repair))
            done.append(problem.message)
        chain = store.read()
        left = [p.message for p in c.problems(chain)]
        if done:
            store.append_log("check --repair", None, chain.live_version(),
                             f"repaired {len(done)}" + (f", {len(left)} left" if left else ""))
    return left, done


def log(home: Path) -> list[list[str]]:
    return Store(home).read_log()


def _existing_store(home: Path) -> Store:
    store = Store(home)
    if not store.exists():
        raise PlugboxError(f"no deploy/ in {store.home}", "deploy a first version with `plug deploy`")
    return store
