"""`plug` end to end with host = "local": the real plug, rsync and plugbox, real files.

Each test runs plug as a user would, in a project directory, against a fresh home in
tmp_path, and checks what the user would see: the output, the exit status, and the
versions and links left on disk.
"""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import TIMEOUT
from plugbox_client import argv as A
from plugbox_server import __version__
from plugbox_server.errors import COMMAND_NOT_FOUND
from plugbox_server.names import is_version_name
from terminal import on_terminal


def plug(project: Path, *args: str, env: dict | None = None, limit_file_size: int | None = None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    environ.update(env or {})

    def limits():
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "plugbox_client", *args], cwd=project, env=environ,
        capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limits,
    )


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def write_config(project: Path, home: Path, build: str = 'upload = ["app", "requirements.txt"]', extra: str = "",
                 service: str = "") -> None:
    (project / "plugbox.toml").write_text(
        f'[service]\nhost = "local"\nhome = "{home}"\n{service}\n[build]\n{build}\nexclude = ["*.pyc"]\n{extra}'
    )


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def project(tmp_path, home) -> Path:
    project = tmp_path / "project"
    (project / "app" / "pkg").mkdir(parents=True)
    (project / "app" / "main.py").write_text("print('hello')\n")
    (project / "app" / "pkg" / "data.txt").write_text("data\n")
    (project / "app" / "pkg" / "skip.pyc").write_bytes(b"\0")
    (project / "requirements.txt").write_text("typer\n")
    (project / "notes.txt").write_text("not uploaded\n")
    write_config(project, home)
    return project


def versions(home: Path) -> list[str]:
    deploy = home / "deploy"
    return sorted(p.name for p in deploy.iterdir() if is_version_name(p.name)) if deploy.exists() else []


def live(home: Path) -> str | None:
    link = home / "deploy" / "live"
    return os.readlink(link) if link.is_symlink() else None


def snapshot(root: Path) -> dict:
    """Every path under root with what identifies its content: nothing may differ after a no-op."""
    seen = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        seen[str(path.relative_to(root))] = os.readlink(path) if path.is_symlink() else (st.st_ino, st.st_size, st.st_mtime_ns)
    return seen


