"""`plugbox`, in-process: the whole life of a home without hooks, and every refusal.

Commands that change state run on real directories: they take the lock on
deploy/, which writes its holder with os.pwrite, and pyfakefs has no pwrite
(nor pread). The commands that only read (status, check, log) also run on a
fake filesystem, with layouts built by hand.

The in-process runner (`plugbox`, `ok`, `refused`...) is in helpers.py, with why
the click command is built once, at import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import COMMAND, RUNNER, deploy, link, new_version, ok, plugbox, refused, snapshot
from plugbox_server import operations
from plugbox_server.names import is_version_name

Z = "20260101T000000Z"  # a well-formed name no version has


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "srv" / "svc"
    home.mkdir(parents=True)
    return home


# --- the whole life of a home ---------------------------------------------------

def test_next_version_prints_the_name_alone(home):
    ran = plugbox(home, "next-version")
    assert ran.exit_code == 0 and ran.stderr == ""
    name = ran.stdout.rstrip("\n")
    assert ran.stdout == f"{name}\n" and is_version_name(name)
    assert (home / "deploy" / name).is_dir()
    assert link(home, f"deploy/{name}/previous") is None   # a first version
    assert link(home, "deploy/live") is None and link(home, "live") is None
    assert sorted(os.listdir(home / "deploy")) == [".lock", ".log", ".plugbox", name]


def test_next_version_json_tells_the_name_previous_and_home(home):
    first = json.loads(ok(home, "next-version", "--json"))
    assert first == {"name": first["name"], "previous": None, "home": str(home)}
    assert is_version_name(first["name"]) and (home / "deploy" / first["name"]).is_dir()
    assert ok(home, "upgrade-to", first["name"]) == f"plugbox: live is now {first['name']}\n"

    out = ok(home, "next-version", "--json")

    assert out.count("\n") == 1  # one line
    second = json.loads(out)
    assert second == {"name": second["name"], "previous": first["name"], "home": str(home)}
    assert link(home, f"deploy/{second['name']}/previous") == f"../{first['name']}"


def test_the_first_upgrade_makes_live_links(home):
    first = new_version(home)
    assert ok(home, "upgrade-to", first) == f"plugbox: live is now {first}\n"
    assert link(home, "deploy/live") == first
    assert link(home, "live") == "deploy/live"
    assert (home / "live" / "app.py").read_text() == f"print('{first}')\n"


def test_versions_are_stitched_by_previous_and_next(home):
    first = deploy(home)
    second = new_version(home)
    assert second > first
    assert link(home, f"deploy/{second}/previous") == f"../{first}"
    assert link(home, f"deploy/{first}/next") is None     # not before upgrade-to
    ok(home, "upgrade-to", second)
    assert link(home, f"deploy/{first}/next") == f"../{second}"
    assert link(home, "deploy/live") == second
    assert link(home, "live") == "deploy/live"


def test_rollback_to_the_previous_and_forward_again(home):
    first = deploy(home)
    second = deploy(home)
    assert ok(home, "rollback-to") == f"plugbox: live is now {first}\n"
    assert link(home, "deploy/live") == first
    # no link is rewritten: the version rolled back from stays first's next
    assert link(home, f"deploy/{first}/next") == f"../{second}"
    assert link(home, f"deploy/{second}/previous") == f"../{first}"
    assert ok(home, "upgrade-to", second) == f"plugbox: live is now {second}\n"
    assert link(home, "deploy/live") == second


def test_rollback_to_a_named_version(home):
    first = deploy(home)
    deploy(home)
    third = deploy(home)
    assert ok(home, "rollback-to", first) == f"plugbox: live is now {first}\n"
    assert link(home, "deploy/live") == first
    assert ok(home, "rollback-to", third) == f"plugbox: live is now {third}\n"


def test_remove_repoints_the_links_past_the_version(home):
    first = deploy(home)
    second = deploy(home)
    third = deploy(home)
    assert ok(home, "remove", "-v", second) == f"plugbox: removed {second}\n"
    assert not (home / "deploy" / second).exists()
    assert link(home, f"deploy/{third}/previous") == f"../{first}"
    assert link(home, f"deploy/{first}/next") == f"../{third}"
    assert ok(home, "check") == "ok\n"


def test_remove_several(home):
    first = deploy(home)
    second = deploy(home)
    third = deploy(home)
    pending = new_version(home)
    out = ok(home, "remove", "-v", first, "-v", pending)
    assert out == f"plugbox: removed {first}\nplugbox: removed {pending}\n"
    assert sorted(n for n in os.listdir(home / "deploy") if not n.startswith(".")) == \
        sorted([second, third, "live"])
    assert link(home, f"deploy/{second}/previous") is None
    assert ok(home, "check") == "ok\n"


def test_remove_never_follows_a_link_out_of_the_version(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    first = deploy(home)
    deploy(home)
    os.symlink(outside, home / "deploy" / first / "data")
    ok(home, "remove", "-v", first)
    assert (outside / "precious").read_text() == "keep me"


def test_prune_keeps_n(home):
    first = deploy(home)
    second = deploy(home)
    third = deploy(home)
    fourth = deploy(home)
    assert ok(home, "prune", "--keep", "2") == \
        f"plugbox: removed {first}\nplugbox: removed {second}\n"
    assert link(home, f"deploy/{third}/previous") is None
    assert link(home, "deploy/live") == fourth
    assert ok(home, "prune", "--keep", "2") == "nothing to prune: 2 versions left (--keep 2)\n"
    assert ok(home, "check") == "ok\n"


def test_prune_takes_a_pending_version_first_and_never_live_nor_its_previous(home):
    first = deploy(home)
    second = deploy(home)
    pending = new_version(home)
    assert ok(home, "prune", "--keep", "2") == f"plugbox: removed {pending}\n"
    before = snapshot(home)
    assert ok(home, "prune", "--keep", "1") == \
        "nothing to prune: 2 versions left (live and its previous are never pruned)\n"
    assert snapshot(home) == before
    assert (home / "deploy" / first).is_dir() and (home / "deploy" / second).is_dir()


def test_prune_defaults_to_keeping_5(home):
    names = [deploy(home) for _ in range(7)]
    out = ok(home, "prune")
    assert out == f"plugbox: removed {names[0]}\nplugbox: removed {names[1]}\n"


def test_status_lists_every_version_newest_first(home, monkeypatch):
    monkeypatch.setenv("PLUGBOX_USER", "alice")
    first = deploy(home)
    second = deploy(home)
    third = deploy(home)
    ok(home, "rollback-to")
    pending = new_version(home)
    lines = ok(home, "status").splitlines()
    # name, state, revision (none: made by hand), who, when
    assert [line.split()[:6] for line in lines] == [
        [pending, "pending", "-", "alice", "just", "now"],
        [third, "retired", "-", "alice", "just", "now"],
        [second, "live", "-", "alice", "just", "now"],
        [first, "previous", "-", "alice", "just", "now"],
    ]
    # Names made in one second get a suffix: the columns are as wide as the longest.
    w = max(len(name) for name in (first, second, third, pending))
    assert {line.index("alice") for line in lines} == {w + 2 + len("previous") + 2 + 1 + 2}


def test_status_shows_the_newest_20_and_says_how_many_more_all_lists(home):
    names = [deploy(home) for _ in range(22)]
    ok(home, "rollback-to", names[-3])
    pending = new_version(home)
    names.append(pending)  # 23 versions, newest last

    lines = ok(home, "status").splitlines()
    every = ok(home, "status", "--all").splitlines()

    assert [line.split()[0] for line in lines[:-1]] == names[::-1][:20]
    assert lines[-1] == "... and 3 older versions: `plugbox status --all` shows every version"
    assert [line.split()[0] for line in every] == names[::-1]
    # The newest 20 are told as the whole list tells them: the states of those alone,
    # read from their links and records and from live's previous chain, agree.
    assert lines[:-1] == every[:20]
    assert [line.split()[1] for line in every[:4]] == ["pending", "retired", "retired", "live"]
    assert {line.split()[1] for line in every[4:]} == {"previous"}
    assert len(json.loads(ok(home, "status", "--json"))["versions"]) == 23  # --json: every version


def test_status_of_at_most_20_versions_lists_them_all(home):
    names = [deploy(home) for _ in range(20)]
    lines = ok(home, "status").splitlines()
    assert [line.split()[0] for line in lines] == names[::-1]
    assert ok(home, "status", "-a").splitlines() == lines


def test_the_compact_status_of_several_hosts_has_the_live_row_even_when_it_is_old(home):
    import io

    from plugbox_server import report

    names = [deploy(home) for _ in range(22)]
    ok(home, "rollback-to", names[0])  # older than the newest 20
    known = report.status(home, False, io.StringIO(), brief=True)
    assert known["live"] == names[0] and known["row"][0] == names[0]
    assert known["versions"][:20] == names[::-1][:20]  # for completion: what a status shows


def test_a_broken_link_in_an_old_version_blocks_no_rollback_but_check_reports_it(home):
    names = [deploy(home) for _ in range(5)]
    oldest = home / "deploy" / names[0]
    os.unlink(oldest / "next")
    os.symlink(f"../{Z}", oldest / "next")
    problem = f"deploy/{names[0]}/next -> ../{Z}: no such version"

    # What a rollback, an upgrade and a deploy stand on is sound: live's links, its
    # previous's, the version they name. The old version's link is check's to report.
    assert ok(home, "rollback-to") == f"plugbox: live is now {names[-2]}\n"
    assert ok(home, "upgrade-to", names[-1]) == f"plugbox: live is now {names[-1]}\n"
    deploy(home)
    ran = plugbox(home, "check")
    assert (ran.exit_code, ran.stdout) == (1, f"problem: {problem}\n")
    # Naming it, or a command that re-points links anywhere (remove, prune), is refused.
    assert refused(home, "rollback-to", names[0]) == \
        f"plugbox: deploy/ needs repair: {problem}; run `plugbox check --repair`\n"
    assert refused(home, "prune", "--keep", "2") == \
        f"plugbox: deploy/ needs repair: {problem}; run `plugbox check --repair`\n"


def test_status_shows_revision_who_and_message_of_a_deploy(home):
    origin = {"user": "bob", "machine": "laptop", "revision": "0123456789abcdef" * 2 + "01234567",
              "branch": "main", "dirty": True, "message": "fix the\nlogin form"}
    name, _ = operations.next_version(home, origin=origin)
    ok(home, "upgrade-to", name)
    [line] = ok(home, "status").splitlines()
    assert line == f"{name}  live  0123456+  bob@laptop  just now  fix the login form"
    [version] = json.loads(ok(home, "status", "--json"))["versions"]
    assert {k: version["record"][k] for k in origin} == origin
    assert version["record"]["history"][0]["event"] == "live"


def test_status_json(home):
    first = deploy(home)
    second = deploy(home)
    pending = new_version(home)
    state = json.loads(ok(home, "status", "--json"))
    assert [{k: v for k, v in version.items() if k != "record"} for version in state["versions"]] == [
        {"name": pending, "state": "pending", "previous": second, "next": None},
        {"name": second, "state": "live", "previous": first, "next": None},
        {"name": first, "state": "previous", "previous": None, "next": second},
    ]
    assert (state["home"], state["live"]) == (str(home), second)
    assert [version["record"]["name"] for version in state["versions"]] == [pending, second, first]


def test_status_json_of_an_empty_home(home):
    assert json.loads(ok(home, "status", "--json")) == \
        {"home": str(home), "live": None, "versions": []}


def test_home_from_the_environment(home):
    with RUNNER.isolation(env={"PLUGBOX_HOME": str(home)}) as (out, _, _):
        try:
            COMMAND.main(args=["next-version"], prog_name="plugbox")
        except SystemExit as exit:
            assert exit.code in (0, None)
        name = out.getvalue().decode().strip()
    assert (home / "deploy" / name).is_dir()


def test_log_records_each_command_and_its_outcome(home):
    first = deploy(home)
    second = deploy(home)
    ok(home, "rollback-to")
    plugbox(home, "upgrade-to", Z)
    lines = ok(home, "log").splitlines()
    assert lines[0].split() == ["TIME", "USER", "COMMAND", "FROM", "TO", "OUTCOME"]
    rows = [line.split() for line in lines[1:]]
    assert [row[2:] for row in rows] == [
        ["next-version", "-", first, "ok"],
        ["upgrade-to", first, "-", first, "ok"],
        ["next-version", first, second, "ok"],
        ["upgrade-to", second, first, second, "ok"],
        ["rollback-to", second, first, "ok"],
        ["upgrade-to", Z, first, first, "refused:", "no", "version", Z, "in", "deploy/"],
    ]


def test_log_of_a_new_home(home):
    assert ok(home, "log") == "no operations yet\n"


def test_check_of_a_sound_home(home):
    deploy(home)
    deploy(home)
    assert ok(home, "check") == "ok\n"
    assert ok(home, "check", "--repair") == "ok\n"


def test_check_reports_and_repair_fixes(home):
    first = deploy(home)
    second = deploy(home)
    previous = home / "deploy" / second / "previous"
    previous.unlink()
    previous.symlink_to(home / "deploy" / first)      # absolute
    os.symlink("../20260101T000000Z", home / "deploy" / ".link-99-0")
    ran = plugbox(home, "check")
    assert ran.exit_code == 1 and ran.exception is None
    assert ran.stdout.splitlines() == [
        "problem: deploy/.link-99-0: a leftover temporary link",
        f"problem: deploy/{second}/previous -> {home}/deploy/{first}: not a relative link",
        f"problem: deploy/{first}/next -> {second}, but {second}/previous is not {first}",
    ]
    assert ran.stderr == "plugbox: 3 problems in deploy/; run `plugbox check --repair`\n"

    out = ok(home, "check", "--repair")
    assert out.splitlines() == [
        "repaired: deploy/.link-99-0: a leftover temporary link",
        f"repaired: deploy/{second}/previous -> {home}/deploy/{first}: not a relative link",
    ]
    # the relative link is back, and first's next was not lost on the way
    assert link(home, f"deploy/{second}/previous") == f"../{first}"
    assert link(home, f"deploy/{first}/next") == f"../{second}"
    assert not os.path.lexists(home / "deploy" / ".link-99-0")
    assert ok(home, "check") == "ok\n"


def test_check_repair_finishes_an_interrupted_remove(home):
    first = deploy(home)
    second = deploy(home)
    third = deploy(home)
    os.rename(home / "deploy" / second, home / "deploy" / f".removing-{second}")
    assert ok(home, "status").splitlines()[0].startswith(f"{third}  live")
    out = ok(home, "check", "--repair")
    assert out == f"repaired: deploy/.removing-{second}: an interrupted remove of {second}\n"
    assert link(home, f"deploy/{third}/previous") == f"../{first}"
    assert link(home, f"deploy/{first}/next") == f"../{third}"
    assert not os.path.lexists(home / "deploy" / f".removing-{second}")


def test_check_cannot_repair_a_dangling_live(home):
    first = deploy(home)
    (home / "deploy" / "live").unlink()
    os.symlink(Z, home / "deploy" / "live")
    before = snapshot(home)
    ran = plugbox(home, "check", "--repair")
    assert ran.exit_code == 1 and ran.exception is None
    assert ran.stdout == (f"problem: deploy/live -> {Z}: no such version; delete deploy/live, "
                          "then choose one with `plugbox rollback-to VERSION`\n")
    assert ran.stderr == "plugbox: 1 problem in deploy/\n"
    assert snapshot(home) == before
    # the way out the message gives: while deploy/live dangles, every change is refused
    assert refused(home, "rollback-to", first).startswith("plugbox: deploy/ needs repair: ")
    (home / "deploy" / "live").unlink()
    assert ok(home, "rollback-to", first) == f"plugbox: live is now {first}\n"
    assert ok(home, "check") == "ok\n"


# --- refusals: one line, the thing named, the next step, nothing changed ----------

# (live and previous name versions: see test_versions_by_short_name.py)
BAD_NAMES = ["../x", "..", ".", "live~", "Live", "a\nb", "/etc/passwd",
             f"{Z}/..", f"deploy/{Z}", f" {Z}", f"{Z}.0001", ""]


@pytest.fixture
def lived(home):
    """A home with two versions, the second live."""
    deploy(home)
    deploy(home)
    return home


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("command", [["upgrade-to"], ["rollback-to"], ["remove", "-v"]])
def test_a_bad_version_name_is_refused(lived, command, name):
    line = refused(lived, *command, name, code=2)  # bad usage
    assert line == (f"plugbox: {name!a} is not a version name: a name is YYYYMMDDTHHMMSSZ, such as 20261121T090000Z, "
                    "or a unique prefix of one (20261121T09), live, previous or live~N (N versions back from live); "
                    "see `plugbox status` for the versions\n")


@pytest.mark.parametrize("command", [["upgrade-to"], ["rollback-to"], ["remove", "-v"]])
def test_an_unknown_version_is_refused(lived, command):
    assert refused(lived, *command, Z) == \
        f"plugbox: no version {Z} in deploy/; see `plugbox status`\n"


def test_upgrade_to_the_live_version_is_refused(home):
    live = deploy(home)
    assert refused(home, "upgrade-to", live) == \
        f"plugbox: {live} is already live; see `plugbox status`\n"


def test_rollback_to_the_live_version_is_refused(lived):
    live = link(lived, "deploy/live")
    assert refused(lived, "rollback-to", live) == \
        f"plugbox: {live} is already live; see `plugbox status`\n"


def test_upgrade_to_a_version_made_against_another_live_is_refused(home):
    first = deploy(home)
    second = new_version(home)
    third = new_version(home)
    ok(home, "upgrade-to", second)
    assert refused(home, "upgrade-to", third) == (
        f"plugbox: {third} was made against {first}, but the live version is {second}; "
        "deploy again to make a version against the live one\n")


def test_upgrade_to_a_first_version_over_a_live_one_is_refused(home):
    early = new_version(home)
    live = deploy(home)
    # `early` was made with no live version: it is no upgrade of `live`
    assert link(home, f"deploy/{live}/previous") is None
    assert refused(home, "upgrade-to", early) == (
        f"plugbox: {early} was made as a first version, but the live version is {live}; "
        "deploy again to make a version against the live one\n")


def test_upgrade_to_a_version_made_against_a_live_when_none_is_live_is_refused(home):
    first = deploy(home)
    second = new_version(home)
    os.unlink(home / "live")
    os.unlink(home / "deploy" / "live")
    assert refused(home, "upgrade-to", second) == (
        f"plugbox: {second} was made against {first}, but the live version is none; "
        "deploy again to make a version against the live one\n")


def test_rollback_with_no_previous_is_refused(home):
    live = deploy(home)
    assert refused(home, "rollback-to") == \
        f"plugbox: the live version {live} has no previous version; see `plugbox status`\n"


def test_run_by_plug_the_hints_name_plug_commands(home, monkeypatch):
    # plug sets PLUGBOX_CLIENT=plug: its user types plug on another machine.
    monkeypatch.setenv("PLUGBOX_CLIENT", "plug")
    live = deploy(home)
    assert refused(home, "rollback-to") == \
        f"plugbox: the live version {live} has no previous version; see `plug status`\n"
    os.unlink(home / "deploy" / "live")
    assert refused(home, "rollback-to") == (
        "plugbox: there is no live version to roll back from; "
        "name a version: `plug rollback VERSION`\n")


def test_rollback_with_no_live_version_is_refused(home):
    new_version(home)
    assert refused(home, "rollback-to") == (
        "plugbox: there is no live version to roll back from; "
        "name a version: `plugbox rollback-to VERSION`\n")


def test_rollback_refresh_without_a_refresh_hook_is_refused(lived):
    first = link(lived, f"deploy/{link(lived, 'deploy/live')}/previous")[3:]
    assert refused(lived, "rollback-to", "--refresh") == \
        f"plugbox: {first} has no refresh hook; roll back without --refresh\n"


def test_remove_of_the_live_version_is_refused(lived):
    live = link(lived, "deploy/live")
    assert refused(lived, "remove", "-v", live) == \
        f"plugbox: {live} is live and cannot be removed; roll back or deploy first\n"


@pytest.mark.parametrize("bad", ["unknown", "live", "malformed"])
def test_remove_of_several_with_one_bad_removes_none(home, bad):
    first = deploy(home)
    second = deploy(home)
    deploy(home)
    live = link(home, "deploy/live")
    other, named = {"unknown": (Z, f"no version {Z} "), "live": (live, f"{live} is live"),
                    "malformed": ("../x", "'../x' is not a version name")}[bad]
    line = refused(home, "remove", "-v", first, "-v", second, "-v", other, code=2 if bad == "malformed" else 1)
    assert line.startswith(f"plugbox: {named}")


def test_remove_needs_a_version(lived):
    line = refused(lived, "remove", code=2)
    assert "-v" in line or "--version" in line


@pytest.mark.parametrize("command", [["upgrade-to"], ["rollback-to"], ["remove", "-v"]])
def test_a_link_in_deploy_is_no_version(lived, tmp_path, command):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    os.symlink(outside, lived / "deploy" / Z)
    assert refused(lived, *command, Z) == \
        f"plugbox: no version {Z} in deploy/; see `plugbox status`\n"
    assert (outside / "precious").read_text() == "keep me"


@pytest.mark.parametrize("keep", ["0", "-1", "many"])
def test_prune_keep_below_1_is_refused(lived, keep):
    line = refused(lived, "prune", "--keep", keep, code=2)
    assert "--keep" in line
    assert line.rstrip("\n").splitlines()[-1].startswith("Error: Invalid value for '--keep'")


@pytest.mark.parametrize("command", [
    ["upgrade-to", Z], ["rollback-to"], ["rollback-to", Z], ["remove", "-v", Z],
])
def test_commands_on_a_home_without_deploy_are_refused(home, command):
    assert refused(home, *command) == \
        f"plugbox: no deploy/ in {home}; deploy a first version with `plug deploy`\n"
    assert not (home / "deploy").exists()


@pytest.mark.parametrize("command, out", [
    (["status"], "no versions\n"),
    (["check"], "ok\n"),
    (["check", "--repair"], "ok\n"),
    (["log"], "no operations yet\n"),
    (["prune"], "nothing to prune: 0 versions left (--keep 5)\n"),
])
def test_reading_a_home_without_deploy_changes_nothing(home, command, out):
    assert ok(home, *command) == out
    assert os.listdir(home) == []


def _break(home: Path) -> str:
    """Make first's next dangle; return the problem check reports."""
    first = sorted(n for n in os.listdir(home / "deploy") if is_version_name(n))[0]
    os.unlink(home / "deploy" / first / "next")
    os.symlink(f"../{Z}", home / "deploy" / first / "next")
    return f"deploy/{first}/next -> ../{Z}: no such version"


