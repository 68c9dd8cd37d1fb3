"""The chain of versions: what the links say, what is wrong, what to change.

Pure, no I/O: `store.read()` turns deploy/ into a `Chain` (whose versions'
links it reads when they are asked for: see `Versions`); the functions here
decide; `store.apply()` carries out the resulting `Op`s in order.

The invariants (INVARIANTS in plugbox(1)), checked by `problems()` (`check`,
and the gate of remove and prune), and near live and the versions a command
names by `problems_near()` (the gate of every other command that changes
state, which costs the same at 10 versions as at 10,000):

1. deploy/live, when present, is a relative link to a version directly in
   deploy/; HOME/live points at deploy/live.
2. Every previous/next link points at an existing version in deploy/.
3. If V's next is W, then W's previous is V.
4. Following previous from live ends; it never cycles.
5. A version disappears only through remove or prune.
6. Nothing outside HOME is ever written: store.py opens its files without
   following links and refuses deploy/ or a bookkeeping file that is a link;
   hooks.link_shared walks shared paths without following links.
7. The service is never left stopped by a failure of plugbox's own
   (operations.py starts the live version again).

The order of writes, which keeps them true across a kill at any instant:

- next-version builds the version in deploy/.new-NAME (with its previous link)
  and renames it into place: a version appears whole or not at all.
- upgrade-to points live's next at the new version (whose previous is live
  already, so 3 holds before and after), then switches live.
- every link is written as a fresh temporary link deploy/.link-* renamed over
  the old one, so a link is always either old or new, never missing.
- live is switched by that same rename, followed by an fsync of deploy/: the
  single commit point of upgrade-to and rollback-to.
- remove first renames the version to deploy/.removing-NAME (its commit
  point), then re-points the links that named it past it, then deletes its
  record (deploy/.plugbox/NAME), then its directory. The next command that
  changes state, or `check --repair`, finishes whatever it finds half done:
  re-pointing is idempotent, and the directory goes only after every link is
  re-pointed and the record is gone (so a record never outlives its version's
  directory, and only a hand leaves one: `check` finds it).
  Several versions (prune) are removed in one pass: all renamed, one fsync;
  all links re-pointed past them, one fsync per directory; all deleted.
"""

from __future__ import annotations

import posixpath

from plugbox_server.errors import PlugboxError
from plugbox_server.layout import HOME_LIVE_FROM_DEPLOY, HOME_LIVE_TARGET, LIVE, NEW, RECORDS, REMOVING, TMP_LINK
from plugbox_server.names import (is_version_name, steps_back, validate_revision, validate_version_spec,
                                  version_names)
from plugbox_server.plain import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class Links(Plain):
    """The raw text of a version's links; None where there is no link."""

    FIELDS = ("previous", "next")
    DEFAULTS = {"previous": None, "next": None}


class Versions:
    """The versions in deploy/, by name, each one's Links read when first asked for.

    store.read() lists deploy/ once (one scandir: cheap at any size); what grows
    with the number of versions is reading every version's previous and next
    links, so a command that looks at a few versions (a rollback: live and its
    previous) reads the links of those alone. A name is a version when it is a
    directory of deploy/ (from the listing) with a version's name (checked when
    asked: all names only when all versions are). Reads the disk through `read`
    alone, given by store.py; a plain dict of Links serves as well (the tests').
    """

    __slots__ = ("_directories", "_names", "_links", "_read")

    def __init__(self, directories: "list[str] | set[str]", read: "Callable[[str], Links]"):
        self._directories = set(directories)  # deploy/'s directories, but the dot-entries
        self._names: list[str] | None = None  # those that are versions, once all are asked for
        self._links: dict[str, Links] = {}
        self._read = read

    def _all(self) -> list[str]:
        if self._names is None:
            self._names = version_names(self._directories)
        return self._names

    def __contains__(self, name) -> bool:
        return name in self._directories and is_version_name(name)

    def __iter__(self) -> "Iterator[str]":
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, name: str) -> Links:
        links = self._links.get(name)
        if links is None:
            if name not in self:
                raise KeyError(name)
            links = self._links[name] = self._read(name)
        return links

    def __setitem__(self, name: str, links: Links) -> None:
        if name not in self._directories:
            self._directories.add(name)
            if self._names is not None:
                self._names.append(name)
        self._links[name] = links

    def keys(self) -> list[str]:
        return list(self._all())

    def items(self) -> list[tuple[str, Links]]:
        return [(name, self[name]) for name in self._all()]

    def values(self) -> list[Links]:
        return [self[name] for name in self._all()]

    def get(self, name: str, default=None):
        return self[name] if name in self else default


