"""One function per `plugbox` command; each takes the home explicitly.

Each command that changes state takes the lock, reads the chain, refuses (with
nothing changed) when the chain is broken or the request is wrong, then writes
in the order chain.py sets out, and logs what it did.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from plugbox_server import chain as c
from plugbox_server import environment, hooks, inuse, layout, record
from plugbox_server.errors import REVERT_FAILED, USAGE, Aborted, HookFailed, PlugboxError, Reverted, for_caller
from plugbox_server.names import new_version_name, utc_now, validate_version
from plugbox_server.output import keep_going_when_the_caller_goes, say
from plugbox_server.plain import Plain
from plugbox_server.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: collections.abc costs a start of plugbox its import
    from collections.abc import Callable

    Gate = Callable[[Callable[[], dict]], None]  # before_stop: see upgrade_to

REPAIR_HINT = "run `plugbox check --repair`"


def warn(message: str) -> None:
    say(message, err=True)


class _Logged(Plain):
    """What a command tells the log: the live version before and after."""

    FIELDS = ("before", "after", "command", "switched", "note")
    DEFAULTS = {
        "before": None,
        "after": None,
        "command": None,      # what the log calls the command, once known
        "switched": False,    # live was switched (and maybe back) at least once
        "note": "",           # said after the outcome: "release ran"
    }


@contextmanager
def _changing(store: Store, command: str, wait: float = 0, whole: bool = False):
    """Lock deploy/, clear what interrupted commands left, check what the command
    stands on, and log the outcome whatever it is.

    The gate costs the same at 10 versions as at 10,000: the leftovers are the
    dot-entries of the one listing of deploy/, and the invariants are checked for
    live's links (chain.problems_near); a command checks the versions it then
    names with _sound(). With `whole` (remove, prune: they re-point links
    anywhere in the chain), every invariant, as `check` verifies them, and the
    records of no version are cleared too."""
    keep_going_when_the_caller_goes()
    with store.lock(command, wait):
        logged = _Logged()
        outcome = "failed"
        try:
            chain = store.read(records=whole)
            cleared = store.clear_leftovers(chain)
            if cleared:
                for message in cleared:
                    warn(f"cleared {message}")
                store.append_log("clear", None, chain.live_version(), f"cleared {len(cleared)} leftover"
                                 + ("s" if len(cleared) > 1 else "") + " of interrupted commands")
                chain = store.read(records=whole)
            _sound(chain, whole=whole)
            logged.before = logged.after = chain.live_version()
            yield chain, logged
            outcome = "ok" + (f" ({logged.note})" if logged.note else "")
        except PlugboxError as error:
            verdict = ("failed" if isinstance(error, HookFailed) else
                       "aborted" if isinstance(error, Aborted) else "refused")
            outcome = f"{verdict}: {error.message}"
            raise
        except BaseException as error:
            outcome = f"interrupted: {type(error).__name__}"
            raise
        finally:
            store.append_log(logged.command or command, logged.before, logged.after, outcome)


def _sound(chain: c.Chain, names: "list[str] | tuple[str, ...]" = (), whole: bool = False) -> None:
    """Refuse, changing nothing, when what the command stands on is broken: every
    invariant with `whole`, else live's links and those of `names` (see _changing)."""
    broken = c.problems(chain) if whole else c.problems_near(chain, names)
    if broken:
        raise PlugboxError(f"deploy/ needs repair: {broken[0].message}", REPAIR_HINT)


def _resolved(store: Store, chain: c.Chain, spec: str | None, rev: str | None = None) -> str:
    """The version `spec` (a name, a prefix, live, previous, live~N) or `rev` (a git
    revision) names; see chain.resolve. The records are read only for a revision."""
    revisions = None
    if rev is not None:
        revisions = {name: (record.load(store, name) or {}).get("revision") for name in chain.versions}
    return c.resolve(chain, spec, rev, revisions)