@pytest.mark.parametrize("command", [
    ["next-version"], ["upgrade-to", "PENDING"], ["rollback-to"], ["rollback-to", "FIRST"],
    ["remove", "-v", "FIRST"], ["prune", "--keep", "1"],
])
def test_a_broken_chain_refuses_every_change(home, command):
    first = deploy(home)
    deploy(home)
    pending = new_version(home)
    problem = _break(home)
    args = [{"PENDING": pending, "FIRST": first}.get(arg, arg) for arg in command]
    assert refused(home, *args) == \
        f"plugbox: deploy/ needs repair: {problem}; run `plugbox check --repair`\n"


def test_a_broken_chain_still_shows_its_status(home):
    deploy(home)
    deploy(home)
    _break(home)
    assert len(ok(home, "status").splitlines()) == 2


MALFORMED = {
    "not TOML": "[hooks\nstart = ['true']\n",
    "unknown hook": "[hooks]\nbefore_start = ['true']\n",
    "hook not a list": "[hooks]\nstart = 'true'\n",
    "hooks not a table": "hooks = 3\n",
    "shared outside": "[service]\nshared = ['../elsewhere']\n",
}


@pytest.mark.parametrize("what", MALFORMED)
def test_upgrade_to_a_version_with_a_malformed_plugbox_toml_is_refused(home, what):
    deploy(home)
    bad = new_version(home, {"plugbox.toml": MALFORMED[what]})
    line = refused(home, "upgrade-to", bad)
    assert line.startswith(f"plugbox: deploy/{bad}/plugbox.toml: ")