def newest(names, count: int) -> list[str]:
    """The `count` newest of `names` (versions, or any names), newest first: names sort
    in creation order."""
    if len(names) > 8 * count + 100:  # a few of many: a heap, not a sort of them all
        import heapq

        return heapq.nlargest(count, names)
    return sorted(names, reverse=True)[:count]


class Chain(Plain):
    """deploy/ as read from disk: versions, their links, and what is left over."""

    FIELDS = ("versions", "live", "live_is_link", "home_live", "home_live_is_link",
                 "removing", "leftovers", "records", "odd_files")
    DEFAULTS = {
        "versions": dict,          # name -> Links: a dict, or Versions as store.read() makes it
        "live": None,              # raw text of deploy/live
        "live_is_link": True,      # False when deploy/live is a file or directory
        "home_live": None,         # raw text of HOME/live
        "home_live_is_link": True,
        "removing": dict,          # .removing-NAME dirs: name -> Links
        "leftovers": list,         # .link-* and .new-* entries
        "records": set,            # the names in deploy/.plugbox/; None: not read
        "odd_files": list,         # .lock, .log, ... not regular files
    }

    # --- reading the links ------------------------------------------------

    def target(self, raw: str | None) -> str | None:
        """The version a previous/next link names, if it is `../NAME` of an existing one."""
        if raw is None or not raw.startswith("../"):
            return None
        name = raw[3:]
        return name if name in self.versions else None

    def live_version(self) -> str | None:
        if self.live_is_link and self.live is not None and self.live in self.versions:
            return self.live
        return None

    def previous(self, name: str) -> str | None:
        return self.target(self.versions[name].previous)

    def next(self, name: str) -> str | None:
        return self.target(self.versions[name].next)

    def walk_previous(self) -> "Iterator[str]":
        """Versions reached by following previous from live (live excluded), one link
        read at a time, stopping at a cycle."""
        current = self.live_version()
        visited = {current}
        while current is not None:
            current = self.previous(current)
            if current is None or current in visited:
                return
            visited.add(current)
            yield current

    def previous_chain(self) -> list[str]:
        """Versions reached by following previous from live (live excluded), stopping at a cycle."""
        return list(self.walk_previous())

    def newest_versions(self, count: int) -> list[str]:
        """The `count` newest versions, newest first."""
        return newest(self.versions, count)

    def newest_name(self) -> str | None:
        """The newest name deploy/ holds, of a version or of one being removed: a new
        version's name must sort after it."""
        return max([*newest(self.versions, 1), *self.removing], default=None)

    def states(self, histories: "dict[str, list[dict]] | None" = None,
               names: "list[str] | None" = None) -> dict[str, str]:
        """Each version's state (of `names` only, when given): live, previous, retired,
        failed or pending.

        live and previous (in live's previous chain) come from the links; the
        others from the version's history (see history_state) when `histories`
        has it. Without one, the links tell only this much: a version no next
        link points at was never switched to (pending); one that some next
        points at was upgraded to once (retired).

        For `names` alone, the links of those are read, and live's previous chain
        only down to the oldest of them: a version's previous was live when it was
        made, so previous links lead to older names (a chain that goes against
        that, made by hand, is followed for as long as it does). Whether a next
        link points at a version is then asked of its previous, whose next it is
        when invariant 3 holds.
        """
        histories = histories or {}
        live = self.live_version()
        if names is None:
            names = list(self.versions)
            chain = set(self.previous_chain())
            targets = {self.next(n) for n in self.versions}
        else:
            oldest = min(names, default="")
            chain = set()
            for name in self.walk_previous():
                chain.add(name)
                if name < oldest and (self.previous(name) or "") < name:
                    break
            targets = {name for name in names
                       if (before := self.previous(name)) is not None and self.next(before) == name}
        states = {}
        for name in names:
            if name == live:
                states[name] = "live"
            elif name in chain:
                states[name] = "previous"
            elif name in histories:
                states[name] = history_state(histories[name])
            elif name not in targets:
                states[name] = "pending"
            else:
                states[name] = "retired"
        return states