class _Service:
    """Runs the hooks of versions of one home, each from the version's own plugbox.toml."""

    def __init__(self, store: Store, chain: c.Chain, command: str):
        self.store = store
        self.chain = chain
        self.configs: dict[str, layout.Settings] = {}
        # What the hooks print is kept in deploy/.output, under this command's heading.
        self.command = command.split()[0]  # what a version's history says did it
        self.kept = store.output_record(command)

    def config(self, name: str) -> layout.Settings:
        if name not in self.configs:
            self.configs[name] = hooks.load(self.store.version_dir(name),
                                            f"deploy/{name}/{layout.CONFIG}")
        return self.configs[name]

    def run(self, hook: str, name: str) -> None:
        lines = self.config(name).hooks.get(hook)
        if not lines:
            return
        directory = self.store.version_dir(name)
        cwd = directory if hook in layout.IN_VERSION else self.store.home
        env = hooks.environment(self.store.home, name, directory, self.chain.previous(name),
                                record.read_environment(self.store, name).values)
        hooks.run(hook, lines, version=name, cwd=cwd, env=env,
                  timeout=self.config(name).timeout(hook), keep=self.kept.write)

    def close(self) -> None:
        self.kept.close()


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
        name = new_version_name([newest] if (newest := chain.newest_name()) else [])
        live = chain.live_version()
        store.make_version(name, live, fill=lambda directory: record.create(store, name, origin))
        logged.after = name
        return name, live


def upgrade_to(home: Path, version: str | None, *, rev: str | None = None,
               before_stop: "Gate | None" = None,
               after_check: Callable[[], None] | None = None) -> None:
    """Make `version` (or the version deployed from `rev`), made against the live version, live.

    post_upload, then the release step ([hooks] release, see _release), then the
    switch. `before_stop(release)` runs once post_upload has succeeded, before
    anything about the live version changes (raising there changes nothing),
    instead of the release step: it runs it if it is this host's to run, by
    calling `release()`, which returns {"ran", "why"}. `after_check` runs once
    the new version is up and checked (raising HookFailed there switches back, as
    a failed check does). A deploy to several hosts waits for its caller in them.
    """
    store = _existing_store(home)
    with _changing(store, f"upgrade-to {version or '--rev ' + str(rev)}") as (chain, logged):
        version = _resolved(store, chain, version, rev)
        logged.command = command = f"upgrade-to {version}"
        _sound(chain, [version])
        live = chain.live_version()
        if version == live:
            raise PlugboxError(f"{version} is already live", "see `plugbox status`")
        made_against = chain.previous(version)
        if made_against != live:
            against = f"against {made_against}" if made_against else "as a first version"
            raise PlugboxError(
                f"{version} was made {against}, but the live version is {live or 'none'}",
                "deploy again to make a version against the live one")
        _upgrade(_Service(store, chain, command), logged, live, version, before_stop, after_check)


def _upgrade(service: _Service, logged: _Logged, live: str | None, version: str,
             before_stop: Gate | None, after_check: Callable[[], None] | None, release: bool = True) -> None:
    """Under the lock: post_upload, release, stop (or refresh), switch, start, check;
    see upgrade_to. `release`: whether this command has a release step at all (an
    environment change has none)."""
    try:
        _upgrade_steps(service, logged, live, version, before_stop, after_check, release)
    finally:
        service.close()


