"""Random sequences of commands, some killed at any write, on a real directory.

After every step the invariants hold, every version is where the model says,
and live is what the model expects. A kill is simulated by making the Nth
write to the disk (mkdir, symlink, rename, replace, unlink, rmdir, made by
plugbox or by the rmtree it calls) raise a BaseException instead: the command
stops exactly there, as under SIGKILL, with nothing after it but the unlocking
of deploy/ and a log line. Then, as a person would, `plugbox check --repair`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from plugbox_server import chain as c
from plugbox_server import layout
from plugbox_server import operations, record
from plugbox_server.errors import PlugboxError
from plugbox_server.store import Store

settings.register_profile("ci", max_examples=200)
settings.register_profile("local", max_examples=50)
PROFILE = settings.get_profile("ci" if os.environ.get("CI") else "local")

# What the upload leaves in a version; HOME/live must always lead to one that has it.
COMPLETE = "complete"

UNKNOWN = "20000101T000000Z"  # a version name no version has

WRITES = ("mkdir", "symlink", "rename", "replace", "unlink", "rmdir")


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` catches it."""


@contextmanager
def killed_at(write: int | None):
    """Make the `write`th write (from 0) raise Killed instead of happening; None: no kill.

    Yields a one-item list that ends up holding the number of writes attempted.
    """
    count = [0]
    originals = {name: getattr(os, name) for name in WRITES}

    def wrapping(name):
        original = originals[name]

        def instead(*args, **kwargs):
            count[0] += 1
            if count[0] - 1 == write_number:
                raise Killed(f"killed at {name}{args[:2]}")
            return original(*args, **kwargs)

        return instead

    write_number = -1 if write is None else write
    for name in WRITES:
        setattr(os, name, wrapping(name))
    try:
        yield count
    finally:
        for name, original in originals.items():
            setattr(os, name, original)


@dataclass
class Model:
    """What the versions and their links should be: name -> [previous, next]."""

    links: dict[str, list[str | None]] = field(default_factory=dict)
    live: str | None = None
    was_live: set[str] = field(default_factory=set)

    def go_live(self, name):
        self.live = name
        self.was_live.add(name)

    def previous(self, name):
        return self.links[name][0]

    def next_version(self, name):
        self.links[name] = [self.live, None]

    def upgrade_to(self, name):
        if self.live:
            self.links[self.live][1] = name
        self.go_live(name)

    def remove(self, name):
        """Re-point past `name`, as plugbox(1) says remove does."""
        previous, after = self.links.pop(name)
        self.was_live.discard(name)  # a later version may get the same name
        for other, pair in self.links.items():
            if pair[0] == name:
                pair[0] = previous if previous != other else None
            if pair[1] == name:
                pair[1] = after if after != other else None

    def states(self):
        chain, current = [], self.live
        while current is not None:
            current = self.links[current][0]
            if current is None or current in chain or current == self.live:
                break
            chain.append(current)
        return {name: "live" if name == self.live else "previous" if name in chain
                else "retired" if name in self.was_live else "pending"
                for name in self.links}

    def prune(self, keep):
        """The versions prune must remove: pending (never live) first, then the oldest."""
        protected = {self.live, self.links[self.live][0] if self.live else None}
        states = self.states()
        candidates = sorted((n for n in self.links if n not in protected),
                            key=lambda n: (states[n] != "pending", n))
        return sorted(candidates[:max(len(self.links) - keep, 0)])


def on_disk(store: Store) -> tuple[dict[str, list[str | None]], str | None]:
    chain = store.read()
    return ({name: [chain.previous(name), chain.next(name)] for name in chain.versions},
            chain.live_version())


class PlugboxMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="plugbox-machine-"))
        self.home = self.root / "svc"
        self.home.mkdir()
        self.store = Store(self.home)
        self.model = Model()

    def teardown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # --- reading the home -------------------------------------------------------

    def mark_complete(self, name):
        (self.home / "deploy" / name / COMPLETE).write_text(name)

    def pending_against_live(self):
        return sorted(n for n in self.model.links
                      if n != self.model.live and self.model.previous(n) == self.model.live)

    def refused_without_change(self, action):
        before = self.snapshot()
        with pytest.raises(PlugboxError):
            action()
        assert self.snapshot() == before

    def snapshot(self):
        entries = {}
        for directory, dirs, files in os.walk(self.home):
            for name in dirs + files:
                path = os.path.join(directory, name)
                if name in (layout.LOCK, layout.LOG):
                    continue
                entries[path] = os.readlink(path) if os.path.islink(path) else None
        return entries

    def live_resolves_to_a_complete_version(self):
        """HOME/live leads to deploy/NAME, a whole version; returns NAME."""
        resolved = Path(os.path.realpath(self.home / "live"))
        assert resolved.parent == Path(os.path.realpath(self.home / "deploy")), resolved
        assert (resolved / COMPLETE).is_file(), resolved
        return resolved.name

    # --- the commands ------------------------------------------------------------

    @rule()
    def next_version(self):
        before = set(self.model.links)
        name, _ = operations.next_version(self.home)
        assert name not in before and all(name > other for other in before)
        self.mark_complete(name)
        self.model.next_version(name)

    @rule(data=st.data())
    def upgrade_to(self, data):
        good = self.pending_against_live()
        if good and data.draw(st.booleans(), label="a version made against live"):
            name = data.draw(st.sampled_from(good), label="upgrade-to")
            operations.upgrade_to(self.home, name)
            self.model.upgrade_to(name)
            return
        # live itself, one made against another version, or none at all
        bad = sorted(set(self.model.links) - set(good)) + [UNKNOWN]
        name = data.draw(st.sampled_from(bad), label="upgrade-to")
        self.refused_without_change(lambda: operations.upgrade_to(self.home, name))

    @rule(data=st.data())
    def rollback_to(self, data):
        name = data.draw(st.none() | st.sampled_from(sorted(self.model.links) + [UNKNOWN]),
                         label="rollback-to")
        live = self.model.live
        target = name if name is not None else (self.model.previous(live) if live else None)
        if target in (None, live, UNKNOWN):
            self.refused_without_change(lambda: operations.rollback_to(self.home, name))
            return
        operations.rollback_to(self.home, name)
        self.model.go_live(target)

    @rule(data=st.data())
    def remove(self, data):
        names = data.draw(st.lists(st.sampled_from(sorted(self.model.links) + [UNKNOWN]),
                                   min_size=1, max_size=3), label="remove")
        if self.model.live in names or UNKNOWN in names:
            self.refused_without_change(lambda: operations.remove(self.home, names))
            return
        operations.remove(self.home, names)
        for name in dict.fromkeys(names):
            self.model.remove(name)

    @rule(keep=st.integers(1, 6))
    def prune(self, keep):
        doomed = self.model.prune(keep)
        # The dry run's plan is what prune then does, and it changes nothing.
        before = on_disk(self.store)
        planned = operations.prune(self.home, keep, dry_run=True)
        assert on_disk(self.store) == before
        done = operations.prune(self.home, keep)
        assert planned.remove == done.remove == doomed
        assert len(done.keep) == len(self.model.links) - len(doomed)
        for name in doomed:
            self.model.remove(name)

    # --- a kill at any write, then check --repair -----------------------------------

    @rule(data=st.data(), write=st.integers(0, 14),
          repair_write=st.none() | st.integers(0, 6))
    def killed_mid_command(self, data, write, repair_write):
        model = self.model
        live = model.live
        commands = ["next-version", "prune"]
        if self.pending_against_live():
            commands.append("upgrade-to")
        if set(model.links) - {live}:
            commands += ["rollback-to", "remove"]
        command = data.draw(st.sampled_from(commands), label="command")

        # What the command may do, if it runs to the end, or is killed on the way.
        lives = {live}
        may_remove: list[str] = []
        if command == "next-version":
            run = lambda: operations.next_version(self.home)[0]  # noqa: E731
        elif command == "upgrade-to":
            target = data.draw(st.sampled_from(self.pending_against_live()), label="upgrade-to")
            lives.add(target)
            run = lambda: operations.upgrade_to(self.home, target)  # noqa: E731
        elif command == "rollback-to":
            target = data.draw(st.sampled_from(sorted(set(model.links) - {live})),
                               label="rollback-to")
            lives.add(target)
            run = lambda: operations.rollback_to(self.home, target)  # noqa: E731
        elif command == "remove":
            may_remove = data.draw(st.lists(st.sampled_from(sorted(set(model.links) - {live})),
                                            min_size=1, max_size=2, unique=True), label="remove")
            run = lambda: operations.remove(self.home, may_remove)  # noqa: E731
        else:
            keep = data.draw(st.integers(1, 4), label="keep")
            may_remove = model.prune(keep)
            run = lambda: operations.prune(self.home, keep)  # noqa: E731

        killed = False
        with killed_at(write):
            try:
                run()
            except Killed:
                killed = True

        event(f"{command}: {'killed' if killed else 'ran to the end'}")
        # Right after the kill: live is still a whole version, either end of the switch.
        if live is not None or os.path.lexists(self.home / "live"):
            assert self.live_resolves_to_a_complete_version() in lives
        # Every problem the kill left is one check --repair knows how to fix.
        left = c.problems(self.store.read())
        assert all(problem.repair for problem in left), left
        if not killed:
            assert left == []
        elif left:
            event(f"{command}: killed, leaving work for check --repair")

        if repair_write is not None and left:
            with killed_at(repair_write):
                try:
                    operations.check(self.home, repair=True)
                except Killed:
                    pass
            if live is not None or os.path.lexists(self.home / "live"):
                assert self.live_resolves_to_a_complete_version() in lives
        remaining, _ = operations.check(self.home, repair=True)
        assert remaining == []
        assert c.problems(self.store.read()) == []

        self.follow(command, lives, may_remove, killed)

    def follow(self, command, lives, may_remove, killed):
        """Bring the model to what the (maybe killed) command did, checking it was allowed."""
        model = self.model
        links, live = on_disk(self.store)
        assert live in lives

        appeared = set(links) - set(model.links)
        gone = set(model.links) - set(links)
        assert gone <= set(may_remove), f"{gone - set(may_remove)} disappeared"
        if not killed:   # the command ran to its end: all of it happened
            assert gone == set(may_remove)
            assert len(appeared) == (command == "next-version")
            assert live == max(lives - {model.live}, default=model.live)
        if command == "next-version":
            assert len(appeared) <= 1
            for name in appeared:
                assert all(name > other for other in model.links)
                # killed after the rename: the version exists, empty; the upload would fill it
                self.mark_complete(name)
                model.next_version(name)
        else:
            assert not appeared
        # Removes happen one by one in the order the command takes them.
        for name in may_remove:
            if name in gone:
                model.remove(name)
        if command == "upgrade-to" and live != model.live:
            model.upgrade_to(live)
        elif command == "upgrade-to" and model.live:
            # killed between live's next and the switch: the next link may be written
            (target,) = lives - {model.live}
            assert links[model.live][1] in (model.links[model.live][1], target)
            model.links[model.live][1] = links[model.live][1]
        elif command == "rollback-to":
            model.go_live(live)
        if killed:
            # The history is a record beside the links: a kill between a switch and
            # its event leaves it one event short. Take the record's word for the
            # versions this command switched between, except the live one: it is
            # live, whatever its record says yet.
            for name in lives - {None, live}:
                written = record.load(self.store, name)
                if name in model.links and written is not None:
                    if c.history_state(written["history"]) == "retired":
                        model.was_live.add(name)
                    else:
                        model.was_live.discard(name)

    # --- after every step ---------------------------------------------------------------

    @invariant()
    def invariants_hold(self):
        chain = self.store.read()
        assert c.problems(chain) == []
        assert not chain.removing and not chain.leftovers

    @invariant()
    def the_disk_is_what_the_model_says(self):
        links, live = on_disk(self.store)
        assert live == self.model.live
        assert links == self.model.links
        # The states status shows, from the records' histories.
        assert {row.name: row.state for row in operations.status(self.home)[1]} == \
            self.model.states()

    @invariant()
    def live_is_whole(self):
        if self.model.live is None:
            assert not os.path.lexists(self.home / "deploy" / "live")
        else:
            assert self.live_resolves_to_a_complete_version() == self.model.live
            assert os.readlink(self.home / "live") == "deploy/live"

    @invariant()
    def nothing_else_is_created(self):
        if not (self.home / "deploy").exists():
            return
        for entry in os.listdir(self.home / "deploy"):
            assert entry in self.model.links or entry in ("live", layout.LOCK, layout.LOG, layout.RECORDS), entry
        records = self.home / "deploy" / layout.RECORDS
        if records.exists():  # a record for each version, and none for a version gone
            assert set(os.listdir(records)) == set(self.model.links)
        assert set(os.listdir(self.home)) <= {"deploy", "live"}


PlugboxMachine.TestCase.settings = settings(
    PROFILE, stateful_step_count=30, deadline=None,
)
TestPlugboxMachine = PlugboxMachine.TestCase