def test_a_malformed_plugbox_toml_names_the_line(home):
    deploy(home)
    bad = new_version(home, {"plugbox.toml": MALFORMED["not TOML"]})
    line = refused(home, "upgrade-to", bad)
    assert "not valid TOML" in line and "line 1" in line
    assert line.endswith("; fix it and deploy again\n")


def test_upgrade_from_a_live_version_with_a_malformed_plugbox_toml_is_refused(home):
    live = deploy(home)
    (home / "deploy" / live / "plugbox.toml").write_text(MALFORMED["not TOML"])
    good = new_version(home)
    assert refused(home, "upgrade-to", good).startswith(
        f"plugbox: deploy/{live}/plugbox.toml: not valid TOML")


def test_rollback_to_a_version_with_a_malformed_plugbox_toml_is_refused(home):
    first = deploy(home)
    deploy(home)
    (home / "deploy" / first / "plugbox.toml").write_text(MALFORMED["unknown hook"])
    line = refused(home, "rollback-to")
    assert line.startswith(f"plugbox: deploy/{first}/plugbox.toml: [hooks] before_start: unknown key")


def test_no_plugbox_toml_or_no_hooks_means_no_hooks(home):
    deploy(home, {"plugbox.toml": "[service]\n"})
    deploy(home)


def test_an_unknown_command_is_bad_usage(home):
    ran = plugbox(home, "deploy")
    assert ran.exit_code == 2 and ran.exception is None
    assert "deploy" in ran.stderr