def _upgrade_steps(service: _Service, logged: _Logged, live: str | None, version: str,
                   before_stop: Gate | None, after_check: Callable[[], None] | None,
                   release: bool = True) -> None:
    store = service.store
    config = service.config(version)
    if live:
        service.config(live)
    # The upload is complete: what is in the version now is what was uploaded. (A
    # deploy's version was sealed in staging; this is a version made by hand, or
    # one whose record an rsync --delete of the user's own removed.)
    env = None
    if not record.has_environment(store, version):  # made by hand: live's `env set` values and its [env]
        before = record.read_environment(store, live) if live else environment.Environment()
        env = environment.for_deploy(before, config.env, version)
    if not (record.load(store, version) or {}).get("sealed"):
        record.seal(store, version, previous=live, env=env)
    elif env is not None:
        record.write_environment(store, version, env)
    shown = f"deploy/{version}"
    hooks.link_shared(store.home, store.version_dir(version), config, shown)
    try:
        service.run("post_upload", version)
    except HookFailed as error:
        record.event(store, version, "failed", command=service.command, hook="post_upload")
        raise HookFailed(f"{error.message}; nothing changed, "
                         f"the live version is still {live or 'none'}") from None
    if config.has("post_upload") or config.shared:  # else nothing changed the tree since its seal
        record.after_post_upload(store, version)

    def run_release() -> dict:
        return _release(service, logged, live, version) if release else \
            {"ran": False, "why": "an environment change has no release step"}
    if before_stop:
        before_stop(run_release)  # the caller says whether this host runs it (several hosts)
    else:
        run_release()

    if live:
        # No fsync of its directory: a crash that loses this rename leaves live's next
        # where it was (a version deployed over it before, whose previous is live
        # too, or none), so invariant 3 holds either way; the switch's fsync follows.
        store.set_link(f"{live}/{layout.NEXT}", c.link_to(version), sync=False)
    # Refresh reloads a running service; on a first deploy nothing runs yet.
    refresh = live is not None and config.has("refresh")
    if live and not refresh:
        try:
            service.run("stop", live)
        except HookFailed as error:
            _start_again(service, live, error, f"the live version is still {live}")
    _switch(service, logged, live, version, refresh, after_check)


def deploy(home: Path, upload: Callable[[str, Path, str | None], None] | None, *,
           config: bytes | None = None, origin: dict | None = None, wait: float = 0,
           change: tuple[dict[str, str], list[str]] | None = None, force: bool = False,
           name_for: Callable[[str | None, str | None], str] | None = None,
           before_stop: Gate | None = None,
           after_check: Callable[[], None] | None = None) -> tuple[str | None, str | None]:
    """The whole of a deploy under one lock; returns the new version and the one it replaced.

    A deploy of an artifact whose sha256 (in `origin`) is the live version's makes
    nothing, unless `force`: it returns (None, live). Decided here, under the lock,
    so that every caller (one host, a fleet, the Ansible door) gets the same answer.

    Makes the version in deploy/.new-NAME (its previous link and `config`, the
    plugbox.toml, already in it), calls `upload(name, staging, live)` to fill it,
    gives it its environment (live's `plug env set` values and the project's
    [env]), renames it into place whole, then upgrades to it. Until that rename,
    any failure (the caller gone, rsync failed) removes the staging directory and
    leaves deploy/ as it was; a failure before the switch (post_upload, the live
    version's stop) removes the new version again; after the switch, the
    upgrade finishes or switches back whatever happens to the caller.
    `origin` is who deploys, from what source, and why (see record.create).

    An environment change (`change`: the values set, the names unset) fills the
    version itself, from live's files as uploaded (hard links), instead of an
    upload: `upload` and `config` are not used.

    The new version is named by this host's clock, or, with `name_for`, by the
    caller: `name_for(newest, live)` gets the newest name in deploy/ (and the live
    version) once the lock is held and returns the name, which must be a version
    name that sorts after every existing one (a deploy to several hosts uses one
    name on all of them). `before_stop` and `after_check`: see upgrade_to.
    """
    origin = record.checked_origin(origin or {})  # refuse before anything is made
    message = origin.get("message")
    project_env = hooks.parse(config, "plugbox.toml").env if config is not None and change is None else {}
    store = Store(home)
    store.make_deploy()
    with _changing(store, "env" if change else "deploy", wait) as (chain, logged):
        newest = chain.newest_name()
        live = chain.live_version()
        if change is None and not force and _has_artifact(store, live, origin):
            logged.command = f"deploy {origin.get('artifact') or 'artifact'}: live already"
            return None, live
        before = record.read_environment(store, live) if live else environment.Environment()
        if change is not None:
            if live is None:
                raise PlugboxError("there is no live version whose environment to change",
                                   "deploy a first version, then set its environment")
            # Its files are live's: so is where they came from (not the caller's checkout).
            origin = {**origin, **_source_of(store, live)}
        if name_for is None:
            name = new_version_name([newest] if newest else [])
        else:
            name = _proposed(name_for(newest, live), chain, newest)
        # Refused before anything is made: a name from two sources, an unset of none.
        made = (environment.for_change(before, *change, name) if change is not None else
                environment.for_deploy(before, project_env, name))
        what = f"deploy {name}" if change is None else f"env {name} " + _changed(change)
        logged.command = what + (f" -m {message}" if message else "")
        created = utc_now()
        staging = store.make_staging(name, live, config if change is None else None)
        try:
            if change is None:
                upload(name, staging, live)
            else:
                store.link_uploaded(live, staging, record.manifest(store, live))
            # Sealed here, in staging, with the record and the environment written at
            # once: the upload is complete, and the version appears with all of it.
            record.make(store, name, staging, previous=live, origin=origin, env=made, created=created,
                        change=change and {"set": sorted(change[0]), "unset": sorted(change[1])})
            store.commit_staging(name)
        except BaseException:
            store.remove_staging(name)
            raise
        # The version is in place, made against live: the chain as read, plus it.
        chain.versions[name] = c.Links(previous=c.link_to(live) if live else None)
        try:
            _upgrade(_Service(store, chain, f"upgrade-to {name}"), logged, live, name,
                     before_stop, after_check, release=change is None)
        except PlugboxError:
            if not logged.switched:
                _remove_versions(store, store.read(), [name])
                say(f"removed {name}, which never went live")
            raise
        return name, live