def bump(path: Path, text: str) -> None:
    """Change a file so that rsync's quick check (size and mtime) sees it changed."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def deployed(project: Path, home: Path) -> str:
    result = ok(plug(project, "deploy"))
    version = live(home)
    assert f"version {version} is live" in result.stdout
    return version


# ---------------------------------------------------------------- deploy

def test_first_deploy_uploads_each_path_under_its_name_with_the_config(project, home):
    result = ok(plug(project, "deploy"))
    [version] = versions(home)
    assert live(home) == version
    assert os.readlink(home / "live") == "deploy/live"
    tree = home / "live"
    assert sorted(p.name for p in tree.iterdir()) == ["app", "plugbox.toml", "requirements.txt"]
    assert (tree / "app" / "main.py").read_text() == "print('hello')\n"
    assert not (tree / "app" / "pkg" / "skip.pyc").exists()  # excluded
    assert (tree / "plugbox.toml").read_text() == (project / "plugbox.toml").read_text()
    assert not (tree / "previous").exists()
    assert f"version {version} is live (first deploy)" in result.stdout
    assert "files: 3 files sent" in result.stdout and "0 hard-linked" in result.stdout
    for step in ("prepare", "connect", "upload", "switch", "total"):
        assert f"{step} " in result.stdout.splitlines()[-1]


def test_redeploy_sends_the_changed_file_and_hard_links_the_rest(project, home):
    first = deployed(project, home)
    bump(project / "app" / "main.py", "print('hello again')\n")
    (project / "requirements.txt").unlink()
    write_config(project, home, build='upload = ["app"]')  # the config changes too
    result = ok(plug(project, "deploy"))
    second = live(home)
    assert versions(home) == [first, second]
    old, new = home / "deploy" / first, home / "deploy" / second
    assert (new / "app" / "main.py").read_text() == "print('hello again')\n"
    assert (old / "app" / "main.py").read_text() == "print('hello')\n"
    assert (new / "app" / "main.py").stat().st_ino != (old / "app" / "main.py").stat().st_ino
    assert (new / "app" / "pkg" / "data.txt").stat().st_ino == (old / "app" / "pkg" / "data.txt").stat().st_ino
    assert not (new / "requirements.txt").exists()
    # the links next-version and upgrade-to wrote survive rsync --delete
    assert os.readlink(new / "previous") == f"../{first}"
    assert os.readlink(old / "next") == f"../{second}"
    assert f"version {second} is live (was {first})" in result.stdout
    assert "files: 1 file sent" in result.stdout  # main.py (plugbox.toml is written by the host)
    assert "1 hard-linked" in result.stdout  # data.txt


def test_a_same_size_edit_in_the_same_second_goes_live(project, home):
    # rsync's quick check at whole seconds would take this edit for unchanged.
    main = project / "app" / "main.py"
    deployed(project, home)
    second = main.stat().st_mtime_ns // 1_000_000_000
    main.write_text("print('HELLO')\n")  # the same size as before
    os.utime(main, ns=(second * 1_000_000_000 + 999_999_999,) * 2)
    deployed(project, home)
    assert (home / "live" / "app" / "main.py").read_text() == "print('HELLO')\n"


def test_unchanged_tree_costs_no_transfer(project, home):
    first = deployed(project, home)
    result = ok(plug(project, "deploy"))
    assert "files: 0 files sent (0 bytes), 3 hard-linked" in result.stdout
    second = live(home)
    for name in ("plugbox.toml", "requirements.txt", "app/main.py"):
        assert (home / "deploy" / first / name).stat().st_ino == (home / "deploy" / second / name).stat().st_ino


def test_version_dir_contents_become_the_version_and_the_project_config_wins(project, home):
    dist = project / "dist"
    write_config(project, home, build='version_dir = "dist"\nprepare = ["mkdir -p dist/bin", "echo v1 > dist/bin/run", '
                                      '"echo stale > dist/plugbox.toml"]')
    result = ok(plug(project, "deploy"))
    tree = home / "live"
    assert sorted(p.name for p in tree.iterdir()) == ["bin", "plugbox.toml"]
    assert (tree / "bin" / "run").read_text() == "v1\n"
    assert (tree / "plugbox.toml").read_text() == (project / "plugbox.toml").read_text()
    assert (dist / "plugbox.toml").read_text() == "stale\n"
    assert "==> prepare: mkdir -p dist/bin" in result.stderr


@pytest.mark.parametrize("build, tree", [
    ('version_dir = "."', ["app", "notes.txt", "plugbox.toml", "previous", "requirements.txt"]),
    ('upload = ["app"]', ["app", "plugbox.toml", "previous"]),
])
def test_a_local_home_inside_the_upload_is_left_out_of_it(project, build, tree):
    # plug init --host local --home demo writes version_dir = "." and a home in the project.
    (project / "app" / "demo").mkdir()
    home = "demo" if build.startswith("version_dir") else "app/demo"
    (project / "plugbox.toml").write_text(
        f'[service]\nhost = "local"\nhome = "{home}"\n[build]\n{build}\nexclude = ["*.pyc"]\n')
    ok(plug(project, "deploy"))
    ok(plug(project, "deploy"))
    live = project / home / "live"
    assert sorted(p.name for p in live.iterdir()) == tree
    if "upload" in build:
        assert sorted(p.name for p in (live / "app").iterdir()) == ["main.py", "pkg"]


def test_a_local_home_that_is_the_upload_itself_is_refused(project):
    (project / "plugbox.toml").write_text(
        '[service]\nhost = "local"\nhome = "app"\n[build]\nupload = ["app"]\n')
    result = plug(project, "deploy")
    assert result.returncode != 0
    assert "home" in result.stderr and "is itself uploaded by [build]" in result.stderr
    assert not (project / "app" / "deploy").exists()


def test_named_config_lands_as_plugbox_toml(project, home):
    (project / "plugbox.toml").rename(project / "prod.toml")
    ok(plug(project, "deploy", "-c", "prod.toml"))
    assert (home / "live" / "plugbox.toml").read_text() == (project / "prod.toml").read_text()
    assert not (home / "live" / "prod.toml").exists()


def test_shared_paths_are_never_uploaded(project, home):
    (project / "app" / "media").mkdir()
    (project / "app" / "media" / "upload.jpg").write_text("local copy")
    write_config(project, home, build='version_dir = "app"', service='shared = ["media"]')
    ok(plug(project, "deploy"))
    media = home / "live" / "media"
    assert media.is_symlink() and media.resolve() == (home / "shared" / "media").resolve()
    assert list((home / "shared" / "media").iterdir()) == []
    (home / "shared" / "media" / "kept.jpg").write_text("written by the service")
    ok(plug(project, "deploy"))
    assert (home / "live" / "media" / "kept.jpg").read_text() == "written by the service"


def test_hook_output_reaches_the_terminal(project, home):
    write_config(project, home, extra='[hooks]\npost_upload = ["echo built in $PWD"]\n'
                                      'start = ["echo started $PLUGBOX_VERSION"]\n')
    result = ok(plug(project, "deploy"))
    version = live(home)
    # The host's messages and hook output come on stderr; stdout is plug's summary.
    assert f"started {version}" in result.stderr
    assert f"built in {(home / 'deploy' / version).resolve()}" in result.stderr


def test_failed_post_upload_passes_plugbox_exit_status_through_and_leaves_nothing(project, home):
    first = deployed(project, home)
    before = snapshot(home)
    write_config(project, home, extra='[hooks]\npost_upload = ["echo cannot build >&2; exit 3"]\n')
    result = plug(project, "deploy")
    assert result.returncode == 4
    assert versions(home) == [first] and live(home) == first
    assert "cannot build" in result.stderr
    assert "post_upload of " in result.stderr and "which never went live" in result.stderr
    # the log says how it ended; deploy/ and deploy/.plugbox/ had an entry made and removed
    bookkeeping = ("deploy/.lock", "deploy/.log", "deploy/.output", "deploy", "deploy/.plugbox")
    assert {k: v for k, v in snapshot(home).items() if k not in bookkeeping} == \
        {k: v for k, v in before.items() if k not in bookkeeping}
    assert "failed: post_upload of" in (home / "deploy" / ".log").read_text().splitlines()[-1]


def test_a_virtualenv_in_the_version_works_as_written(project, home):
    # The simple form of the docs: the version's name has no colon, so venv accepts
    # its path and the env's bin/ can go on PATH.
    write_config(project, home, extra=(
        '[hooks]\npost_upload = ["python3 -m venv env"]\n'
        'check = [\'PATH="$PLUGBOX_VERSION_DIR/env/bin:$PATH" python -c '
        '"import sys; print(\\"python in\\", sys.prefix)"\']\n'))
    result = ok(plug(project, "deploy"))
    version = live(home)
    env = home / "deploy" / version / "env"
    assert (env / "bin" / "python").exists() and (env / "pyvenv.cfg").is_file()
    assert f"python in {env.resolve()}" in result.stderr  # the host's messages and hooks' output
    assert ":" not in version


# ---------------------------------------------------------------- failures before the switch

def test_prepare_failure_changes_nothing(project, home):
    first = deployed(project, home)
    before = snapshot(home)
    write_config(project, home, build='upload = ["app"]\nprepare = ["echo building", "exit 3", "echo never"]')
    result = plug(project, "deploy")
    assert result.returncode == 1
    assert "building" in result.stdout and "never" not in result.stdout
    assert "plug: prepare: `exit 3` exited with 3; nothing changed on this machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(home) == before and live(home) == first


def test_missing_upload_path_changes_nothing(project, home):
    deployed(project, home)
    before = snapshot(home)
    shutil.rmtree(project / "app")
    result = plug(project, "deploy")
    assert result.returncode == 1
    assert f"plug: [build] upload: {project / 'app'}: no such file or directory" in result.stderr
    assert snapshot(home) == before


@pytest.mark.parametrize("name", ["previous", "next", ".plugbox"])
def test_upload_with_its_own_top_level_link_name_is_refused_before_anything_is_sent(project, home, name):
    first = deployed(project, home)
    before = snapshot(home)
    (project / "app" / name).mkdir()
    write_config(project, home, build='version_dir = "app"')
    result = plug(project, "deploy")
    assert result.returncode == 1
    assert f"{project / 'app' / name}: the version would have its own top-level {name!r}" in result.stderr
    assert "nothing was sent" in result.stderr
    assert snapshot(home) == before and live(home) == first


def test_upload_list_naming_a_link_is_a_config_error(project, home):
    (project / "build").mkdir()
    (project / "build" / "next").write_text("x")
    write_config(project, home, build='upload = ["build/next"]')
    result = plug(project, "deploy")
    assert result.returncode == 2
    assert "[build] upload: 'build/next' would land as the version's own 'next', which plugbox owns" in result.stderr
    assert not home.exists()


def test_failed_upload_removes_the_half_version_and_leaves_live(project, home):
    first = deployed(project, home)
    # A file bigger than the file-size limit makes the real rsync fail half-way,
    # after the new version exists and some files are in it.
    (project / "app" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    result = plug(project, "deploy", limit_file_size=1024 * 1024)
    assert result.returncode == 1, result.stderr
    assert "plug: upload of " in result.stderr and "failed: rsync exited with" in result.stderr
    assert f"nothing changed on this machine: live is still {first}" in result.stderr
    assert versions(home) == [first] and live(home) == first
    assert [e for e in os.listdir(home / "deploy") if e.startswith(".new-")] == []
    assert not (home / "deploy" / first / "next").exists()


# ---------------------------------------------------------------- configuration problems

def test_no_config_anywhere(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = plug(empty, "deploy")
    assert result.returncode == 2
    assert result.stderr == (f"plug: no plugbox.toml in {empty} or any directory above it; "
                             "write one with `plug init`, or name one with -c FILE\n")


def test_config_found_from_a_subdirectory(project, home):
    ok(plug(project / "app" / "pkg", "deploy"))
    assert (home / "live" / "app" / "main.py").exists()


def test_bad_config_names_file_and_key_and_touches_nothing(project, home):
    (project / "plugbox.toml").write_text(
        (project / "plugbox.toml").read_text().replace("[build]", "[build]\nprepare = ['touch prepared']\nupload_dir = 'x'"))
    result = plug(project, "deploy")
    assert result.returncode == 2
    assert result.stderr.startswith(f"plug: {project / 'plugbox.toml'}: [build] upload_dir: unknown key; ")
    assert result.stderr.count("\n") == 1
    assert not home.exists() and not (project / "prepared").exists()


# ---------------------------------------------------------------- dry run

def test_dry_run_on_a_first_deploy(project, home):
    result = ok(plug(project, "deploy", "--dry-run"))
    assert "no live version: it would be the first deploy" in result.stdout
    assert "files: would send 3" in result.stdout and "hard-link 0" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert versions(home) == []


def test_dry_run_reads_the_host_and_changes_nothing(project, home):
    first = deployed(project, home)
    bump(project / "app" / "main.py", "print('changed')\n")
    (project / "app" / "new.txt").write_text("new\n")
    write_config(project, home, extra='[hooks]\nstart = ["touch $PLUGBOX_HOME/started"]\n',
                 build='upload = ["app", "requirements.txt"]\nprepare = ["touch prepared"]')
    before = snapshot(home)
    result = ok(plug(project, "deploy", "-n"))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("would make version ")
    made = lines[0].split()[3]
    assert is_version_name(made) and made > first
    assert f"it would replace live version {first}" in result.stdout
    # main.py and new.txt differ from live; data.txt and requirements.txt do not
    # (plugbox.toml is not uploaded: the host writes it)
    assert "files: would send 2" in result.stdout and "hard-link 2" in result.stdout
    assert "dry run: nothing changed, prepare not run" in result.stdout
    assert snapshot(home) == before
    assert not (project / "prepared").exists()
    # and the counts are what the deploy then does
    real = ok(plug(project, "deploy"))
    assert "files: 2 files sent" in real.stdout and "2 hard-linked" in real.stdout


# ---------------------------------------------------------------- server commands

def test_verify_names_what_changed_on_the_host_since_the_upload(project, home):
    first = deployed(project, home)
    assert ok(plug(project, "verify")).stdout.startswith(f"{first}: as uploaded (sha256:")
    second = deployed(project, home)
    with open(home / "live" / "app" / "pkg" / "data.txt", "r+") as f:
        f.write("DATA")  # in place: a hard link shared with the first version
    for args in ([], [first]):
        result = plug(project, "verify", *args)
        assert result.returncode == 1
        assert result.stdout == "changed: app/pkg/data.txt\n"
        assert result.stderr.startswith(f"plugbox: {args[0] if args else second} differs from its upload")
    result = plug(project, "verify", "../x")
    assert result.returncode == 2 and "'../x' is not a version name" in result.stderr  # bad usage


def test_status_log_check_pass_plugbox_output_through(project, home):
    first = deployed(project, home)
    second = deployed(project, home)
    state = json.loads(ok(plug(project, "status", "--json")).stdout)
    assert state["live"] == second and state["home"] == str(home)
    assert [(v["name"], v["state"]) for v in state["versions"]] == [(second, "live"), (first, "previous")]
    text = ok(plug(project, "status")).stdout
    assert second in text and first in text
    assert f"deploy {second}" in ok(plug(project, "log")).stdout
    assert ok(plug(project, "check")).stdout.strip() == "ok"
    assert ok(plug(project, "check", "--repair")).returncode == 0


def test_status_shows_the_newest_20_and_all_shows_every_version(project, home):
    from plugbox_server import operations

    names = [deployed(project, home)]
    for _ in range(21):  # made on the host, quicker than 21 uploads
        name, _ = operations.next_version(home)
        operations.upgrade_to(home, name)
        names.append(name)
    lines = ok(plug(project, "status")).stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == names[::-1][:20]
    assert lines[-1] == "... and 2 older versions: `plug status --all` shows every version"
    every = ok(plug(project, "status", "--all")).stdout.splitlines()
    assert [line.split()[0] for line in every] == names[::-1]


def test_rollback_and_roll_forward(project, home):
    first = deployed(project, home)
    second = deployed(project, home)
    ok(plug(project, "rollback"))
    assert live(home) == first
    assert os.readlink(home / "deploy" / first / "next") == f"../{second}"
    ok(plug(project, "rollback", second))
    assert live(home) == second


def test_rollback_with_refresh_runs_the_refresh_hook(project, home):
    write_config(project, home, extra='[hooks]\nrefresh = ["echo refreshed $PLUGBOX_VERSION"]\n')
    first = deployed(project, home)
    deployed(project, home)
    result = ok(plug(project, "rollback", "--refresh"))
    assert f"refreshed {first}" in result.stderr
    assert result.stdout.startswith(f"version {first} is live (was ")


@pytest.mark.parametrize("name", ["../etc", "live~", "20261121T090000Z/..", "-v"])
def test_version_arguments_are_validated_before_connecting(project, home, name):
    result = plug(project, "rollback", "--", name)
    assert result.returncode == 2  # bad usage
    assert "is not a version name" in result.stderr and "see `plug status`" in result.stderr
    assert not home.exists()


def test_refusals_of_plugbox_keep_its_message_and_exit_status(project, home):
    version = deployed(project, home)
    result = plug(project, "remove", version)
    assert result.returncode == 1
    assert result.stderr.startswith("plugbox: ")
    assert live(home) == version


def test_remove_and_prune(project, home):
    made = [deployed(project, home) for _ in range(4)]
    ok(plug(project, "remove", made[0], made[1]))
    assert versions(home) == made[2:]
    ok(plug(project, "prune", "--keep", "1"))
    assert live(home) == made[3] and made[3] in versions(home)
    assert plug(project, "prune", "--keep", "0").returncode == 2


# ---------------------------------------------------------------- init

def test_init_writes_a_config_that_deploys(tmp_path, home):
    project = tmp_path / "fresh"
    (project / "site").mkdir(parents=True)
    (project / "site" / "index.html").write_text("<p>hi</p>")
    result = ok(plug(project, "init", "--host", "local", "--home", str(home), "--version-dir", "site",
                     "--shared", "uploads", "--prepare", "true"))
    assert result.stdout == f"wrote {project / 'plugbox.toml'}\n"
    text = (project / "plugbox.toml").read_text()
    assert 'version_dir = "site"' in text and "# stop = " in text
    ok(plug(project, "deploy"))
    assert (home / "live" / "index.html").read_text() == "<p>hi</p>"


def test_init_refuses_to_overwrite_unless_forced(project):
    before = (project / "plugbox.toml").read_text()
    result = plug(project, "init", "--host", "hello@example.org")
    assert result.returncode == 1
    assert "plugbox.toml exists already; pass --force to replace it" in result.stderr
    assert (project / "plugbox.toml").read_text() == before
    ok(plug(project, "init", "--host", "hello@example.org", "--force"))
    assert 'host = "hello@example.org"' in (project / "plugbox.toml").read_text()


def test_init_into_a_path_under_a_file_names_the_file_it_could_not_write(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = plug(tmp_path, "init", "--host", "local", "--home", str(tmp_path / "h"),
                  "-c", str(tmp_path / "a-file" / "plugbox.toml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"plug: could not write {tmp_path / 'a-file' / 'plugbox.toml'}: Not a directory; check the directory"]


def test_init_refuses_bad_values(tmp_path):
    assert plug(tmp_path, "init", "--host", "-oProxyCommand=x").returncode == 2
    result = plug(tmp_path, "init", "--host", "h", "--upload", "a", "--version-dir", "b")
    assert result.returncode == 2 and "exclude each other" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bootstrap

@pytest.fixture
def login(tmp_path) -> Path:
    """The login's home, $HOME of plug here: bootstrap installs into its .local/bin."""
    login = tmp_path / "login"
    login.mkdir()
    return login