# --- read-only commands on a fake filesystem ------------------------------------

FAKE = "/srv/svc"
V1, V2, V3 = "20261120T100000Z", "20261121T090000Z", "20261122T080000Z"


@pytest.fixture
def fake_home(fs):
    """V1 <- V2 live, V3 rolled back from; built link by link."""
    deploy = f"{FAKE}/deploy"
    for name in (V1, V2, V3):
        fs.create_dir(f"{deploy}/{name}")
    fs.create_symlink(f"{deploy}/{V2}/previous", f"../{V1}")
    fs.create_symlink(f"{deploy}/{V1}/next", f"../{V2}")
    fs.create_symlink(f"{deploy}/{V3}/previous", f"../{V2}")
    fs.create_symlink(f"{deploy}/{V2}/next", f"../{V3}")
    fs.create_symlink(f"{deploy}/live", V2)
    fs.create_symlink(f"{FAKE}/live", "deploy/live")
    fs.create_file(f"{deploy}/.log", contents=(
        f"2026-11-22T08:00:01Z\tsvc\tupgrade-to {V3}\t{V2}\t{V3}\tok\n"
        f"2026-11-22T08:05:00Z\tsvc\trollback-to\t{V3}\t{V2}\tok\n"))
    return fs


def test_fake_status(fake_home):
    # Versions without a record: their states come from the links alone.
    assert ok(FAKE, "status").splitlines() == [
        f"{V3}  retired   -  -  -",
        f"{V2}  live      -  -  -",
        f"{V1}  previous  -  -  -",
    ]