def _changed(change: tuple[dict[str, str], list[str]]) -> str:
    """What the log says of an environment change: names, never values."""
    set_names, unset = sorted(change[0]), sorted(change[1])
    return " ".join(([f"set {' '.join(set_names)}"] if set_names else []) +
                    ([f"unset {' '.join(unset)}"] if unset else []))


def change_environment(home: Path, set_values: dict[str, str], unset: list[str], *,
                       origin: dict | None = None, wait: float = 0, **gates) -> tuple[str, str | None]:
    """`plugbox env set/unset`: a new version from live's files as uploaded, with the
    changed environment, made live as a deploy is (post_upload, stop or refresh,
    switch, start, check, and switching back on failure)."""
    environment.checked(set_values)
    for name in unset:
        why = environment.check_name(name)
        if why:
            raise PlugboxError(why, "nothing changed", code=USAGE)
    if not set_values and not unset:
        raise PlugboxError("nothing to set or unset", "name a variable: NAME=VALUE, or NAME", code=USAGE)
    return deploy(home, None, origin=origin, wait=wait, change=(set_values, list(unset)), **gates)


def _has_artifact(store: Store, live: str | None, origin: dict) -> bool:
    """Whether the live version was made from the artifact `origin` names (same sha256)."""
    sha256 = origin.get("artifact_sha256")
    return bool(sha256 and live and (record.load(store, live) or {}).get("artifact_sha256") == sha256)


def _source_of(store: Store, version: str) -> dict:
    """What a version's record says it was made from: its git revision, or its artifact."""
    made = record.load(store, version) or {}
    return {key: made.get(key) for key in ("revision", "branch", "dirty", "artifact", "artifact_sha256")}


def _proposed(name: str, chain: c.Chain, newest: str | None) -> str:
    """The caller's name for a new version, if this host can take it."""
    validate_version(name)
    if name in chain.versions or name in chain.removing:
        raise PlugboxError(f"a version {name} exists already", "deploy again for a new name")
    newest = newest or ""
    if name < newest:
        raise PlugboxError(f"the new version {name} does not sort after the newest version {newest}",
                           "is a clock skewed? check the clocks, or deploy again")
    return name


