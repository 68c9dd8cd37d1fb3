"""One function per `plugbox` command; each takes the home explicitly.

Each command that changes state takes the lock, reads the chain, refuses (with
nothing changed) when the chain is broken or the request is wrong, then writes
in the order chain.py sets out, and logs what it did.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from plugbox_server import chain as c
from plugbox_server import hooks
from plugbox_server.errors import REVERT_FAILED, Aborted, HookFailed, PlugboxError
from plugbox_server.names import new_version_name, validate_version
from plugbox_server.output import keep_going_when_the_caller_goes, say
from plugbox_server.store import Store

REPAIR_HINT = "run `plugbox check --repair`"


def warn(message: str) -> None:
    say(message, err=True)


@dataclass
class _Record:
    """What a command tells the log: the live version before and after."""

    before: str | None = None
    after: str | None = None
    command: str | None = None   # what the log calls the command, once known
    switched: bool = False       # live was switched (and maybe back) at least once


@contextmanager
def _changing(store: Store, command: str, wait: float = 0):
    """Lock deploy/, check the chain is sound, and log the outcome whatever it is."""
    keep_going_when_the_caller_goes()
    with store.lock(command, wait):
        record = _Record()
        outcome = "failed"
        try:
            chain = store.read()
            broken = c.problems(chain)
            if broken:
                raise PlugboxError(f"deploy/ needs repair: {broken[0].message}", REPAIR_HINT)
            record.before = record.after = chain.live_version()
            yield chain, record
            outcome = "ok"
        except PlugboxError as error:
            verdict = ("failed" if isinstance(error, HookFailed) else
                       "aborted" if isinstance(error, Aborted) else "refused")
            outcome = f"{verdict}: {error.message}"
            raise
        except BaseException as error:
            outcome = f"interrupted: {type(error).__name__}"
            raise
        finally:
            store.append_log(record.command or command, record.before, record.after, outcome)


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


def home_from(given: str | os.PathLike | None) -> Path:
    """The service's home: --home as given, else PLUGBOX_HOME, else $HOME."""
    return Path(given or os.environ.get("PLUGBOX_HOME") or os.environ.get("HOME") or Path.home())


# --- the commands ---------------------------------------------------------------


def next_version(home: Path) -> tuple[str, str | None]:
    """Make the next version; return its name and its previous (the live version, if any)."""
    store = Store(home)
    store.make_deploy()
    with _changing(store, "next-version") as (chain, record):
        name = new_version_name(list(chain.versions) + list(chain.removing))
        live = chain.live_version()
        store.make_version(name, live)
        record.after = name
        return name, live


def upgrade_to(home: Path, version: str, held: tuple[c.Chain, _Record] | None = None, *,
               before_stop: Callable[[], None] | None = None,
               after_check: Callable[[], None] | None = None) -> None:
    """`held`: the chain and record of a command that holds the lock already (deploy).

    `before_stop` runs once post_upload has succeeded, before anything about the
    live version changes (raising there changes nothing); `after_check` runs once
    the new version is up and checked (raising HookFailed there switches back, as
    a failed check does). A deploy to several hosts waits for its caller in them.
    """
    store = _existing_store(home)
    with nullcontext(held) if held else _changing(store, f"upgrade-to {version}") as (chain, record):
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
        shown = f"deploy/{version}"
        hooks.link_shared(store.home, store.version_dir(version), config, shown)
        try:
            service.run("post_upload", version)
        except HookFailed as error:
            raise HookFailed(f"{error.message}; nothing changed, "
                             f"the live version is still {live or 'none'}") from None
        if before_stop:
            before_stop()

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
        _switch(service, record, live, version, refresh, after_check)