# The states a version's history can give it, beside live and previous (the links').
NOT_KEPT = ("pending", "failed", "reverted")   # what prune takes first: never a good rollback target


def history_state(history: list[dict]) -> str:
    """failed, reverted, retired or pending, from a version's history (its record's "history").

    A version was live once when it went live and did not fail right after, or
    was switched away from other than after a failure (a kill may have cut the
    event of its going live short); it is failed when the last thing that
    happened to it was a failed hook, and reverted when it came up well but was
    switched back because another host of the same deploy failed.
    """
    events = [entry.get("event") if isinstance(entry, dict) else None for entry in history]
    was_live, ended = False, None
    for i, what in enumerate(events):
        before = events[i - 1] if i else None
        after = events[i + 1] if i + 1 < len(events) else None
        if what in ("failed", "reverted"):
            ended = what
        elif (what == "live" and after not in ("failed", "reverted")) or \
                (what == "away" and before not in ("failed", "reverted")):
            was_live, ended = True, None
    return ended or ("retired" if was_live else "pending")


# --- naming a version ----------------------------------------------------------

STATUS_HINT = "see `plugbox status`"


def resolve(chain: Chain, spec: str | None = None, rev: str | None = None,
            revisions: "dict[str, str | None] | None" = None) -> str:
    """The one version that `spec` or `rev` names in `chain`; a PlugboxError (one
    line, the matches listed) when it names none, or more than one.

    `spec`: a name (that version alone), a prefix of names (20261202T03), live,
    previous, or live~N (N steps back along live's previous links). `rev`: the
    start of a git revision, matched against `revisions` (each version's, from
    its record). Both sides of plugbox resolve here, the host under its lock.
    """
    if rev is not None:
        return _by_revision(chain, validate_revision(rev), revisions or {})
    validate_version_spec(spec or "")
    back = steps_back(spec)
    if back is not None:
        return _back_from_live(chain, spec, back)
    if is_version_name(spec):
        if spec not in chain.versions:
            raise PlugboxError(f"no version {spec} in deploy/", STATUS_HINT)
        return spec
    found = sorted(name for name in chain.versions if name.startswith(spec))
    if not found:
        raise PlugboxError(f"no version starts with {spec}", STATUS_HINT)
    if len(found) > 1:
        raise PlugboxError(f"{spec} is ambiguous: it starts {_listed(found)}", "give more of the name")
    return found[0]


def _back_from_live(chain: Chain, spec: str, back: int) -> str:
    live = chain.live_version()
    if live is None:
        raise PlugboxError(f"{spec}: there is no live version", STATUS_HINT)
    if back == 0:
        return live
    behind = []
    for name in chain.walk_previous():  # N steps back, not the whole chain
        behind.append(name)
        if len(behind) == back:
            return name
    if back > len(behind):
        held = f"only {len(behind)} version{'' if len(behind) == 1 else 's'}" if behind else "no version"
        raise PlugboxError(f"{spec}: the live version {live} has {held} behind it", STATUS_HINT)
    return behind[back - 1]