def rollback_to(home: Path, version: str | None = None, refresh: bool = False,
                wait: float = 0,
                choose: Callable[[str | None, str | None, list[str], str | None], str | None] | None = None,
                rev: str | None = None) -> tuple[str, str | None]:
    """Make `version` live again (any form chain.resolve takes; or the version
    deployed from `rev`; default: live's previous).

    `choose(live, its previous, versions, named)`, once the lock is held, names
    the version to roll back to, or None when there is nothing to do here (a
    rollback of several hosts, which the caller decides for all of them at
    once); `named` is the version `version` or `rev` names here, if given.
    """
    store = _existing_store(home)
    flag = " --refresh" if refresh else ""
    asked = version or (f"--rev {rev}" if rev is not None else "")
    with _changing(store, f"rollback-to {asked}".strip() + flag, wait) as (chain, logged):
        live = chain.live_version()
        if version is not None or rev is not None:
            version = _resolved(store, chain, version, rev)
            logged.command = f"rollback-to {version}{flag}"
        if choose is not None:
            version = choose(live, chain.previous(live) if live else None, sorted(chain.versions), version)
            if version is None or version == live:
                logged.command = f"rollback-to {version or ''}".strip() + ": already live"
                return live, live
            logged.command = f"rollback-to {version}{flag}"
        if version is None:
            if live is None:
                raise PlugboxError("there is no live version to roll back from",
                                   "name a version: `plugbox rollback-to VERSION`")
            version = chain.previous(live)
            if version is None:
                raise PlugboxError(f"the live version {live} has no previous version",
                                   "see `plugbox status`")
        version = _resolved(store, chain, version)
        if version == live:
            raise PlugboxError(f"{version} is already live", "see `plugbox status`")
        _sound(chain, [version])
        service = _Service(store, chain, f"rollback-to {version}{flag}")
        try:
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
            _switch(service, logged, live, version, refresh)
            return version, live
        finally:
            service.close()


def _release(service: _Service, logged: _Logged, live: str | None, version: str) -> dict:
    """The release step: `[hooks] release` of the new version, in its directory with its
    environment, once post_upload succeeded and before anything switches; skipped
    when none of `[release] when_changed` differs from live. A failure changes
    nothing (the caller removes the new version). Recorded, and said in the log."""
    store = service.store
    config = service.config(version)
    if not config.has("release"):
        return {"ran": False, "why": f"{version} has no release hook"}
    if config.when_changed and live and not record.differs_in(store, live, version, config.when_changed):
        why = f"none of {', '.join(config.when_changed)} changed since {live}"
        say(f"release of {version} skipped: {why}")
        record.note(store, version, "release", {"outcome": "skipped", "why": why})
        logged.note = "release skipped"
        return {"ran": False, "why": why}
    try:
        service.run("release", version)
    except HookFailed as error:
        record.note(store, version, "release", {"outcome": "failed"})
        logged.note = "release failed"
        raise HookFailed(f"{error.message}; nothing switched, the live version is still "
                         f"{live or 'none'}") from None
    record.note(store, version, "release", {"outcome": "ran"})
    logged.note = "release ran"
    return {"ran": True, "why": ""}


def _switch(service: _Service, logged: _Logged, live: str | None, version: str,
            refresh: bool, after_check: Callable[[], None] | None = None) -> None:
    """Switch live to `version` and bring it up; on failure switch back and bring `live` up."""
    store = service.store
    logged.switched = True
    try:
        store.switch_live(version)
    except PlugboxError as error:
        _unswitched(service, logged, live, version, refresh, error)
    logged.after = version
    # The history is written after the fact: a kill right after the switch may
    # leave it one event short, never claim a switch that did not happen.
    record.event(store, version, "live", command=service.command)
    if live:
        record.event(store, live, "away", command=service.command)
    say(f"live is now {version}")
    hook = "refresh" if refresh else "start"
    try:
        service.run(hook, version)
        hook = "check"
        service.run(hook, version)
        if after_check:
            after_check()  # raises Reverted when the caller calls the deploy off
    except HookFailed as error:
        if isinstance(error, Reverted):
            record.event(store, version, "reverted", command=service.command)
        else:
            record.event(store, version, "failed", command=service.command, hook=hook)
        warn(f"{error.message}; switching back to {live or 'no live version'}")
        if not refresh:
            try:
                service.run("stop", version)
            except HookFailed as stop_error:
                warn(stop_error.message)
        try:
            store.switch_live(live)
        except PlugboxError as switch_error:
            raise HookFailed(f"{error.message}; could not switch back to {live}: "
                             f"{switch_error.message}; {version} stays live",
                             "free what is short (disk, inodes), then run "
                             f"`plugbox rollback-to {live}`", code=REVERT_FAILED) from None
        logged.after = live
        record.event(store, version, "away", command=service.command)
        if live:
            record.event(store, live, "live", command=service.command)
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
    if live and not refresh and _left_stopped(service, live, version):
        warn(for_caller(f"warning: {version} has no start hook, and the stop hook of {live} ran: nothing "
                        f"runs the service now; start it yourself, or `plugbox rollback-to {live}`, "
                        "whose start hook starts it, and add a start hook to plugbox.toml"))


