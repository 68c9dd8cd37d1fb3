"""The chain, pure: states, problems and their repairs, the plans of remove and prune."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugbox_server.chain import (
    Chain,
    Links,
    Problem,
    RemoveTree,
    SetLink,
    Unlink,
    Versions,
    history_state,
    plan_finish_removes,
    plan_prune,
    plan_remove,
    problems,
    problems_near,
    resolve,
)

A, B, C, D, E, F = (f"2026112{day}T090000Z" for day in range(1, 7))
Z = "20260101T000000Z"  # a version name that is not in deploy/


def links(previous: str | None = None, next: str | None = None) -> Links:
    """Links as plugbox writes them: `../NAME`."""
    return Links(f"../{previous}" if previous else None, f"../{next}" if next else None)


def chain(versions: dict[str, Links], live: str | None = None, **fields) -> Chain:
    """A chain whose HOME/live points at deploy/live when there is a live version."""
    fields.setdefault("home_live", "deploy/live" if live else None)
    return Chain(versions=versions, live=live, **fields)


# A <- B <- C live, each the previous of the next; D made against C, not yet live.
HEALTHY = chain({
    A: links(None, B),
    B: links(A, C),
    C: links(B),
    D: links(C),
}, live=C)


# --- states -----------------------------------------------------------------------

@pytest.mark.parametrize("given_chain, expected", [
    pytest.param(chain({}), {}, id="empty"),
    pytest.param(chain({A: links()}), {A: "pending"}, id="first upload, never live"),
    pytest.param(chain({A: links()}, live=A), {A: "live"}, id="first version live"),
    pytest.param(HEALTHY, {A: "previous", B: "previous", C: "live", D: "pending"},
                 id="previous chain and a pending version"),
    pytest.param(chain({A: links(None, B), B: links(A)}, live=A),
                 {A: "live", B: "retired"}, id="rolled back from B"),
    pytest.param(chain({A: links(None, B), B: links(A, C), C: links(B)}, live=A),
                 {A: "live", B: "retired", C: "retired"}, id="rolled back two versions"),
    pytest.param(chain({A: links(None, C), B: links(A), C: links(A)}, live=C),
                 {A: "previous", B: "pending", C: "live"},
                 id="made against A but another went live"),
    pytest.param(chain({A: links(None, B), B: links(A)}),
                 {A: "pending", B: "retired"}, id="no live version"),
    pytest.param(chain({A: links(None, B), B: links(A)}, live=B, live_is_link=False),
                 {A: "pending", B: "retired"}, id="deploy/live not a link"),
    pytest.param(chain({A: links(), B: links(A)}, live=Z),
                 {A: "pending", B: "pending"}, id="deploy/live dangling"),
    pytest.param(chain({A: Links(None, "/srv/svc/deploy/" + B), B: links(A)}, live=A),
                 {A: "live", B: "pending"}, id="an absolute next link names no version"),
])
def test_states(given_chain, expected):
    assert given_chain.states() == expected


def test_live_version_is_read_only_from_a_link_to_an_existing_version():
    assert HEALTHY.live_version() == C
    assert chain({A: links()}, live=Z).live_version() is None
    assert chain({A: links()}, live=A, live_is_link=False).live_version() is None
    assert chain({A: links()}, live="/srv/svc/deploy/" + A).live_version() is None


def test_previous_chain_follows_previous_from_live():
    assert HEALTHY.previous_chain() == [B, A]
    assert chain({A: links()}, live=A).previous_chain() == []
    assert chain({A: links()}).previous_chain() == []


def test_previous_chain_stops_at_a_dangling_link():
    assert chain({A: links(Z), B: links(A)}, live=B).previous_chain() == [A]


def test_previous_chain_with_a_cycle_through_live_ends():
    cycle = chain({A: links(C), B: links(A), C: links(B)}, live=C)
    assert cycle.previous_chain() == [B, A]


def test_previous_chain_with_a_cycle_below_live_ends():
    cycle = chain({A: links(C), B: links(A), C: links(B), D: links(C)}, live=D)
    assert cycle.previous_chain() == [C, B, A]


def test_previous_chain_with_live_its_own_previous_ends():
    assert chain({A: links(A)}, live=A).previous_chain() == []


def test_states_with_a_cycle():
    cycle = chain({A: links(C), B: links(A), C: links(B)}, live=C)
    assert cycle.states() == {A: "previous", B: "previous", C: "live"}


# --- problems and their repairs -----------------------------------------------

@pytest.mark.parametrize("given_chain", [
    pytest.param(chain({}), id="empty deploy/"),
    pytest.param(chain({A: links()}), id="one pending version"),
    pytest.param(HEALTHY, id="a healthy chain"),
    pytest.param(chain({A: links(None, B), B: links(A), C: links(A)}, live=A),
                 id="rolled back, and another made against A"),
    pytest.param(chain({A: links(None, C), B: links(A), C: links(A)}, live=C),
                 id="two made against A, the second went live"),
    pytest.param(chain({A: links()}, home_live="deploy/live"), id="HOME/live alone"),
])
def test_a_sound_chain_has_no_problems(given_chain):
    assert problems(given_chain) == []


DEPLOY = "/srv/svc/deploy"


@pytest.mark.parametrize("given_chain, expected", [
    pytest.param(
        chain({A: links(None, B), B: links(A, Z)}, live=B),
        [Problem(f"deploy/{B}/next -> ../{Z}: no such version", (Unlink(f"{B}/next"),))],
        id="dangling next"),
    pytest.param(
        chain({A: links(Z), B: links(A)}, live=B),
        [Problem(f"deploy/{A}/previous -> ../{Z}: no such version",
                 (Unlink(f"{A}/previous"),))],
        id="dangling previous"),
    pytest.param(
        chain({A: Links("../../etc"), B: links(A)}, live=B),
        [Problem(f"deploy/{A}/previous -> ../../etc: no such version",
                 (Unlink(f"{A}/previous"),))],
        id="previous out of deploy/"),
    pytest.param(
        chain({A: Links(None, "../live")}, live=A),
        [Problem(f"deploy/{A}/next -> ../live: no such version", (Unlink(f"{A}/next"),))],
        id="next at deploy/live"),
    pytest.param(
        chain({A: links(), B: Links(f"{DEPLOY}/{A}")}, live=B),
        [Problem(f"deploy/{B}/previous -> {DEPLOY}/{A}: not a relative link",
                 (SetLink(f"{B}/previous", f"../{A}"),))],
        id="absolute previous"),
    pytest.param(
        chain({A: links(), B: Links(f"../../deploy/{A}")}, live=B),
        [Problem(f"deploy/{B}/previous -> ../../deploy/{A}: not a relative link",
                 (SetLink(f"{B}/previous", f"../{A}"),))],
        id="roundabout previous"),
    pytest.param(
        chain({A: Links(None, f"{DEPLOY}/{B}"), B: links(A)}, live=A),
        [Problem(f"deploy/{A}/next -> {DEPLOY}/{B}: not a relative link",
                 (SetLink(f"{A}/next", f"../{B}"),))],
        id="absolute next"),
    pytest.param(
        chain({A: links(None, B), B: Links(f"{DEPLOY}/{A}")}, live=B),
        [Problem(f"deploy/{B}/previous -> {DEPLOY}/{A}: not a relative link",
                 (SetLink(f"{B}/previous", f"../{A}"),)),
         # listed too, but the first repair settles it: check --repair rereads each time
         Problem(f"deploy/{A}/next -> {B}, but {B}/previous is not {A}",
                 (Unlink(f"{A}/next"),))],
        id="absolute previous behind a next"),
    pytest.param(
        chain({A: links(None, B), B: links()}, live=A),
        [Problem(f"deploy/{A}/next -> {B}, but {B}/previous is not {A}",
                 (Unlink(f"{A}/next"),))],
        id="next without previous"),
    pytest.param(
        chain({A: links(None, C), B: links(), C: links(B)}, live=C),
        [Problem(f"deploy/{A}/next -> {C}, but {C}/previous is not {A}",
                 (Unlink(f"{A}/next"),))],
        id="next whose previous is another"),
    pytest.param(
        chain({A: links(C), B: links(A), C: links(B)}, live=C),
        [Problem(f"following previous from live cycles at deploy/{A}/previous",
                 (Unlink(f"{A}/previous"),))],
        id="cycle through live"),
    pytest.param(
        chain({A: links(B), B: links(A), C: links(B)}, live=C),
        [Problem(f"following previous from live cycles at deploy/{A}/previous",
                 (Unlink(f"{A}/previous"),))],
        id="cycle below live"),
    pytest.param(
        chain({A: links(A)}, live=A),
        [Problem(f"following previous from live cycles at deploy/{A}/previous",
                 (Unlink(f"{A}/previous"),))],
        id="live its own previous"),
    pytest.param(
        chain({A: links()}, live=A, live_is_link=False),
        [Problem("deploy/live is not a symlink; move it out of deploy/ and run "
                 "`plugbox rollback-to VERSION`")],
        id="deploy/live not a link"),
    pytest.param(
        chain({A: links()}, live=Z),
        [Problem(f"deploy/live -> {Z}: no such version; delete deploy/live, "
                 "then choose one with `plugbox rollback-to VERSION`")],
        id="deploy/live dangling"),
    pytest.param(
        chain({A: links()}, live=".."),
        [Problem("deploy/live -> ..: no such version; delete deploy/live, "
                 "then choose one with `plugbox rollback-to VERSION`")],
        id="deploy/live at the home"),
    pytest.param(
        chain({A: links()}, live=f"{DEPLOY}/{A}"),
        [Problem(f"deploy/live -> {DEPLOY}/{A}: not a relative link", (SetLink("live", A),))],
        id="deploy/live absolute"),
    pytest.param(
        chain({A: links()}, live=f"../deploy/{A}"),
        [Problem(f"deploy/live -> ../deploy/{A}: not a relative link", (SetLink("live", A),))],
        id="deploy/live roundabout"),
    pytest.param(
        chain({A: links()}, live=A, home_live=None),
        [Problem("live in the home is missing, not -> deploy/live",
                 (SetLink("../live", "deploy/live"),))],
        id="HOME/live missing"),
    pytest.param(
        chain({A: links()}, live=A, home_live=f"deploy/{A}"),
        [Problem(f"live in the home is -> deploy/{A}, not -> deploy/live",
                 (SetLink("../live", "deploy/live"),))],
        id="HOME/live at the version"),
    pytest.param(
        chain({A: links()}, live=A, home_live=f"{DEPLOY}/live"),
        [Problem(f"live in the home is -> {DEPLOY}/live, not -> deploy/live",
                 (SetLink("../live", "deploy/live"),))],
        id="HOME/live absolute"),
    pytest.param(
        chain({A: links()}, live=A, home_live=None, home_live_is_link=False),
        [Problem("live in the home is not a symlink; move it aside")],
        id="HOME/live not a link"),
    pytest.param(
        chain({A: links()}, live=A, leftovers=[".link-4242-7"]),
        [Problem("deploy/.link-4242-7: a leftover temporary link",
                 (RemoveTree(".link-4242-7"),), leftover=True)],
        id="leftover .link-"),
    pytest.param(
        chain({A: links()}, live=A, leftovers=[f".new-{B}"]),
        [Problem(f"deploy/.new-{B}: a leftover unfinished new version",
                 (RemoveTree(f".new-{B}"),), leftover=True)],
        id="leftover .new-"),
    pytest.param(
        chain({A: links(None, C), C: links(B)}, live=C, removing={B: links(A, C)}),
        [Problem(f"deploy/.removing-{B}: an interrupted remove of {B}",
                 (SetLink(f"{C}/previous", f"../{A}"), RemoveTree(f".removing-{B}")), leftover=True)],
        id="interrupted remove: links into it are not dangling"),
    pytest.param(
        chain({A: links()}, live=A, leftovers=[f".new-{B}"], records={A, B, C}),
        [Problem(f"deploy/.new-{B}: a leftover unfinished new version",
                 (RemoveTree(f".new-{B}"),), leftover=True),
         Problem(f"deploy/.plugbox/{C}: the record of no version",
                 (RemoveTree(f".plugbox/{C}"),), leftover=True)],
        id="a record of no version (one being made is not one)"),
])
def test_problems_and_their_repairs(given_chain, expected):
    assert problems(given_chain) == expected


def test_problems_are_listed_leftovers_first_then_live_then_links():
    broken = chain(
        {A: links(C), B: links(A, Z), C: links(B)},
        live=C, home_live=None,
        leftovers=[".new-x", ".link-1-1"],
        removing={D: links(C)},
    )
    messages = [p.message for p in problems(broken)]
    assert messages == [
        f"deploy/.removing-{D}: an interrupted remove of {D}",
        "deploy/.link-1-1: a leftover temporary link",
        "deploy/.new-x: a leftover unfinished new version",
        "live in the home is missing, not -> deploy/live",
        f"deploy/{B}/next -> ../{Z}: no such version",
        f"following previous from live cycles at deploy/{A}/previous",
    ]


def test_every_problem_but_a_persons_choice_has_a_repair():
    """Only a non-link deploy/live or HOME/live, or a dangling deploy/live, needs a person."""
    person = [
        chain({A: links()}, live=A, live_is_link=False),
        chain({A: links()}, live=Z),
        chain({A: links()}, live=A, home_live=None, home_live_is_link=False),
    ]
    for broken in person:
        assert [p.repair for p in problems(broken)] == [()]


# --- the end of a remove ---------------------------------------------------------

@pytest.mark.parametrize("versions, removing, expected", [
    pytest.param(
        {A: links(None, C), C: links(B)}, links(A, C),
        [SetLink(f"{C}/previous", f"../{A}"), RemoveTree(f".removing-{B}")],
        id="middle: its next's previous re-pointed, then deleted"),
    pytest.param(
        {A: links(None, B), C: links(B)}, links(A, C),
        [SetLink(f"{C}/previous", f"../{A}"), SetLink(f"{A}/next", f"../{C}"),
         RemoveTree(f".removing-{B}")],
        id="middle: previous links first, then next links"),
    pytest.param(
        {C: links(B)}, links(None, C),
        [Unlink(f"{C}/previous"), RemoveTree(f".removing-{B}")],
        id="oldest: the link to it goes"),
    pytest.param(
        {A: links(None, B)}, links(A),
        [Unlink(f"{A}/next"), RemoveTree(f".removing-{B}")],
        id="newest: the next link to it goes"),
    pytest.param(
        {A: links(None, D), C: links(B), D: links(A), E: links(B)}, links(A),
        [SetLink(f"{C}/previous", f"../{A}"), SetLink(f"{E}/previous", f"../{A}"),
         RemoveTree(f".removing-{B}")],
        id="detached: every version made against it re-pointed"),
    pytest.param(
        {A: links(B)}, links(A),
        [Unlink(f"{A}/previous"), RemoveTree(f".removing-{B}")],
        id="never a link to itself"),
    pytest.param(
        {C: links(B)}, links(Z),
        [Unlink(f"{C}/previous"), RemoveTree(f".removing-{B}")],
        id="its own previous is gone"),
    pytest.param(
        {A: links(None, C), C: links(A)}, links(A, C),
        [RemoveTree(f".removing-{B}")],
        id="links already re-pointed: only the deletion is left"),
    pytest.param(
        {A: links()}, links(),
        [RemoveTree(f".removing-{B}")],
        id="a lone version"),
])
def test_plan_finish_remove(versions, removing, expected):
    assert plan_finish_removes(chain(versions, removing={B: removing}), only=B) == expected


def test_finishing_a_remove_leaves_a_sound_chain():
    """Apply the plan in memory: the chain that results has no problem."""
    before = chain({A: links(None, B), C: links(B)}, live=C, removing={B: links(A, C)})
    versions = dict(before.versions)
    for op in plan_finish_removes(before, only=B):
        if isinstance(op, RemoveTree):
            continue
        name, kind = op.path.split("/")
        target = op.target if isinstance(op, SetLink) else None
        versions[name] = Links(**{**vars(versions[name]), kind: target})
    after = chain(versions, live=C)
    assert problems(after) == []
    assert after.previous(C) == A and after.next(A) == C


# --- prune -------------------------------------------------------------------------

# A <- B <- C <- D live; E was live after D, rolled back from (detached); F made
# against D and never live (pending).
FULL = chain({
    A: links(None, B),
    B: links(A, C),
    C: links(B, D),
    D: links(C, E),
    E: links(D),
    F: links(D),
}, live=D)


@pytest.mark.parametrize("keep, doomed", [
    (10, []),
    (6, []),
    (5, [F]),              # the pending version first
    (4, [A, F]),           # then the oldest, whatever its state
    (3, [A, B, F]),
    (2, [A, B, E, F]),
    (1, [A, B, E, F]),     # never live (D) nor its previous (C)
])
def test_plan_prune(keep, doomed):
    assert plan_prune(FULL, keep) == doomed


# What the records say of FULL's versions: E was live and failed its check.
FAILED_E = {E: [{"event": "live"}, {"event": "failed", "hook": "check"}, {"event": "away"}],
            F: []}


def test_prune_takes_failed_versions_with_the_pending_ones_first():
    assert plan_prune(FULL, 4, histories=FAILED_E) == [E, F]
    assert plan_prune(FULL, 3, histories=FAILED_E) == [A, E, F]


@pytest.mark.parametrize("history, state", [
    ([], "pending"),
    ([{"event": "failed", "hook": "post_upload"}], "failed"),
    ([{"event": "live"}, {"event": "away"}], "retired"),
    ([{"event": "live"}, {"event": "failed", "hook": "start"}, {"event": "away"}], "failed"),
    ([{"event": "live"}, {"event": "failed", "hook": "check"}, {"event": "away"}], "failed"),
    # rolled back to later, and up this time: was live once
    ([{"event": "live"}, {"event": "failed", "hook": "check"}, {"event": "away"},
      {"event": "live"}, {"event": "away"}], "retired"),
    # live once, then a rollback to it failed
    ([{"event": "live"}, {"event": "away"}, {"event": "live"},
      {"event": "failed", "hook": "check"}, {"event": "away"}], "failed"),
    # came up well, switched back because another host of the deploy failed
    ([{"event": "live"}, {"event": "reverted"}, {"event": "away"}], "reverted"),
    # and later rolled forward to, and up: was live
    ([{"event": "live"}, {"event": "reverted"}, {"event": "away"}, {"event": "live"}, {"event": "away"}],
     "retired"),
])
def test_history_state(history, state):
    assert history_state(history) == state


def test_a_version_rolled_back_from_is_retired_not_pending_after_a_new_deploy():
    # deploy A, deploy B, rollback, deploy C: B's links alone look pending.
    after = chain({A: links(None, C), B: links(A), C: links(A)}, live=C)
    assert after.states()[B] == "pending"
    histories = {A: [{"event": "live"}], B: [{"event": "live"}, {"event": "away"}],
                 C: [{"event": "live"}]}
    assert after.states(histories) == {A: "previous", B: "retired", C: "live"}
    assert plan_prune(after, 2, histories=histories) == [B]  # the oldest but live's previous


def test_prune_takes_a_pending_version_before_an_older_previous_one():
    pending_old = chain({A: links(), B: links(None, C), C: links(B, D), D: links(C)}, live=D)
    assert plan_prune(pending_old, 3) == [A]


def test_prune_without_a_live_version_takes_the_oldest():
    assert plan_prune(chain({A: links(), B: links(), C: links()}), 1) == [A, B]


def test_prune_skips_a_version_in_use_and_takes_the_next_in_its_place():
    # FULL's oldest would go first; in use, it stays and the next one goes.
    without = plan_prune(FULL, len(FULL.versions) - 1)
    [first] = without
    [instead] = plan_prune(FULL, len(FULL.versions) - 1, in_use={first})
    assert instead != first and instead in FULL.versions


def test_prune_with_every_candidate_in_use_removes_nothing():
    candidates = set(FULL.versions) - {FULL.live_version(), FULL.previous(FULL.live_version())}
    assert plan_prune(FULL, 1, in_use=candidates) == []


def test_prune_keeps_the_previous_of_live_even_at_keep_1():
    assert plan_prune(chain({A: links(None, B), B: links(A)}, live=B), 1) == []


@st.composite
def chains(draw):
    """A chain as next-version, upgrade-to and rollback-to could leave it."""
    versions: dict[str, Links] = {}
    live = None
    for second in range(draw(st.integers(0, 8))):
        name = f"20261121T0900{second:02d}Z"
        versions[name] = links(live)             # next-version
        action = draw(st.sampled_from(["leave pending", "upgrade-to", "rollback-to"]))
        if action == "upgrade-to":
            if live:
                versions[live] = Links(versions[live].previous, f"../{name}")
            live = name
        elif action == "rollback-to":
            live = draw(st.sampled_from(sorted(versions)))
    return chain(versions, live=live)


RANK = {"pending": 0, "failed": 0, "retired": 1, "previous": 1}


@given(chains(), st.integers(1, 10))
def test_prune_never_takes_live_nor_its_previous_and_keeps_at_most_n(pruned, keep):
    assert problems(pruned) == []
    doomed = plan_prune(pruned, keep)
    live = pruned.live_version()
    protected = {live, pruned.previous(live) if live else None} - {None}
    assert not protected & set(doomed)
    assert len(doomed) == len(set(doomed)) and set(doomed) <= set(pruned.versions)
    total = len(pruned.versions)
    left = total - len(doomed)
    assert left == (total if total <= keep else max(keep, len(protected)))
    # pending (and failed) first, then the oldest
    states = pruned.states()
    kept = set(pruned.versions) - set(doomed) - protected
    for gone in doomed:
        for stays in kept:
            assert (RANK[states[gone]], gone) < (RANK[states[stays]], stays)


# --- several removes at once (prune) ---------------------------------------------------


def test_finishing_several_removes_re_points_past_all_of_them():
    # A <- B <- C <- D <- E, live E; B, C and D removed together.
    before = chain({A: links(None, B), E: links(D)}, live=E,
                   removing={B: links(A, C), C: links(B, D), D: links(C, E)})
    assert plan_finish_removes(before) == [
        SetLink(f"{E}/previous", f"../{A}"), SetLink(f"{A}/next", f"../{E}"),
        RemoveTree(f".removing-{B}"), RemoveTree(f".removing-{C}"), RemoveTree(f".removing-{D}")]


def test_plan_remove_is_plan_finish_removes_once_renamed():
    full = chain({A: links(None, B), B: links(A, C), C: links(B, D), D: links(C)}, live=D)
    after, ops = plan_remove(full, [B, C])
    assert set(after.versions) == {A, D} and set(after.removing) == {B, C}
    assert ops == [SetLink(f"{D}/previous", f"../{A}"), SetLink(f"{A}/next", f"../{D}"),
                   RemoveTree(f".removing-{B}"), RemoveTree(f".removing-{C}")]


def test_an_interrupted_remove_of_many_is_one_problem():
    broken = chain({A: links(None, B), E: links(D)}, live=E,
                   removing={B: links(A, C), C: links(B, D), D: links(C, E)})
    (problem,) = problems(broken)
    assert problem.message == (f"deploy/.removing-*: an interrupted remove of 3 versions, "
                               f"{B} to {D}")
    assert list(problem.repair) == plan_finish_removes(broken)


# --- reading links on demand ---------------------------------------------------------


def lazy(versions: dict[str, Links], live: str) -> tuple[Chain, list[str]]:
    """A chain whose versions' links are read through Versions, as store.read() makes it,
    and the names whose links were read, in order."""
    read: list[str] = []

    def reading(name: str) -> Links:
        read.append(name)
        return versions[name]

    return chain(Versions(list(versions) + ["not-a-version"], reading), live=live), read


LONG = {name: links(before, after) for before, name, after in zip(
    [None, A, B, C, D], [A, B, C, D, E], [B, C, D, E, None])}


def test_a_rollback_reads_the_links_of_live_and_its_previous_alone():
    lazy_chain, read = lazy(LONG, live=E)
    assert lazy_chain.previous(lazy_chain.live_version()) == D
    assert problems_near(lazy_chain) == []
    assert sorted(set(read)) == [D, E]
    assert resolve(lazy_chain, "live~2") == C  # two steps back: E's and D's previous
    assert sorted(set(read)) == [D, E]


def test_the_names_of_versions_are_what_is_listed_with_a_versions_name():
    lazy_chain, read = lazy(LONG, live=E)
    assert sorted(lazy_chain.versions) == [A, B, C, D, E]
    assert "not-a-version" not in lazy_chain.versions and Z not in lazy_chain.versions
    assert lazy_chain.newest_name() == E
    assert read == []


def test_the_states_of_the_newest_read_no_further_than_the_oldest_of_them():
    lazy_chain, read = lazy(LONG, live=D)
    assert lazy_chain.states(names=[E, D, C]) == {E: "retired", D: "live", C: "previous"}
    assert A not in read
    assert lazy_chain.states(names=[E, D, C]) == {n: s for n, s in chain(LONG, live=D).states().items()
                                                  if n in (E, D, C)}


def test_the_gate_near_live_sees_a_broken_link_there_and_not_in_an_old_version():
    broken_old = {**LONG, A: Links(None, f"../{Z}")}
    assert problems_near(chain(broken_old, live=E)) == []
    assert problems_near(chain(broken_old, live=E), [A]) == \
        [Problem(f"deploy/{A}/next -> ../{Z}: no such version", (Unlink(f"{A}/next"),))]
    assert problems(chain(broken_old, live=E)) == problems_near(chain(broken_old, live=E), [A])
    broken_previous = {**LONG, D: Links(f"../{C}", f"../{Z}")}
    assert [p.message for p in problems_near(chain(broken_previous, live=E))] == \
        [f"deploy/{D}/next -> ../{Z}: no such version"]