def deploy(home: Path, upload: Callable[[str, Path, str | None], None], *,
           config: bytes | None = None, message: str | None = None, wait: float = 0,
           name_for: Callable[[str | None, str | None], str] | None = None,
           before_stop: Callable[[], None] | None = None,
           after_check: Callable[[], None] | None = None) -> tuple[str, str | None]:
    """The whole of a deploy under one lock; returns the new version and the one it replaced.

    The new version is named by this host's clock, or, with `name_for`, by the
    caller: `name_for(newest, live)` gets the newest name in deploy/ (and the live
    version) once the lock is held and returns the name, which must be a version
    name that sorts after every existing one (a deploy to several hosts uses one
    name on all of them). `before_stop` and `after_check`: see upgrade_to.

    Makes the version in deploy/.new-NAME (its previous link and `config`, the
    plugbox.toml, already in it), calls `upload(name, staging, live)` to fill it,
    renames it into place whole, then upgrades to it. Until that rename, any
    failure (the caller gone, rsync failed) removes the staging directory and
    leaves deploy/ as it was; a failure before the switch (post_upload, the live
    version's stop) removes the new version again; after the switch, the
    upgrade finishes or switches back whatever happens to the caller.
    """
    store = Store(home)
    store.make_deploy()
    with _changing(store, "deploy", wait) as (chain, record):
        existing = list(chain.versions) + list(chain.removing)
        live = chain.live_version()
        if name_for is None:
            name = new_version_name(existing)
        else:
            name = _proposed(name_for(max(existing, default=None), live), existing)
        record.command = f"deploy {name}" + (f" -m {message}" if message else "")
        staging = store.make_staging(name, live, config)
        try:
            upload(name, staging, live)
            store.commit_staging(name)
        except BaseException:
            store.remove_staging(name)
            raise
        try:
            upgrade_to(home, name, held=(store.read(), record), before_stop=before_stop,
                       after_check=after_check)
        except PlugboxError:
            if not record.switched:
                _remove_one(store, name)
                say(f"removed {name}, which never went live")
            raise
        return name, live


def _proposed(name: str, existing: list[str]) -> str:
    """The caller's name for a new version, if this host can take it."""
    validate_version(name)
    if name in existing:
        raise PlugboxError(f"a version {name} exists already", "deploy again for a new name")
    newest = max(existing, default="")
    if name < newest:
        raise PlugboxError(f"the new version {name} does not sort after the newest version {newest}",
                           "is a clock skewed? check the clocks, or deploy again")
    return name


def rollback_to(home: Path, version: str | None = None, refresh: bool = False,
                wait: float = 0,
                choose: Callable[[str | None, str | None, list[str]], str | None] | None = None
                ) -> tuple[str, str | None]:
    """`choose(live, its previous, versions)`, once the lock is held, names the version to roll
    back to, or None when there is nothing to do here (a rollback of several
    hosts, which the caller decides for all of them at once)."""
    store = _existing_store(home)
    command = f"rollback-to {version or ''}".strip() + (" --refresh" if refresh else "")
    with _changing(store, command, wait) as (chain, record):
        live = chain.live_version()
        if choose is not None:
            version = choose(live, chain.previous(live) if live else None, sorted(chain.versions))
            if version is None or version == live:
                record.command = f"rollback-to {version or ''}".strip() + ": already live"
                return live, live
            record.command = f"rollback-to {version}" + (" --refresh" if refresh else "")
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
        _switch(service, record, live, version, refresh)
        return version, live


def _switch(service: _Service, record: _Record, live: str | None, version: str,
            refresh: bool, after_check: Callable[[], None] | None = None) -> None:
    """Switch live to `version` and bring it up; on failure switch back and bring `live` up."""
    store = service.store
    record.switched = True
    store.switch_live(version)
    record.after = version
    say(f"live is now {version}")
    try:
        service.run("refresh" if refresh else "start", version)
        service.run("check", version)
        if after_check:
            after_check()
    except HookFailed as error:
        warn(f"{error.message}; switching back to {live or 'no live version'}")
        if not refresh:
            try:
                service.run("stop", version)
            except HookFailed as stop_error:
                warn(stop_error.message)
        store.switch_live(live)
        record.after = live
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
    with _changing(store, "remove " + " ".join(versions)) as (chain, record):
        live = chain.live_version()
        for name in versions:
            _existing(chain, name)
            if name == live:
                raise PlugboxError(f"{name} is live and cannot be removed",
                                   "roll back or deploy first")
        for name in dict.fromkeys(versions):
            _remove_one(store, name)
            say(f"removed {name}")


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
    with _changing(store, f"prune --keep {keep}") as (chain, record):
        doomed = c.plan_prune(chain, keep)
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


def status(home: Path) -> tuple[str | None, list[Row]]:
    chain = Store(home).read()
    states = chain.states()
    rows = [Row(name, states[name], chain.previous(name), chain.next(name))
            for name in sorted(chain.versions, reverse=True)]
    return chain.live_version(), rows


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