def _left_stopped(service: _Service, live: str, version: str) -> bool:
    """Whether a stop + start left the service stopped: `live` had a stop hook (which
    ran) and a start hook, and `version` has no start hook."""
    try:
        before = service.config(live)
        return before.has("stop") and before.has("start") and not service.config(version).has("start")
    except PlugboxError:  # the live version's plugbox.toml is unreadable: it says nothing
        return False


def _unswitched(service: _Service, logged: _Logged, live: str | None, version: str,
                refresh: bool, error: PlugboxError) -> None:
    """Switching live failed (a full disk): make sure live is as it was, start it again
    if it was stopped (invariant 7), and say so."""
    store = service.store
    if store.read_live() == version:  # deploy/live moved, but HOME/live could not follow
        try:
            store.switch_live(live)
        except PlugboxError as again:
            raise HookFailed(f"{error.message}; {version} is live but not up, and switching "
                             f"back failed: {again.message}", REPAIR_HINT,
                             code=REVERT_FAILED) from None
    logged.after = live
    if live is None or refresh:
        raise HookFailed(f"{error.message}; nothing switched, the live version is still "
                         f"{live or 'none'}") from None
    _start_again(service, live, error, f"{live} is up again")


def _start_again(service: _Service, live: str, error: PlugboxError, then: str) -> None:
    """The live version was stopped and nothing switched: start it again (invariant 7)
    and fail, saying `then` when it is up, or that it is not."""
    warn(f"{error.message}; starting {live} again")
    try:
        _bring_up(service, live, refresh=False)
    except PlugboxError as again:
        raise HookFailed(f"{error.message}; nothing switched, but {again.message}",
                         code=REVERT_FAILED) from None
    raise HookFailed(f"{error.message}; nothing switched, {then}") from None


def _bring_up(service: _Service, name: str, refresh: bool, stopped_version: str | None = None):
    """Start `name` again: by its refresh, or (stopping `stopped_version` first) by its start."""
    if refresh:
        service.run("refresh", name)
        return
    if stopped_version:
        service.run("stop", stopped_version)
    service.run("start", name)


class Plan(Plain):
    """What a remove or prune deletes, and what it keeps and why: what --dry-run
    shows, and what a person confirms."""

    FIELDS = ("remove", "states", "keep")
    DEFAULTS = {"keep": list}
    # remove: oldest first; states: the state of each of them;
    # keep: (version, why), newest first


def remove(home: Path, versions: list[str], *, rev: str | None = None, dry_run: bool = False,
           confirm: Callable[[Plan], None] | None = None) -> Plan:
    """Remove the versions that `versions` (any form chain.resolve takes) and `rev`
    name; refuse them all if one is live or in use. `dry_run`: the plan, nothing
    removed, no lock taken. `confirm(plan)`, under the lock, may call it off by raising."""
    if not versions and rev is None:
        raise PlugboxError("name a version to remove", code=USAGE)
    store = _existing_store(home)
    if dry_run:
        return _remove_plan(store, store.read(), versions, rev)
    asked = " ".join(versions) + (f" --rev {rev}" if rev is not None else "")
    with _changing(store, f"remove {asked.strip()}", whole=True) as (chain, logged):
        plan = _remove_plan(store, chain, versions, rev)
        logged.command = "remove " + " ".join(plan.remove)
        if confirm:
            confirm(plan)
        _remove_versions(store, chain, plan.remove)
        for name in plan.remove:
            say(f"removed {name}")
        return plan