def test_fake_status_json(fake_home):
    assert json.loads(ok(FAKE, "status", "--json")) == {
        "home": FAKE,
        "live": V2,
        "versions": [
            {"name": V3, "state": "retired", "previous": V2, "next": None, "record": None},
            {"name": V2, "state": "live", "previous": V1, "next": V3, "record": None},
            {"name": V1, "state": "previous", "previous": None, "next": V2, "record": None},
        ],
    }


def test_fake_status_ignores_what_is_not_a_version(fake_home):
    fake_home.create_dir(f"{FAKE}/deploy/notes")
    fake_home.create_file(f"{FAKE}/deploy/20261123T000000Z")      # a file, not a version
    assert len(ok(FAKE, "status").splitlines()) == 3


def test_fake_check_ok(fake_home):
    assert ok(FAKE, "check") == "ok\n"


@pytest.mark.parametrize("breakage, problem", [
    (lambda fs: (os.unlink(f"{FAKE}/live"), fs.create_symlink(f"{FAKE}/live", f"deploy/{V2}")),
     f"live in the home is -> deploy/{V2}, not -> deploy/live"),
    (lambda fs: os.unlink(f"{FAKE}/live"),
     "live in the home is missing, not -> deploy/live"),
    (lambda fs: (os.unlink(f"{FAKE}/deploy/live"),
                 fs.create_symlink(f"{FAKE}/deploy/live", f"{FAKE}/deploy/{V2}")),
     f"deploy/live -> {FAKE}/deploy/{V2}: not a relative link"),
    (lambda fs: (os.unlink(f"{FAKE}/deploy/live"), fs.create_dir(f"{FAKE}/deploy/live")),
     "deploy/live is not a symlink; move it out of deploy/ and run "
     "`plugbox rollback-to VERSION`"),
    (lambda fs: os.unlink(f"{FAKE}/deploy/{V3}/previous"),
     f"deploy/{V2}/next -> {V3}, but {V3}/previous is not {V2}"),
    (lambda fs: fs.create_symlink(f"{FAKE}/deploy/{V1}/previous", f"../{V2}"),
     f"following previous from live cycles at deploy/{V1}/previous"),
    (lambda fs: fs.create_symlink(f"{FAKE}/deploy/.link-7-0", V1),
     "deploy/.link-7-0: a leftover temporary link"),
    (lambda fs: fs.create_dir(f"{FAKE}/deploy/.new-20261123T000000Z"),
     "deploy/.new-20261123T000000Z: a leftover unfinished new version"),
])
def test_fake_check_finds_each_problem(fake_home, breakage, problem):
    breakage(fake_home)
    before = snapshot(FAKE)
    ran = plugbox(FAKE, "check")
    assert ran.exception is None and ran.exit_code == 1
    assert ran.stdout == f"problem: {problem}\n"
    assert ran.stderr == "plugbox: 1 problem in deploy/; run `plugbox check --repair`\n"
    assert snapshot(FAKE) == before


def test_fake_log(fake_home):
    lines = ok(FAKE, "log").splitlines()
    assert [line.split() for line in lines] == [
        ["TIME", "USER", "COMMAND", "FROM", "TO", "OUTCOME"],
        ["2026-11-22T08:00:01Z", "svc", "upgrade-to", V3, V2, V3, "ok"],
        ["2026-11-22T08:05:00Z", "svc", "rollback-to", V3, V2, "ok"],
    ]


def test_fake_home_without_deploy(fs):
    fs.create_dir(FAKE)
    assert ok(FAKE, "status") == "no versions\n"
    assert ok(FAKE, "check") == "ok\n"
    assert os.listdir(FAKE) == []