def _by_revision(chain: Chain, rev: str, revisions: "dict[str, str | None]") -> str:
    found = sorted(name for name in chain.versions
                   if str(revisions.get(name) or "").lower().startswith(rev))
    if not found:
        raise PlugboxError(f"no version was deployed from a revision {rev}", STATUS_HINT)
    if len(found) > 1:
        shown = [f"{name} ({str(revisions[name])[:10]})" for name in found]
        raise PlugboxError(f"revision {rev} is ambiguous: {_listed(shown)} have it",
                           "name the version instead")
    return found[0]


def _listed(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# --- operations on disk, carried out by store.apply() -------------------------


class SetLink(Plain):
    """Make the link `path` (relative to deploy/) point at `target`, atomically."""

    FIELDS = ("path", "target")


class Unlink(Plain):
    FIELDS = ("path",)


class RemoveTree(Plain):
    """Delete the entry `path` in deploy/ without following links out of it."""

    FIELDS = ("path",)


Op = SetLink | Unlink | RemoveTree


class Problem(Plain):
    FIELDS = ("message", "repair", "leftover")
    DEFAULTS = {
        "repair": (),       # the Ops that repair it; empty: it needs a person's choice
        # What an interrupted command of plugbox's own left half done (a staging
        # directory, a temporary link, a remove, a record without its version): the
        # next command that holds the lock finishes or clears it, and never refuses
        # for it (an emergency rollback is never blocked by an aborted deploy).
        "leftover": False,
    }


def link_to(name: str) -> str:
    """The text of a previous/next link to the version `name`."""
    return f"../{name}"


def _past(raw: str | None, kind: str, chain: Chain) -> str | None:
    """The version a link means once versions being removed are skipped along `kind`."""
    seen: set[str] = set()
    while raw is not None and raw.startswith("../"):
        name = raw[3:]
        if name in chain.versions:
            return name
        if name not in chain.removing or name in seen:
            return None
        seen.add(name)
        raw = getattr(chain.removing[name], kind)
    return None


def plan_finish_removes(chain: Chain, only: str | None = None) -> list[Op]:
    """What remains of removing every .removing-NAME (or `only` that one), in one pass.

    Each link that names a version being removed is re-pointed past it: past
    every version being removed, along the same kind of link, to the first that
    stays (or removed when there is none). Then the directories go. One walk
    over the versions, whatever the number removed: prune uses it for thousands.
    """
    doomed = set(chain.removing) if only is None else {only}
    ops: list[Op] = []
    for kind in ("previous", "next"):
        for other, other_links in sorted(chain.versions.items()):
            raw = getattr(other_links, kind)
            if raw is None or not raw.startswith("../") or raw[3:] not in doomed:
                continue
            new = _past(getattr(chain.removing[raw[3:]], kind), kind, chain)
            path = f"{other}/{kind}"
            ops.append(SetLink(path, link_to(new)) if new and new != other else Unlink(path))
    # The records go before the directories: a remove cut short between the two then
    # leaves a .removing-NAME, which the next command sees in deploy/ and finishes,
    # never a record alone in deploy/.plugbox/, which only `check` looks for.
    return ops + [RemoveTree(f"{RECORDS}/{name}") for name in sorted(doomed)
                  if chain.records is None or name in chain.records] + \
        [RemoveTree(REMOVING + name) for name in sorted(doomed)]


def plan_remove(chain: Chain, names: list[str]) -> tuple[Chain, list[Op]]:
    """The chain once `names` are renamed to .removing-NAME, and what then remains to do."""
    gone = set(names)
    after = Chain(
        versions={n: l for n, l in chain.versions.items() if n not in gone},
        live=chain.live, live_is_link=chain.live_is_link,
        home_live=chain.home_live, home_live_is_link=chain.home_live_is_link,
        removing={**chain.removing, **{n: chain.versions[n] for n in names}},
        leftovers=list(chain.leftovers), odd_files=list(chain.odd_files),
        records=None if chain.records is None else set(chain.records),
    )
    return after, plan_finish_removes(after)


def plan_prune(chain: Chain, keep: int, in_use: "set[str] | frozenset[str]" = frozenset(),
               histories: "dict[str, list[dict]] | None" = None) -> list[str]:
    """Versions to remove so that at most `keep` remain: pending and failed ones
    first, then the oldest (states as Chain.states tells them from `histories`).

    Never live, nor live's previous, nor a version in `in_use` (one a running
    process uses): the next candidate is taken in its place.
    """
    live = chain.live_version()
    protected = {live, chain.previous(live) if live else None, *in_use}
    states = chain.states(histories)
    candidates = sorted(
        (n for n in chain.versions if n not in protected),
        key=lambda n: (states[n] not in NOT_KEPT, n),
    )
    excess = len(chain.versions) - keep
    return sorted(candidates[: max(excess, 0)])


def problems(chain: Chain) -> list[Problem]:
    """Every broken invariant and leftover, each with the ops that repair it: what
    `check` reports. Reads every version's links, and needs deploy/.plugbox/ listed
    (chain.records)."""
    removing = {link_to(n) for n in chain.removing}
    return [*_interrupted_removes(chain), *_odd_files(chain), *_leftover_entries(chain),
            *_orphan_records(chain), *_live_problems(chain),
            *(p for name in sorted(chain.versions) for p in _link_problems(chain, name, removing)),
            *(p for name in sorted(chain.versions) for p in _next_problems(chain, name, removing)),
            *_cycle_problems(chain)]


def leftovers(chain: Chain) -> list[Problem]:
    """What interrupted commands of plugbox's own left (Problem.leftover), as far as
    `chain` was read: the dot-entries of deploy/, and records of no version when
    deploy/.plugbox/ was listed. Reads no version's links but for finishing a remove."""
    return [*_interrupted_removes(chain), *_leftover_entries(chain), *_orphan_records(chain)]


def problems_near(chain: Chain, names: "list[str] | tuple[str, ...]" = ()) -> list[Problem]:
    """What a command that changes state must find sound, once leftovers are cleared:
    the bookkeeping files, live's links (deploy/live, HOME/live), and the links of
    live, of its previous and of `names` (the versions the command works on), each
    pointing at a version (2) and answered by it (3). Every other version's links
    are `check`'s to look at: a broken link in an old version blocks no rollback.
    Reads the links of those versions alone."""
    live = chain.live_version()
    near = {name for name in (live, chain.previous(live) if live else None, *names)
            if name is not None and name in chain.versions}
    removing = {link_to(n) for n in chain.removing}
    return [*_odd_files(chain), *_live_problems(chain),
            *(p for name in sorted(near) for p in _link_problems(chain, name, removing)),
            *(p for name in sorted(near) for p in _next_problems(chain, name, removing))]


def _interrupted_removes(chain: Chain) -> list[Problem]:
    if len(chain.removing) == 1:
        (name,) = chain.removing
        return [Problem(f"deploy/{REMOVING}{name}: an interrupted remove of {name}",
                        tuple(plan_finish_removes(chain)), leftover=True)]
    if chain.removing:
        # One problem for them all: an interrupted prune may leave thousands, and
        # finishing them together is one walk over the versions, not one per name.
        names = sorted(chain.removing)
        return [Problem(f"deploy/{REMOVING}*: an interrupted remove of {len(names)} versions, "
                        f"{names[0]} to {names[-1]}", tuple(plan_finish_removes(chain)), leftover=True)]
    return []


def _odd_files(chain: Chain) -> list[Problem]:
    return [Problem(f"deploy/{entry} is not a regular file; move it out of deploy/ "
                    "(plugbox never writes through a link)") for entry in chain.odd_files]


def _leftover_entries(chain: Chain) -> list[Problem]:
    found = []
    for entry in sorted(chain.leftovers):
        kind = "temporary link" if entry.startswith(TMP_LINK) else "unfinished new version"
        found.append(Problem(f"deploy/{entry}: a leftover {kind}", (RemoveTree(entry),), leftover=True))
    return found


def _orphan_records(chain: Chain) -> list[Problem]:
    if not chain.records:  # none, or deploy/.plugbox/ not listed
        return []
    making = {entry[len(NEW):] for entry in chain.leftovers if entry.startswith(NEW)}
    return [Problem(f"deploy/{RECORDS}/{name}: the record of no version",
                    (RemoveTree(f"{RECORDS}/{name}"),), leftover=True)
            for name in sorted(chain.records - set(chain.removing) - making)
            if name not in chain.versions]


def _link_problems(chain: Chain, name: str, removing: set[str]) -> list[Problem]:
    """Invariant 2 for `name`: each of its links points at a version (or one being removed)."""
    found = []
    links = chain.versions[name]
    for kind in ("previous", "next"):
        raw = getattr(links, kind)
        if raw is None or chain.target(raw) or raw in removing:
            continue
        path = f"{name}/{kind}"
        fixed = _normalise(raw, chain, inside_version=True)
        if fixed:
            found.append(Problem(f"deploy/{path} -> {raw}: not a relative link",
                                 (SetLink(path, link_to(fixed)),)))
        else:
            found.append(Problem(f"deploy/{path} -> {raw}: no such version", (Unlink(path),)))
    return found


def _next_problems(chain: Chain, name: str, removing: set[str]) -> list[Problem]:
    """Invariant 3 for `name`: the version its next names has it as previous."""
    after = chain.next(name)
    if after and chain.previous(after) != name and chain.versions[after].previous not in removing:
        return [Problem(f"deploy/{name}/next -> {after}, but {after}/previous is not {name}",
                        (Unlink(f"{name}/next"),))]
    return []


def _cycle_problems(chain: Chain) -> list[Problem]:
    """Invariant 4: following previous from live ends."""
    cycle = _cycle(chain)
    if cycle:
        return [Problem(f"following previous from live cycles at deploy/{cycle}/previous",
                        (Unlink(f"{cycle}/previous"),))]
    return []


def _live_problems(chain: Chain) -> list[Problem]:
    found: list[Problem] = []
    if not chain.live_is_link:
        found.append(Problem("deploy/live is not a symlink; move it out of deploy/ and run "
                             "`plugbox rollback-to VERSION`"))
    elif chain.live is not None and chain.live not in chain.versions:
        fixed = _normalise(chain.live, chain, inside_version=False)
        if fixed:
            found.append(Problem(f"deploy/live -> {chain.live}: not a relative link",
                                 (SetLink(LIVE, fixed),)))
        else:
            found.append(Problem(f"deploy/live -> {chain.live}: no such version; delete "
                                 "deploy/live, then choose one with `plugbox rollback-to VERSION`"))
    if not chain.home_live_is_link:
        found.append(Problem("live in the home is not a symlink; move it aside"))
    elif chain.live is not None and chain.home_live != HOME_LIVE_TARGET:
        shown = "missing" if chain.home_live is None else f"-> {chain.home_live}"
        found.append(Problem(f"live in the home is {shown}, not -> {HOME_LIVE_TARGET}",
                             (SetLink(HOME_LIVE_FROM_DEPLOY, HOME_LIVE_TARGET),)))
    return found


def _normalise(raw: str, chain: Chain, inside_version: bool) -> str | None:
    """The version an absolute or roundabout link means, if it means one in deploy/."""
    base = "/deploy/version" if inside_version else "/deploy"
    path = raw if raw.startswith("/") else posixpath.join(base, raw)
    name = posixpath.basename(posixpath.normpath(path))
    parent = posixpath.basename(posixpath.dirname(posixpath.normpath(path)))
    if is_version_name(name) and name in chain.versions and parent == "deploy":
        return name
    return None


def _cycle(chain: Chain) -> str | None:
    """The version whose previous link closes a cycle on the way from live, if any."""
    current = chain.live_version()
    visited = {current}
    while current is not None:
        before = chain.previous(current)
        if before in visited:
            return current
        visited.add(before)
        current = before
    return None