def _remove_versions(store: Store, chain: c.Chain, names: list[str]) -> None:
    """Remove `names` (store.remove_versions), once no other version's manifest is kept
    as what differs from one of theirs (record.detach)."""
    record.detach(store, chain, names)
    store.remove_versions(chain, names)


def _remove_plan(store: Store, chain: c.Chain, versions: list[str], rev: str | None) -> Plan:
    names = [_resolved(store, chain, spec) for spec in versions]
    if rev is not None:
        names.append(_resolved(store, chain, None, rev))
    names = sorted(set(names))
    live = chain.live_version()
    if live in names:
        raise PlugboxError(f"{live} is live and cannot be removed", "roll back or deploy first")
    for name, processes in sorted(inuse.users(str(store.deploy), names).items()):
        raise PlugboxError(f"{name} is in use by {_listed(processes)}", "stop it first; nothing was removed")
    histories = {name: r["history"] for name in names if (r := record.load(store, name)) is not None}
    return Plan(names, chain.states(histories, names))


def _listed(processes: list[inuse.User]) -> str:
    shown = ", ".join(str(p) for p in processes[:3])
    return shown + (f" and {len(processes) - 3} more" if len(processes) > 3 else "")


def prune(home: Path, keep: int = 5, *, dry_run: bool = False,
          confirm: Callable[[Plan], None] | None = None) -> Plan:
    """Remove versions as plan_prune says; returns the plan carried out. `dry_run`:
    the plan, nothing removed, no lock taken. `confirm(plan)`, under the lock and
    when there is something to remove, may call it off by raising."""
    if keep < 1:
        raise PlugboxError(f"--keep {keep}: keep at least 1 version", code=USAGE)
    store = Store(home)
    if not store.exists():
        return Plan([], {})
    if dry_run:
        return _prune_plan(store, store.read(), keep)
    with _changing(store, f"prune --keep {keep}", whole=True) as (chain, logged):
        plan = _prune_plan(store, chain, keep)
        if plan.remove and confirm:
            confirm(plan)
        for name, why in reversed(plan.keep):
            if why.startswith("in use by "):
                say(f"kept {name}: {why}")
        # One pass over deploy/, read once above: what takes time is the deleting.
        if plan.remove:
            _remove_versions(store, chain, plan.remove)
        for name in plan.remove:
            say(f"removed {name}")
        return plan


def _prune_plan(store: Store, chain: c.Chain, keep: int) -> Plan:
    using = inuse.users(str(store.deploy), chain.versions)
    _, histories = _histories(store, chain)
    doomed = c.plan_prune(chain, keep, in_use=set(using), histories=histories)
    spared = set(c.plan_prune(chain, keep, histories=histories)) - set(doomed)  # by a process alone
    states = chain.states(histories)
    live = chain.live_version()
    previous = chain.previous(live) if live else None
    kept = []
    for name in sorted(set(chain.versions) - set(doomed), reverse=True):
        kept.append((name, "live" if name == live else
                     "live's previous" if name == previous else
                     f"in use by {_listed(using[name])}" if name in spared else
                     f"within --keep {keep}"))
    return Plan(doomed, {name: states[name] for name in doomed}, kept)


# How many versions `status` shows, newest first, unless asked for all of them.
SHOWN = 20


class Row(Plain):
    FIELDS = ("name", "state", "previous", "next", "record")
    DEFAULTS = {"record": None}


def _histories(store: Store, chain: c.Chain) -> tuple[dict[str, dict], dict[str, list]]:
    """The records of the versions that have one, and their histories."""
    records = {name: r for name in chain.versions if (r := record.load(store, name)) is not None}
    return records, {name: r["history"] for name, r in records.items()}


