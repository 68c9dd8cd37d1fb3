"""`plug` end to end: the installed command, the real ssh and rsync, a real sshd.

Every test runs `plug` as a user would, in a project directory, with
PLUG_SSH_CONFIG naming the test ssh config (host alias `plugbox-test`), and checks
what the user sees: exit status, messages, `plug status`, and the layout on the
host, which is this machine, under a fresh `home` per test.

On `plugbox-test` the sessions' PATH starts with the bin directory of the python
running the tests, where `pip install -e` put `plugbox`: a host where plugbox is
installed. `bare_host` is a host where it is not, for bootstrap.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest

from helpers import (INSTALLED_BIN, PLUG, TIMEOUT, Plug, live, one_line_error, start_or_fail, summary, versions, write_app,
                     write_config)
from sshd import Sshd, free_port, login_user, write_client_config
from terminal import on_terminal

NAME = r"\d{8}T\d{6}Z(\.\d{3})?"


# -- the host's layout, as `ls -l` shows it (live and versions: helpers) ------


def link(path: Path) -> str | None:
    return os.readlink(path) if path.is_symlink() else None


def inode(path: Path) -> int:
    return path.stat().st_ino


def status_json(plug: Plug) -> dict:
    return json.loads(plug.ok("status", "--json").out)


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def plug(project_dir: Path, ssh_config: Path) -> Plug:
    return Plug(project_dir, ssh_config)


@pytest.fixture
def app(project_dir: Path, service_home: Path) -> Path:
    """A project with app/ (three files) uploaded to plugbox-test; returns the project."""
    write_app(project_dir, {"app/a.txt": "a\n", "app/b.txt": "b\n", "app/sub/c.txt": "c\n"})
    write_config(project_dir, service_home)
    return project_dir


# -- deploy ----------------------------------------------------------------------


def test_first_deploy_makes_a_live_version(plug: Plug, app: Path, service_home: Path) -> None:
    run = plug.ok("deploy")

    version = summary(run).split()[1]
    assert re.fullmatch(NAME, version)
    assert summary(run) == f"version {version} is live (first deploy)"
    assert "seconds: " in run.out
    assert versions(service_home) == [version]
    assert live(service_home) == version
    assert link(service_home / "live") == "deploy/live"
    tree = service_home / "live"
    assert (tree / "app" / "a.txt").read_text() == "a\n"
    assert (tree / "app" / "sub" / "c.txt").read_text() == "c\n"
    # The config travels with the version; a first version has no previous.
    assert (tree / "plugbox.toml").read_text() == (app / "plugbox.toml").read_text()
    assert sorted(os.listdir(tree)) == ["app", "plugbox.toml"]


def test_redeploy_hard_links_unchanged_files(plug: Plug, app: Path, service_home: Path) -> None:
    first = plug.deploy()
    (app / "app" / "b.txt").write_text("b, changed\n")
    (app / "app" / "sub" / "c.txt").unlink()

    run = plug.ok("deploy")

    second = summary(run).split()[1]
    assert summary(run) == f"version {second} is live (was {first})"
    # b.txt sent, a.txt hard-linked; plugbox.toml, unchanged, is hard-linked by the host
    assert "1 file sent" in run.out and "1 hard-linked" in run.out
    old, new = service_home / "deploy" / first, service_home / "deploy" / second
    assert versions(service_home) == [first, second]
    assert live(service_home) == second
    assert inode(new / "app" / "a.txt") == inode(old / "app" / "a.txt")
    assert inode(new / "plugbox.toml") == inode(old / "plugbox.toml")
    assert inode(new / "app" / "b.txt") != inode(old / "app" / "b.txt")
    assert (new / "app" / "b.txt").read_text() == "b, changed\n"
    assert (old / "app" / "b.txt").read_text() == "b\n"
    assert not (new / "app" / "sub" / "c.txt").exists()
    assert (old / "app" / "sub" / "c.txt").exists()
    # rsync --delete left plugbox's own links alone.
    assert link(new / "previous") == f"../{first}"
    assert link(old / "next") == f"../{second}"
    assert link(new / "next") is None


def test_version_dir_contents_become_the_version(
    plug: Plug, project_dir: Path, service_home: Path
) -> None:
    write_app(project_dir, {"dist/index.html": "v1\n", "dist/static/x.css": "x\n"})
    write_config(project_dir, service_home, version_dir="dist", exclude=["*.tmp"])
    first = plug.deploy()
    write_app(project_dir, {"dist/index.html": "v2\n", "dist/junk.tmp": "no\n"})

    second = plug.deploy()

    tree = service_home / "deploy" / second
    assert sorted(os.listdir(tree)) == ["index.html", "plugbox.toml", "previous", "static"]
    assert (service_home / "live" / "index.html").read_text() == "v2\n"
    assert inode(tree / "static" / "x.css") == inode(
        service_home / "deploy" / first / "static" / "x.css"
    )


def test_three_deploys_chain_previous_and_next(plug: Plug, app: Path, service_home: Path) -> None:
    made = []
    for text in ("one\n", "two\n", "three\n"):
        (app / "app" / "a.txt").write_text(text)
        made.append(plug.deploy())

    assert versions(service_home) == made
    deploy = service_home / "deploy"
    assert [link(deploy / v / "previous") for v in made] == [
        None, f"../{made[0]}", f"../{made[1]}"
    ]
    assert [link(deploy / v / "next") for v in made] == [f"../{made[1]}", f"../{made[2]}", None]
    oldest = service_home / "live" / "previous" / "previous"
    assert (oldest / "app" / "a.txt").read_text() == "one\n"


# -- rollback, status, log -------------------------------------------------------


def test_rollback_and_roll_forward(plug: Plug, app: Path, service_home: Path) -> None:
    first = plug.deploy()
    (app / "app" / "a.txt").write_text("two\n")
    second = plug.deploy()

    run = plug.ok("rollback")

    assert f"live is now {first}" in run.err
    assert run.out.startswith(f"version {first} is live (was {second})")
    assert live(service_home) == first
    assert (service_home / "live" / "app" / "a.txt").read_text() == "a\n"
    # No link is rewritten: the version rolled back from is still first's next.
    assert link(service_home / "deploy" / first / "next") == f"../{second}"
    assert versions(service_home) == [first, second]

    plug.ok("rollback", second)
    assert live(service_home) == second
    assert (service_home / "live" / "app" / "a.txt").read_text() == "two\n"


def test_rollback_refuses_a_bad_name_before_connecting(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd
) -> None:
    first = plug.deploy()
    before = sshd.logins()

    run = plug("rollback", "../etc")

    assert run.code != 0
    message = one_line_error(run)
    assert "'../etc' is not a version name" in message
    assert sshd.logins() == before
    assert live(service_home) == first


def test_rollback_without_previous_is_refused(plug: Plug, app: Path, service_home: Path) -> None:
    run = plug("rollback")
    assert run.code == 1
    assert "no deploy/ in" in run.err
    assert versions(service_home) == []

    first = plug.deploy()
    run = plug("rollback")

    assert run.code == 1
    # The hint names what the user at this end types: plug, not plugbox.
    assert f"plugbox: the live version {first} has no previous version; see `plug status`" in run.err
    assert live(service_home) == first


def test_status_and_json(plug: Plug, app: Path, service_home: Path) -> None:
    assert plug.ok("status").out == "no versions\n"
    first = plug.deploy()
    (app / "app" / "a.txt").write_text("two\n")
    second = plug.deploy()

    lines = plug.ok("status").out.splitlines()

    state = status_json(plug)
    # name, state, revision (the project is no git checkout), who ran plug and where
    record = state["versions"][0]["record"]
    assert record["user"] and record["machine"] == os.uname().nodename
    who = f"{record['user']}@{record['machine']}"
    assert lines[0].split()[:4] == [second, "live", "-", who]
    assert lines[1].split()[:4] == [first, "previous", "-", who]
    assert [{k: v for k, v in version.items() if k != "record"} for version in state["versions"]] == [
        {"name": second, "state": "live", "previous": first, "next": None},
        {"name": first, "state": "previous", "previous": None, "next": second},
    ]
    assert (state["home"], state["live"]) == (str(service_home), second)
    assert state["versions"][0]["record"]["digest"].startswith("sha256:")
    plug.ok("rollback")
    assert [(v["name"], v["state"]) for v in status_json(plug)["versions"]] == [
        (second, "retired"),
        (first, "live"),
    ]


def test_log_tells_the_history(plug: Plug, app: Path, service_home: Path) -> None:
    # The log names who ran plug here, not the login on the host, which is the same
    # service user for everyone (getpass reads LOGNAME first).
    assert login_user() != "alice"
    plug.env = {"LOGNAME": "alice"}
    assert plug.ok("log").out == "no operations yet\n"
    first = plug.deploy()
    (app / "app" / "a.txt").write_text("two\n")
    second = plug.deploy()
    plug.ok("rollback")

    lines = plug.ok("log").out.splitlines()

    assert lines[0].split() == ["TIME", "USER", "COMMAND", "FROM", "TO", "OUTCOME"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    assert {row[1] for row in rows} == {"alice"}
    assert [row[2:] for row in rows] == [
        [f"deploy {first}", "-", first, "ok"],
        [f"deploy {second}", first, second, "ok"],
        ["rollback-to", second, first, "ok"],
    ]


def test_remove_prune_and_check(plug: Plug, app: Path, service_home: Path) -> None:
    made = []
    for text in ("1\n", "2\n", "3\n", "4\n"):
        (app / "app" / "a.txt").write_text(text)
        made.append(plug.deploy())

    plug.ok("remove", made[1])
    assert versions(service_home) == [made[0], made[2], made[3]]
    assert link(service_home / "deploy" / made[2] / "previous") == f"../{made[0]}"

    plug.ok("prune", "--keep", "2")
    assert versions(service_home) == made[2:]
    assert live(service_home) == made[3]

    plug.ok("check")
    refused = plug("remove", made[3])
    assert refused.code == 1
    assert versions(service_home) == made[2:]


# -- exactly one ssh login per command -------------------------------------------


def test_one_login_per_command(plug: Plug, app: Path, service_home: Path, sshd: Sshd) -> None:
    # All remote steps of one command (next-version, status, rsync, upgrade-to...)
    # share one connection: sshd logs one accepted login per plug command.
    commands = [["deploy"], ["deploy"], ["status"], ["status", "--json"], ["log"],
                ["check"], ["rollback"]]
    for command in commands:
        (app / "app" / "a.txt").write_text(f"{command}\n")
        before = sshd.logins()
        plug.ok(*command)
        assert sshd.logins() == before + 1, command


def test_deploy_through_a_jump_host(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd, jump_sshd: Sshd
) -> None:
    write_config(app, service_home, jump=["plugbox-jump"])
    logins = sshd.logins(), jump_sshd.logins()

    version = plug.deploy()

    assert (sshd.logins(), jump_sshd.logins()) == (logins[0] + 1, logins[1] + 1)
    assert live(service_home) == version
    before = jump_sshd.logins()
    assert plug.ok("status").out.split()[:2] == [version, "live"]
    assert jump_sshd.logins() == before + 1


# -- refused uploads: nothing sent, live untouched --------------------------------


@pytest.mark.parametrize(
    ("name", "kind"), [("previous", "file"), ("next", "directory"), ("previous", "symlink")]
)
def test_version_dir_with_its_own_top_level_link_is_refused(
    plug: Plug, project_dir: Path, service_home: Path, name: str, kind: str
) -> None:
    write_app(project_dir, {"dist/index.html": "v1\n"})
    write_config(project_dir, service_home, version_dir="dist")
    first = plug.deploy()
    (project_dir / "dist" / "index.html").write_text("v2\n")
    reserved = project_dir / "dist" / name
    if kind == "file":
        reserved.write_text("mine\n")
    elif kind == "directory":
        reserved.mkdir()
    else:
        reserved.symlink_to("nowhere")  # dangling: it is there all the same

    run = plug("deploy")

    assert run.code == 1
    message = one_line_error(run)
    assert f"top-level '{name}'" in message and "nothing was sent" in message
    assert versions(service_home) == [first]
    assert live(service_home) == first
    assert (service_home / "live" / "index.html").read_text() == "v1\n"


def test_nested_previous_is_uploaded(plug: Plug, project_dir: Path, service_home: Path) -> None:
    # Only the top level belongs to plugbox; deeper names are the service's own.
    write_app(project_dir, {"dist/docs/previous": "p\n", "dist/docs/next/x": "n\n"})
    write_config(project_dir, service_home, version_dir="dist")

    plug.deploy()

    assert (service_home / "live" / "docs" / "previous").read_text() == "p\n"
    assert (service_home / "live" / "docs" / "next" / "x").read_text() == "n\n"


@pytest.mark.parametrize("path", ["previous", "build/next"])
def test_upload_named_previous_or_next_is_refused(
    plug: Plug, project_dir: Path, service_home: Path, sshd: Sshd, path: str
) -> None:
    write_app(project_dir, {f"{path}/x": "x\n"})
    write_config(project_dir, service_home, upload=[path])
    before = sshd.logins()

    run = plug("deploy")

    assert run.code == 2
    message = one_line_error(run)
    assert "[build] upload" in message and repr(path) in message
    assert sshd.logins() == before
    assert versions(service_home) == []


def test_shared_paths_are_never_uploaded(
    plug: Plug, project_dir: Path, service_home: Path
) -> None:
    write_app(project_dir, {"site/index.html": "hi\n", "site/media/local.jpg": "not sent\n"})
    write_config(project_dir, service_home, version_dir="site", shared=["media"])

    version = plug.deploy()

    media = service_home / "deploy" / version / "media"
    assert media.is_symlink()
    assert media.resolve() == (service_home / "shared" / "media").resolve()
    assert os.listdir(service_home / "shared" / "media") == []


# -- failures before the switch leave live untouched ------------------------------


def test_upload_path_removed_by_prepare_is_refused(
    plug: Plug, app: Path, service_home: Path
) -> None:
    first = plug.deploy()
    write_config(app, service_home, prepare=["rm -r app"], upload=["app"])

    run = plug("deploy")

    assert run.code == 1
    message = one_line_error(run)
    assert "[build] upload" in message and "no such file or directory" in message
    assert "nothing was sent" in message
    assert versions(service_home) == [first]
    assert live(service_home) == first


def test_failing_prepare_stops_the_deploy(plug: Plug, app: Path, service_home: Path) -> None:
    first = plug.deploy()
    write_config(app, service_home, prepare=["echo building", "exit 3"], upload=["app"])

    run = plug("deploy")

    assert run.code == 1
    assert "building" in run.out + run.err
    assert "`exit 3` exited with 3" in one_line_error(run)
    assert versions(service_home) == [first]
    assert live(service_home) == first


@pytest.fixture
def small_disk_host(tmp_path: Path, user_key: Path, sshd: Sshd):
    """Alias `plugbox-small`: a host whose sessions cannot write a file over 1 MiB."""
    server = Sshd(tmp_path / "small-sshd", Path(f"{user_key}.pub"), env=sshd.env,
                  max_file_size=1 << 20)
    server.start()
    config = write_client_config(
        tmp_path / "ssh_config_small", {"plugbox-small": server}, user_key,
        tmp_path / "known_hosts_small",
    )
    yield server, config
    server.stop()


def test_failed_rsync_leaves_live_untouched(
    project_dir: Path, service_home: Path, small_disk_host
) -> None:
    server, config = small_disk_host
    plug = Plug(project_dir, config)
    write_app(project_dir, {"app/a.txt": "a\n"})
    write_config(project_dir, service_home, host="plugbox-small")
    first = plug.deploy()
    (project_dir / "app" / "big.bin").write_bytes(b"x" * (2 << 20))
    (project_dir / "app" / "a.txt").write_text("changed\n")
    before = server.logins()

    run = plug("deploy")

    assert run.code == 1
    assert "File too large" in run.err  # rsync's own words, from the host
    message = one_line_error(run)
    assert "upload of" in message and f"live is still {first}" in message
    assert versions(service_home) == [first]  # the half version was removed
    assert live(service_home) == first
    assert (service_home / "live" / "app" / "a.txt").read_text() == "a\n"
    assert link(service_home / "deploy" / first / "next") is None
    assert plug.ok("check").code == 0
    assert server.logins() == before + 2  # the deploy, and the check


def test_failing_post_upload_keeps_live_and_leaves_nothing(plug: Plug, app: Path, service_home: Path) -> None:
    first = plug.deploy()
    write_config(app, service_home, upload=["app"],
                 hooks={"post_upload": ["echo from the hook >&2; exit 1"]})

    run = plug("deploy")

    assert run.code == 4  # plugbox's "a hook failed", passed through
    assert "from the hook" in run.err  # hook output reaches the user
    assert "nothing changed, the live version is still " + first in run.err
    assert "which never went live" in run.err
    assert versions(service_home) == [first]
    assert live(service_home) == first
    assert plug.ok("check").out == "ok\n"


# -- bad and missing configs -------------------------------------------------------


def test_missing_config(plug: Plug, project_dir: Path, sshd: Sshd) -> None:
    before = sshd.logins()
    for args in (["deploy"], ["status"], ["rollback"]):
        run = plug(*args)
        assert run.code == 2
        assert "no plugbox.toml in" in one_line_error(run)
    run = plug("status", "-c", str(project_dir / "elsewhere.toml"))
    assert run.code == 2
    assert "elsewhere.toml" in one_line_error(run)
    assert sshd.logins() == before


def test_config_is_found_upward(plug: Plug, app: Path, service_home: Path) -> None:
    deeper = app / "app" / "sub"

    run = plug("deploy", cwd=deeper)

    assert run.code == 0, run.err
    assert live(service_home) is not None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[service\nhost = 'x'\n", "not valid TOML"),
        ("[service]\nhots = 'plugbox-test'\n[build]\nupload = ['app']\n", "unknown key"),
        ("[build]\nupload = ['app']\n", "[service] host: missing"),
        ("[service]\nhost = '-oProxyCommand=touch PWNED'\n[build]\nupload = ['app']\n",
         "starts with '-'"),
        ("[service]\nhost = 'plugbox-test'\nhome = 'rel'\n[build]\nupload = ['app']\n", "absolute"),
        ("[service]\nhost = 'plugbox-test'\n[build]\n", "none of upload, version_dir and artifact is set"),
        ("[service]\nhost = 'plugbox-test'\njump = ['-J']\n[build]\nupload = ['app']\n", "jump"),
    ],
)
def test_bad_config_is_refused_before_connecting(
    plug: Plug, project_dir: Path, sshd: Sshd, text: str, named: str
) -> None:
    write_app(project_dir, {"app/a.txt": "a\n"})
    (project_dir / "plugbox.toml").write_text(text)
    before = sshd.logins()

    run = plug("deploy")

    assert run.code == 2
    message = one_line_error(run)
    assert str(project_dir / "plugbox.toml") in message
    assert named in message
    assert sshd.logins() == before
    assert not (project_dir / "PWNED").exists()


def test_unreachable_host(app: Path, service_home: Path, ssh_config: Path, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config_closed"
    config.write_text(
        f"Host plugbox-closed\n    HostName 127.0.0.1\n    Port {free_port()}\n\n"
        + ssh_config.read_text()
    )
    write_config(app, service_home, host="plugbox-closed")

    run = Plug(app, config)("deploy")

    assert run.code != 0
    message = one_line_error(run)
    assert "could not connect to plugbox-closed" in message
    assert "Connection refused" in message
    assert versions(service_home) == []


@pytest.mark.parametrize("hosts", [["plugbox-test"], ["plugbox-test", "plugbox-jump"]])
def test_without_ssh_plug_says_so_in_one_line(plug: Plug, app: Path, service_home: Path, tmp_path: Path,
                                              hosts: list[str]) -> None:
    # The sessions start before the CLI loads, every host's at once: one that cannot
    # start is said by the CLI, once, as for a single host.
    config = write_config(app, service_home)
    config.write_text(config.read_text().replace('host = "plugbox-test"', f"hosts = {json.dumps(hosts)}"))
    plug.env["PATH"] = str(tmp_path / "no-ssh-here")

    run = plug("status")

    assert run.code == 1
    assert one_line_error(run) == "plug: could not run ssh: No such file or directory; install ssh"


# -- bootstrap onto a host without plugbox -----------------------------------------


def test_bootstrap_then_deploy_on_a_bare_host(
    project_dir: Path, service_home: Path, tmp_path: Path, bare_host
) -> None:
    plug = Plug(project_dir, bare_host.ssh_config)
    write_app(project_dir, {"app/a.txt": "a\n"})
    write_config(project_dir, service_home, host="plugbox-bare")

    before = plug("deploy")
    assert before.code == 1
    # One line, plug's own: the host's script says nothing.
    assert before.err == "plug: plugbox is not installed on plugbox-bare; run `plug bootstrap`\n"
    assert versions(service_home) == []
    refused = plug("exec", "--", "true")
    assert (refused.code, refused.err) == (1, before.err)

    run = plug.ok("bootstrap")

    # Once per login: into the login's ~/.local/bin, and it says so.
    installed = bare_host.login_home / ".local" / "bin" / "plugbox"
    assert f"installed on plugbox-bare as {installed}\n" in run.out
    assert "every service of this ssh login" in run.out
    assert os.access(installed, os.X_OK)
    assert sorted(os.listdir(service_home)) == ["config", "deploy", "shared"]
    # Its PATH has neither ~/.local/bin nor any plugbox: deploy finds the bootstrapped one.
    assert ".local" not in bare_host.path
    version = plug.deploy()
    assert live(service_home) == version
    assert plug.ok("status").out.split()[:2] == [version, "live"]
    # A second service of the same login finds it too, without a bootstrap of its own.
    second = tmp_path / "second"
    (second / "home").mkdir(parents=True)
    write_app(second, {"app/b.txt": "b\n"})
    write_config(second, second / "home", host="plugbox-bare")
    other = Plug(second, bare_host.ssh_config).deploy()
    assert live(second / "home") == other
    # Bootstrapping again upgrades in place and keeps the versions.
    inode = installed.stat().st_ino
    plug.ok("bootstrap")
    assert installed.stat().st_ino != inode
    assert live(service_home) == version
    assert not (service_home / ".local").exists()


# -- a host without what plugbox needs ------------------------------------------------


@pytest.fixture
def without_rsync(tmp_path: Path, user_key: Path, bare_python: Path):
    """Two hosts without rsync: `plugbox-norsync-bare` (python3 without packages, no
    plugbox) and `plugbox-norsync` (plugbox on PATH)."""
    bin_dir = tmp_path / "no-rsync-bin"
    bin_dir.mkdir()
    for directory in ("/usr/bin", "/bin"):
        for entry in os.listdir(directory):
            if entry != "rsync" and not os.path.lexists(bin_dir / entry):
                os.symlink(os.path.join(directory, entry), bin_dir / entry)
    servers = {}
    for alias, path in (("plugbox-norsync-bare", f"{bare_python}:{bin_dir}"),
                        ("plugbox-norsync", f"{bin_dir}:{INSTALLED_BIN}")):
        login = tmp_path / f"{alias}-login"
        login.mkdir()
        servers[alias] = start_or_fail(Sshd(tmp_path / f"{alias}-sshd", Path(f"{user_key}.pub"),
                                            env={"HOME": str(login), "PATH": path}))
    try:
        yield write_client_config(tmp_path / "norsync_ssh_config", servers, user_key, tmp_path / "norsync_known")
    finally:
        for server in servers.values():
            server.stop()


def test_a_host_without_rsync_is_refused_in_one_line_saying_what_to_install(
    project_dir: Path, service_home: Path, without_rsync: Path
) -> None:
    plug = Plug(project_dir, without_rsync)
    write_app(project_dir, {"app/a.txt": "a\n"})
    write_config(project_dir, service_home, host="plugbox-norsync-bare")
    refused = plug("bootstrap")
    assert refused.code == 1
    assert refused.err == ("plug: could not install plugbox on plugbox-norsync-bare: rsync is not installed "
                           "on this host; install rsync (apt-get install rsync)\n")

    write_config(project_dir, service_home, host="plugbox-norsync")
    for args in (["deploy"], ["deploy", "--dry-run"]):
        run = plug(*args)
        assert run.code == 1, args
        lines = run.err.splitlines()
        assert len(lines) == 1 and "rsync is not installed on" in lines[0] and \
            "install rsync there (apt-get install rsync)" in lines[0], (args, run.err)
    assert not (service_home / "deploy").exists() or versions(service_home) == []


def test_bootstrap_into_home_serves_that_home_first(
    project_dir: Path, service_home: Path, bare_host
) -> None:
    plug = Plug(project_dir, bare_host.ssh_config)
    write_app(project_dir, {"app/a.txt": "a\n"})
    write_config(project_dir, service_home, host="plugbox-bare")

    run = plug.ok("bootstrap", "--into-home")

    installed = service_home / ".local" / "bin" / "plugbox"
    assert f"installed on plugbox-bare as {installed}\n" in run.out
    assert f"it serves the service in {service_home} alone" in run.out
    assert list(bare_host.login_home.iterdir()) == []
    version = plug.deploy()
    assert live(service_home) == version


# -- plug exec, plug ssh ------------------------------------------------------------


def test_exec_runs_in_the_live_version_over_ssh(plug: Plug, app: Path, service_home: Path, sshd: Sshd) -> None:
    refused = plug("exec", "--", "true")
    assert (refused.code, refused.err) == (
        1, f"plugbox: no live version in {service_home}/deploy; deploy one first: "
           "`plug deploy`\n")
    first = plug.deploy()
    second = plug.deploy()
    logins = sshd.logins()

    script = ('pwd; echo "$PLUGBOX_HOME|$PLUGBOX_VERSION|$PLUGBOX_VERSION_DIR|$PLUGBOX_PREVIOUS"; '
              'echo "to stderr" >&2; exit 3')
    run = plug("exec", "--", "sh", "-c", script)

    directory = service_home / "deploy" / second
    assert (run.code, run.out, run.err) == (3, f"{directory}\n{service_home}|{second}|{directory}|{first}\n",
                                            "to stderr\n")
    assert sshd.logins() == logins + 1
    # The command's own 127 is its own, not a plugbox that is missing.
    run = plug("exec", "--", "sh", "-c", "exit 127")
    assert (run.code, run.err) == (127, "")
    assert plug.ok("exec", "cat", "app/sub/c.txt").out == "c\n"
    # What plug reads reaches the command, none of it lost to plug's own steps.
    piped = subprocess.run([str(PLUG), "exec", "--", "cat"], cwd=app, input="typed in\n", capture_output=True,
                           text=True, timeout=TIMEOUT, env={**os.environ, "PLUG_SSH_CONFIG": str(plug.ssh_config)})
    assert (piped.returncode, piped.stdout) == (0, "typed in\n")


def test_ssh_opens_a_shell_in_live_through_a_jump_host(
    plug: Plug, app: Path, service_home: Path, sshd: Sshd, jump_sshd: Sshd, tmp_path: Path
) -> None:
    write_config(app, service_home, jump=["plugbox-jump"])
    environ = {**os.environ, "PLUG_SSH_CONFIG": str(plug.ssh_config)}
    environ.pop("PLUG_SSH_OPTIONS", None)
    refused = on_terminal([str(PLUG), "ssh"], "", env=environ, cwd=app)
    assert refused.code == 1
    assert refused.shown.strip() == f"plugbox: no live version in {service_home}/deploy; deploy one first: `plug deploy`"
    plug.deploy()
    logins = sshd.logins(), jump_sshd.logins()

    session = on_terminal([str(PLUG), "ssh"], 'echo "[$(pwd)] [$(tty)]"; exit 4\n', env=environ, cwd=app)

    assert session.code == 4, session.shown
    assert f"[{service_home}/live] [" in session.shown
    if os.geteuid() == 0:  # see PermitTTY in tests/sshd.py: only root's sshd gives a terminal
        assert f"[{service_home}/live] [/dev/pts/" in session.shown
    assert (sshd.logins(), jump_sshd.logins()) == (logins[0] + 1, logins[1] + 1)
    # plug exec -t: a command that wants a terminal gets one, and its status comes back.
    session = on_terminal([str(PLUG), "exec", "-t", "--", "sh", "-c", 'echo "[$(tty)]"; exit 6'], "",
                          env=environ, cwd=app)
    assert session.code == 6, session.shown
    if os.geteuid() == 0:
        assert "[/dev/pts/" in session.shown


# -- names that a shell would mangle ----------------------------------------------


def test_home_and_files_with_shell_characters(
    plug: Plug, project_dir: Path, tmp_path: Path, sshd: Sshd
) -> None:
    home = tmp_path / "a home; $(touch PWNED) 'q' *"
    home.mkdir()
    write_app(project_dir, {"app/with space.txt": "s\n", "app/-n": "dash\n", "app/$HOME": "d\n",
                            "-leading/x": "x\n"})
    write_config(project_dir, home, upload=["app", "-leading"])

    first = plug.deploy()
    (project_dir / "app" / "with space.txt").write_text("s2\n")
    second = plug.deploy()

    tree = home / "deploy" / second
    assert sorted(os.listdir(tree / "app")) == ["$HOME", "-n", "with space.txt"]
    assert (tree / "-leading" / "x").read_text() == "x\n"
    assert inode(tree / "app" / "-n") == inode(home / "deploy" / first / "app" / "-n")
    assert live(home) == second
    # Where a command substitution would have run: here, or in a session's directories.
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    for directory in (tmp_path, project_dir, Path(sshd.env["HOME"]), real_home):
        assert not (directory / "PWNED").exists()
    assert not list(tmp_path.rglob("PWNED"))