def test_bootstrap_installs_a_zipapp_that_runs_without_site_packages(project, home, login):
    result = ok(plug(project, "bootstrap", "--into-home", env={"HOME": str(login)}))
    installed = home / ".local" / "bin" / "plugbox"
    assert f"installed on this machine as {home}/.local/bin/plugbox" in result.stdout
    assert f"it serves the service in {home} alone" in result.stdout
    assert list(login.iterdir()) == []
    assert os.access(installed, os.X_OK)
    assert all((home / d).is_dir() for d in ("deploy", "shared", "config"))
    assert not home.joinpath("live").exists()
    # a python that sees no site-packages at all runs it, commands included
    bare = subprocess.run([sys.executable, "-I", "-S", str(installed), "--version"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert bare.returncode == 0 and bare.stdout.startswith("plugbox ")
    state = subprocess.run([sys.executable, "-I", "-S", str(installed), "--home", str(home), "status", "--json"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert json.loads(state.stdout)["live"] is None
    # plug now runs the installed plugbox, and deploys with it
    version = deployed(project, home)
    assert f"deploy {version}" in ok(plug(project, "log")).stdout
    # bootstrap again replaces it in place; without --into-home, the login gets a
    # copy and this home's own, which plug runs first, is upgraded too
    inode = installed.stat().st_ino
    again = ok(plug(project, "bootstrap", env={"HOME": str(login)}))
    assert installed.stat().st_ino != inode
    assert f"as {installed}\n" in again.stdout and f"as {login}/.local/bin/plugbox\n" in again.stdout
    assert live(home) == version
    ok(plug(project, "status"))


def test_bootstrap_installs_once_per_login(tmp_path, project, home, login):
    result = ok(plug(project, "bootstrap", env={"HOME": str(login)}))
    installed = login / ".local" / "bin" / "plugbox"
    assert result.stdout.splitlines()[:2] == [
        f"plugbox {__version__} installed on this machine as {installed}",
        "it serves every service of this ssh login whose home has no plugbox of its own",
    ]
    assert os.access(installed, os.X_OK)
    assert sorted(os.listdir(home)) == ["config", "deploy", "shared"]
    # plug runs the login's copy, for this home and for another service's of the same
    # login: seen through a wrapper that says so and runs the real one
    installed.rename(installed.with_name("plugbox.real"))
    installed.write_text(f'#!/bin/sh\necho "login\'s plugbox" >&2\nexec "$0.real" "$@"\n')
    installed.chmod(0o755)
    other = tmp_path / "other"
    shutil.copytree(project, other)
    write_config(other, tmp_path / "other-home")
    for each, its_home in ((project, home), (other, tmp_path / "other-home")):
        result = ok(plug(each, "deploy", env={"HOME": str(login)}))
        assert "login's plugbox" in result.stderr
        assert live(its_home) is not None


def test_bootstrap_zipapp_runs_in_a_venv_without_packages(tmp_path, project, home):
    ok(plug(project, "bootstrap", "--into-home"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT)
    result = subprocess.run([str(venv / "bin" / "python"), str(home / ".local" / "bin" / "plugbox"), "--help"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and "upgrade-to" in result.stdout


# ---------------------------------------------------------------- finding plugbox on a host

def test_find_plugbox_prefers_the_installed_copy_then_path(tmp_path):
    fake = tmp_path / "h" / ".local" / "bin" / "plugbox"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nprintf "%s|" "$PLUGBOX_CLIENT" "$PLUGBOX_USER" "$@"\n')
    fake.chmod(0o755)
    user = "eve $(touch pwned)"
    run = subprocess.run(["/bin/sh", *A.remote_plugbox(str(tmp_path / "h"), ["rollback-to", "a b"], user)[1:]],
                         capture_output=True, text=True, env={"PATH": "/nonexistent"}, timeout=TIMEOUT,
                         cwd=tmp_path)
    assert run.stdout == f"plug|{user}|--home|{tmp_path / 'h'}|rollback-to|a b|"
    assert not (tmp_path / "pwned").exists()
    # Not found: the status says so, and plug, not the host, tells the user.
    missing = subprocess.run(["/bin/sh", *A.remote_plugbox(str(tmp_path / "none"), ["log"], "alice")[1:]],
                             capture_output=True, text=True, env={"PATH": "/nonexistent", "HOME": str(tmp_path)},
                             timeout=TIMEOUT)
    assert (missing.returncode, missing.stdout, missing.stderr) == (COMMAND_NOT_FOUND, "", "")


def test_find_plugbox_then_looks_in_the_logins_local_bin(tmp_path):
    login = tmp_path / "login"
    fake = login / ".local" / "bin" / "plugbox"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "login copy: $*"\n')
    fake.chmod(0o755)
    environ = {"PATH": "/nonexistent", "HOME": str(login)}
    for home in (str(tmp_path / "svc2"), ""):  # another service's home; the login's own
        run = subprocess.run(["/bin/sh", *A.remote_plugbox(home or None, ["log"], "alice")[1:]],
                             capture_output=True, text=True, env=environ, timeout=TIMEOUT)
        assert run.stdout == f"login copy: {'--home ' + home + ' ' if home else ''}log\n"


def test_find_plugbox_takes_the_home_as_plugbox_does(tmp_path):
    # No home given: PLUGBOX_HOME, else HOME (layout.home_from); the copy in that home's .local/bin wins.
    service = tmp_path / "svc"
    fake = service / ".local" / "bin" / "plugbox"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "service copy"\n')
    fake.chmod(0o755)
    environ = {"PATH": "/nonexistent", "HOME": str(tmp_path / "login"), "PLUGBOX_HOME": str(service)}
    run = subprocess.run(["/bin/sh", *A.remote_plugbox(None, ["log"], "alice")[1:]],
                         capture_output=True, text=True, env=environ, timeout=TIMEOUT)
    assert (run.returncode, run.stdout) == (0, "service copy\n")


def test_unreachable_host_is_a_connection_failure(tmp_path):
    (tmp_path / "plugbox.toml").write_text('[service]\nhost = "127.0.0.1"\n[build]\nversion_dir = "."\n')
    # plug's private directory goes in TMPDIR; a short one, as a socket path must be short.
    temporary = Path(tempfile.mkdtemp(prefix="plug-test-", dir="/tmp"))
    try:
        # Port 1 on the loopback refuses at once.
        result = plug(tmp_path, "status", env={"PLUG_SSH_OPTIONS": "-p 1 -o ConnectTimeout=10 -o BatchMode=yes",
                                              "TMPDIR": str(temporary)})
        assert result.returncode == 255
        assert result.stderr.startswith("plug: could not connect to 127.0.0.1: ")
        assert "Connection refused" in result.stderr
        assert list(temporary.iterdir()) == []  # the private directory is gone
    finally:
        shutil.rmtree(temporary)


# What a terminal is told besides text: escape sequences (colour, cursor) and a bare \r.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r(?!\n)")


def test_deploy_on_a_terminal_shows_a_progress_bar_and_passes_output_through(project, home):
    """On a terminal, plug's children write to it directly, and the upload shows a
    progress bar, which ends at 100% with every entry in place."""
    write_config(project, home, extra='[hooks]\nstart = ["echo started"]\n')
    (project / "app" / "big.bin").write_bytes(os.urandom(3_000_000))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    seen = on_terminal([sys.executable, "-m", "plugbox_client", "deploy"], "", env=environ, cwd=project)
    assert seen.code == 0, seen.shown
    text = seen.shown
    assert "━" in text  # the bar
    frames = re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text))
    bars = [frame for frame in frames if frame.startswith("local ") and "━" in frame]
    assert bars, text
    # The last frame: every entry rsync considered (app/, 4 files, requirements.txt) is in place.
    assert re.fullmatch(r"local\s+━+\s+100%\s+6/6 entries\s+3\.\d MB sent at \S+/s\s+\d:\d\d:\d\d", bars[-1].strip()), bars[-1]
    assert f"version {live(home)} is live" in text
    assert "started\r\n" in text
    assert "Traceback" not in text


def test_deploy_without_a_terminal_or_with_quiet_prints_plain_lines(project, home):
    """In CI (no terminal), and with --quiet on one, plain lines: no bar, no control character."""
    run = ok(plug(project, "deploy"))
    assert CONTROL.search(run.stderr) is None and "━" not in run.stderr, repr(run.stderr)
    assert run.stderr.startswith("==> new version ")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    seen = on_terminal([sys.executable, "-m", "plugbox_client", "deploy", "-q"], "", env=environ, cwd=project)
    assert seen.code == 0, seen.shown
    assert CONTROL.search(seen.shown) is None and "━" not in seen.shown, repr(seen.shown)
    assert f"version {live(home)} is live" in seen.shown


# ---------------------------------------------------------------- plug exec, plug ssh

def test_exec_runs_in_the_live_version_with_the_hooks_environment(project, home):
    refused = plug(project, "exec", "--", "true")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"plugbox: no live version in {home}/deploy; deploy one first: `plug deploy`"]
    assert not (home / "deploy").exists() or versions(home) == []
    first = deployed(project, home)
    second = deployed(project, home)
    script = ('pwd; echo "$PLUGBOX_HOME|$PLUGBOX_VERSION|$PLUGBOX_VERSION_DIR|$PLUGBOX_PREVIOUS"; '
              'echo "to stderr" >&2; cat; exit 3')
    run = subprocess.run([sys.executable, "-m", "plugbox_client", "exec", "--", "sh", "-c", script],
                         cwd=project, input="typed in\n", capture_output=True, text=True, timeout=TIMEOUT,
                         env={k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))})
    directory = home / "deploy" / second
    assert run.returncode == 3
    assert run.stdout == f"{directory}\n{home}|{second}|{directory}|{first}\ntyped in\n"
    assert run.stderr == "to stderr\n"
    # Options after the command are the command's; a missing one is the host's one line.
    assert ok(plug(project, "exec", "ls", "-a", "app")).stdout.split() == [".", "..", "main.py", "pkg"]
    missing = plug(project, "exec", "--", "no-such-command")
    assert (missing.returncode, missing.stderr) == (
        127, "plugbox: 'no-such-command': command not found on this host\n")


def test_ssh_opens_a_login_shell_in_live(project, home, tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_"))}
    environ.update(SHELL="/bin/sh", HOME=str(tmp_path))
    argv = [sys.executable, "-m", "plugbox_client", "ssh"]
    before = on_terminal(argv, "", env=environ, cwd=project)
    assert before.code == 1
    assert before.shown.strip() == f"plugbox: no live version in {home}/deploy; deploy one first: `plug deploy`"
    deployed(project, home)
    session = on_terminal(argv, "echo \"[$(pwd)]\"; exit 4\n", env=environ, cwd=project)
    assert session.code == 4
    assert f"[{home}/live]\r\n" in session.shown