def status(home: Path) -> tuple[str | None, list[Row]]:
    """The live version, and a Row for every version, newest first."""
    live, rows, _ = newest_status(home)
    return live, rows


def newest_status(home: Path, newest: int | None = None,
                  with_live: bool = False) -> tuple[str | None, list[Row], int]:
    """The live version; a Row for each of the `newest` newest versions (every one
    when None), newest first, and with `with_live` for the live version last when
    it is older; and how many versions there are. The records of those rows alone
    are read, and the links of those versions (and of live's previous chain down
    to the oldest of them)."""
    store = Store(home)
    chain = store.read(records=False)
    live = chain.live_version()
    names = c.newest(chain.versions, len(chain.versions) if newest is None else newest)
    if with_live and live is not None and live not in names:
        names.append(live)
    records = {name: r for name in names if (r := record.load(store, name)) is not None}
    histories = {name: r["history"] for name, r in records.items()}
    states = chain.states(histories, None if len(names) == len(chain.versions) else names)
    rows = [Row(name, states[name], chain.previous(name), chain.next(name), records.get(name))
            for name in names]
    return live, rows, len(chain.versions)


def verify(home: Path, version: str | None = None, rev: str | None = None) -> tuple[str, dict]:
    """Compare `version` (any form chain.resolve takes; or the version deployed from
    `rev`; default: live) with its record; see record.verify. Changes nothing."""
    store = _existing_store(home)
    chain = store.read()
    if version is None and rev is None:
        version = chain.live_version()
        if version is None:
            raise PlugboxError("there is no live version to verify", "name one: `plugbox verify VERSION`")
    version = _resolved(store, chain, version, rev)
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


def exec_context(home: Path) -> tuple[Path, dict[str, str]]:
    """Where `plugbox exec` runs a command, and with what environment: the live
    version's directory and the environment its hooks get. Reads; takes no lock."""
    store = Store(home)
    chain = store.read()
    live = chain.live_version()
    if live is None:
        raise PlugboxError(f"no live version in {store.deploy}",
                           "deploy one first: `plugbox upgrade-to VERSION`")
    directory = store.version_dir(live)
    return directory, hooks.environment(store.home, live, directory, chain.previous(live),
                                        record.read_environment(store, live).values)


def environment_of(home: Path, version: str | None = None) -> tuple[str, environment.Environment]:
    """A version's environment (default: live's), and its name. Reads; takes no lock."""
    store = _existing_store(home)
    chain = store.read()
    if version is None:
        version = chain.live_version()
        if version is None:
            raise PlugboxError("there is no live version", "name one, or deploy a first version")
    version = _resolved(store, chain, version)
    return version, record.read_environment(store, version)


def environment_diff(home: Path, versions: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    """What changed in the environment from A to B: none given, live's previous to live;
    one, A to live; two, A to B. Names only."""
    if len(versions) > 2:
        raise PlugboxError("diff compares two versions at most", "give A, or A and B", code=USAGE)
    store = _existing_store(home)
    chain = store.read()
    live = chain.live_version()
    if len(versions) == 2:
        a, b = versions
    elif len(versions) == 1:
        a, b = versions[0], live
    else:
        a, b = (chain.previous(live) if live else None), live
    if a is None or b is None:
        raise PlugboxError("there is no pair of versions to compare", "name them: A B")
    a, b = (_resolved(store, chain, name) for name in (a, b))
    return a, b, environment.diff(record.read_environment(store, a).values,
                                  record.read_environment(store, b).values)


def log(home: Path) -> list[list[str]]:
    return Store(home).read_log()


def hook_output(home: Path) -> bytes:
    """The kept output of the hooks of past commands, oldest first (deploy/.output)."""
    return Store(home).read_output()


def _existing_store(home: Path) -> Store:
    store = Store(home)
    if not store.exists():
        raise PlugboxError(f"no deploy/ in {store.home}", "deploy a first version with `plug deploy`")
    return store
