"""The Ansible collection (ansible_collections/plugbox/deploy) against several hosts.

The hosts are users of one local sshd (tests/ansible_rig.py), each a fresh account
with python3 and rsync and nothing of plugbox's: the deploy playbook installs it.
Needs root (the rig makes users: as anyone else these tests are skipped, saying so,
except in CI, where they fail) and ansible-core 2.19 (`pip install -e '.[test]'`
brings it; ansible-playbook beside this python, on PATH, or its bin/ in
$PLUGBOX_ANSIBLE_BIN; without it they fail, saying why).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_rig import Rig, RigError, find_ansible
from helpers import toml_of
from plugbox_server import layout
from plugbox_server import protocol as P
from sshd import SshdError

HOSTS = 6
REPOSITORY = Path(__file__).resolve().parent.parent
COLLECTION = REPOSITORY / "ansible_collections" / "plugbox" / "deploy"
# The release step (SPEC section 9) exists once the host side has it.
RELEASE = "release" in layout.HOOKS and hasattr(P, "RELEASE")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        # A developer's run as themselves leaves the fleet out; CI (root) never does.
        if os.environ.get("CI"):
            pytest.fail("the Ansible rig creates users: CI must run the tests as root", pytrace=False)
        pytest.skip("the Ansible rig creates users (pbx-aNN): run the tests as root to include it")
    if find_ansible() is None:
        pytest.fail("ansible-core not found: pip install -e '.[test]', or put ansible-playbook on PATH",
                    pytrace=False)
    try:
        started = Rig(tmp_path_factory.mktemp("rig"), HOSTS).start()
    except (RigError, SshdError) as error:
        pytest.fail(f"ansible rig: {error}", pytrace=False)
    yield started
    started.close()


def in_place(rig: Rig, **extra: str) -> dict[str, str]:
    """The rig's environment, with the collection found where it is in the repository."""
    return rig.env(ANSIBLE_COLLECTIONS_PATH=str(REPOSITORY), **extra)


def playbook(path: Path, plays: list[dict]) -> Path:
    path.write_text(json.dumps(plays, indent=2))   # JSON is YAML
    return path


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return done


def recap(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of ansible-playbook: host -> {ok, changed, failed, ...}."""
    table = {}
    for line in done.stdout.splitlines():
        found = re.match(r"^(pbx-a\d\d)\s+:\s+(.*)$", line)
        if found:
            table[found[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[2])}
    return table


def live_of(rig: Rig, user: str) -> str | None:
    link = rig.home(user) / "deploy" / "live"
    return os.readlink(link) if link.is_symlink() else None


def versions_of(rig: Rig, user: str) -> list[str]:
    deploy = rig.home(user) / "deploy"
    return sorted(p.name for p in deploy.iterdir() if p.name[:1].isdigit()) if deploy.is_dir() else []


def trace(rig: Rig, user: str) -> list[str]:
    path = rig.home(user) / "trace"
    return path.read_text().splitlines() if path.exists() else []


def clear_traces(rig: Rig) -> None:
    for user in rig.users:
        (rig.home(user) / "trace").unlink(missing_ok=True)


def traced(hook: str) -> str:
    return f'echo "{hook} $PLUGBOX_VERSION $(date +%s.%N)" >> "$HOME/trace"'


def write_project(root: Path, files: dict[str, str], hooks: dict[str, list[str]] | None = None) -> Path:
    """A project: app/ and its plugbox.toml (hooks that trace themselves in each host's home)."""
    if root.exists():
        shutil.rmtree(root / "app", ignore_errors=True)
    (root / "app").mkdir(parents=True)
    for path, text in files.items():
        (root / "app" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "app" / path).write_text(text)
    if hooks is None:
        hooks = {key: [traced(key)] for key in ("post_upload", "start", "check")}
        hooks["post_upload"].append("mkdir -p env && echo made > env/by-post-upload")
        if RELEASE:
            hooks["release"] = [traced("release")]
    (root / "plugbox.toml").write_text('[build]\nupload = ["app"]\n' + toml_of(hooks))
    return root


def deploy(rig: Rig, project: Path, *args: str, book: str = "plugbox.deploy.deploy") -> subprocess.CompletedProcess[str]:
    return rig.ansible("ansible-playbook", book, "-e", f"plugbox_project={project}", *args,
                       env=in_place(rig))


@pytest.fixture(scope="module")
def deployed(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The first deploy to hosts that have no plugbox yet: (the project, the version)."""
    project = write_project(tmp_path_factory.mktemp("project"), {"main.py": "print('one')\n"})
    done = ok(deploy(rig, project, "-e", json.dumps({"plugbox_message": "first through ansible"})))
    name = live_of(rig, rig.users[0])
    assert name and f"version {name} is live on {HOSTS} hosts" in done.stdout
    return project, name


def test_ping_reaches_every_host(rig: Rig) -> None:
    done = ok(rig.ansible("ansible", "all", "-m", "ansible.builtin.ping"))
    assert done.stdout.count("SUCCESS") == HOSTS
    assert all(rig.sshd.logins_of(user) >= 1 for user in rig.users)


def test_collection_builds_and_installs_offline(rig: Rig, tmp_path: Path) -> None:
    bin_dir = find_ansible()
    ok(subprocess.run([str(bin_dir / "ansible-galaxy"), "collection", "build", "--output-path",
                       str(tmp_path / "dist")], cwd=COLLECTION, capture_output=True, text=True,
                      env=rig.env(), timeout=120))
    tarball = tmp_path / "dist" / "plugbox-deploy-0.1.0.tar.gz"
    assert tarball.is_file()
    install = [str(bin_dir / "ansible-galaxy"), "collection", "install", str(tarball),
               "-p", str(tmp_path / "collections")]
    if shutil.which("unshare"):
        install = ["unshare", "--net", *install]   # no network at all: nothing but the tarball
    ok(subprocess.run(install, capture_output=True, text=True, env=rig.env(), timeout=120))
    installed = tmp_path / "collections/ansible_collections/plugbox/deploy"
    assert (installed / "playbooks/deploy.yml").is_file()
    assert (installed / "plugins/modules/step.py").is_file()

    env = rig.env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"))
    for name, task in (("deploy", "Switch"), ("rollback", "Roll back")):
        listed = ok(rig.ansible("ansible-playbook", f"plugbox.deploy.{name}", "--list-tasks", env=env))
        assert task in listed.stdout


def test_status_without_plugbox_says_so_in_one_line(rig: Rig, tmp_path: Path) -> None:
    book = playbook(tmp_path / "status.yml", [{
        "hosts": rig.users[-1], "gather_facts": False,
        "tasks": [{"plugbox.deploy.status": {"home": str(tmp_path / "nowhere")}}],
    }])
    done = rig.ansible("ansible-playbook", str(book), env=in_place(rig))
    assert done.returncode != 0
    message = re.search(r'"msg": "([^"]*)"', done.stdout)
    assert message, done.stdout
    assert message[1].startswith("plugbox is not installed on this host: no ")
    assert "plug bootstrap" in message[1]


def test_the_playbook_installs_plugbox_and_deploys_one_version_everywhere(
        rig: Rig, deployed: tuple[Path, str]) -> None:
    project, name = deployed
    for user in rig.users:
        home = rig.home(user)
        assert (home / ".local/bin/plugbox").is_file(), f"{user}: plugbox not installed"
        assert live_of(rig, user) == name and versions_of(rig, user) == [name]
        assert (home / "deploy" / name / "app" / "main.py").read_text() == "print('one')\n"
        hooks = [line.split()[:2] for line in trace(rig, user)]
        assert ["post_upload", name] in hooks and ["check", name] in hooks, user
        record = json.loads((home / "deploy" / ".plugbox" / name / "record.json").read_text())
        assert record["message"] == "first through ansible"
        assert not (home / "deploy" / ".relay" / "socket").exists(), f"{user}: the relay is still there"
    released = [user for user in rig.users if any(l.startswith("release ") for l in trace(rig, user))]
    assert released == ([rig.users[0]] if RELEASE else [])


def test_a_second_run_with_no_change_changes_nothing(rig: Rig, deployed: tuple[Path, str]) -> None:
    project, name = deployed
    done = ok(deploy(rig, project))
    assert {host: row["changed"] for host, row in recap(done).items()} == {u: 0 for u in rig.users}
    assert all(versions_of(rig, user) == [name] for user in rig.users)
    assert f"{HOSTS} had these files live already" in done.stdout


def test_check_and_diff_show_what_would_change_and_change_nothing(
        rig: Rig, deployed: tuple[Path, str]) -> None:
    project, name = deployed
    main = project / "app" / "main.py"
    was = main.stat()
    main.write_text("print('two')\n")
    before = {user: sorted(os.listdir(rig.home(user) / "deploy")) for user in rig.users}
    done = ok(deploy(rig, project, "--check", "--diff"))
    assert all(row["changed"] >= 1 for row in recap(done).values())
    assert done.stdout.count(f"live version {name}, and what a deploy would change:") == HOSTS
    assert re.search(r"^<f\S* app/main\.py$", done.stdout, re.M), done.stdout
    assert {user: sorted(os.listdir(rig.home(user) / "deploy")) for user in rig.users} == before
    main.write_text("print('one')\n")
    os.utime(main, ns=(was.st_atime_ns, was.st_mtime_ns))


def test_a_file_removed_from_the_project_is_a_change(rig: Rig, tmp_path: Path,
                                                     deployed: tuple[Path, str]) -> None:
    """A deletion in a dry run looks like post_upload's own files: the count tells them apart."""
    project, name = deployed
    (project / "app" / "extra.py").write_text("x = 1\n")
    done = ok(deploy(rig, project, "--limit", rig.users[-1]))
    extra = live_of(rig, rig.users[-1])
    assert extra != name
    (project / "app" / "extra.py").unlink()
    done = deploy(rig, project, "--limit", rig.users[-1], "--check", "--diff")
    assert recap(ok(done))[rig.users[-1]]["changed"] >= 1
    assert "2 files here, 3 in live as uploaded" in done.stdout


def test_a_check_failing_on_one_host_stops_the_rollout(rig: Rig, deployed: tuple[Path, str]) -> None:
    """Batches of 2: the first switches; in the second, one host's check fails and it
    switches itself back; the hosts of later batches are called off (never switched,
    no new version kept); Ansible fails."""
    project, _ = deployed
    lives = {user: live_of(rig, user) for user in rig.users}
    sick = rig.users[2]
    (rig.home(sick) / "sick").write_text("")
    project = write_project(project, {"main.py": "print('three')\n"},
                            hooks={"check": ['test ! -e "$HOME/sick"']})
    try:
        done = deploy(rig, project, "-e", "plugbox_serial=2")
    finally:
        (rig.home(sick) / "sick").unlink()
    assert done.returncode != 0
    new = live_of(rig, rig.users[0])
    assert new != lives[rig.users[0]]
    assert live_of(rig, rig.users[1]) == new
    assert live_of(rig, sick) == lives[sick]                 # switched back by itself
    assert new in versions_of(rig, sick)                     # kept, as a failed version
    assert recap(done)[sick]["failed"] == 1
    for later in rig.users[4:]:
        assert live_of(rig, later) == lives[later]
        assert new not in versions_of(rig, later), f"{later} kept {new}"
        assert "aborted" in (rig.home(later) / "deploy" / ".log").read_text().splitlines()[-1]
    assert "switched back to" in done.stdout


def test_serial_batches_do_not_overlap(rig: Rig, deployed: tuple[Path, str]) -> None:
    project, _ = deployed
    clear_traces(rig)
    hooks = {"start": [traced("start"), "sleep 0.5"], "check": [traced("check")]}
    write_project(project, {"main.py": "print('four')\n"}, hooks=hooks)
    ok(deploy(rig, project, "-e", "plugbox_serial=2", "-e", "plugbox_max_fail_percentage=0"))
    windows = []
    for user in rig.users:
        times = {line.split()[0]: float(line.split()[2]) for line in trace(rig, user)}
        windows.append((times["start"], times["check"]))
    batches = [windows[i:i + 2] for i in range(0, HOSTS, 2)]
    for earlier, later in zip(batches, batches[1:]):
        assert max(end for _, end in earlier) < min(start for start, _ in later), batches


def test_a_host_failing_to_prepare_calls_the_deploy_off_everywhere(
        rig: Rig, deployed: tuple[Path, str]) -> None:
    project, _ = deployed
    lives = {user: live_of(rig, user) for user in rig.users}
    counts = {user: len(versions_of(rig, user)) for user in rig.users}
    broken = rig.users[1]
    hooks = {"post_upload": [f'test "$(whoami)" != {broken}']}
    write_project(project, {"main.py": "print('five')\n"}, hooks=hooks)
    done = deploy(rig, project)
    assert done.returncode != 0
    assert f"could not prepare it; no host switched" in done.stdout
    assert {user: live_of(rig, user) for user in rig.users} == lives
    assert {user: len(versions_of(rig, user)) for user in rig.users} == counts


def test_a_failing_release_step_calls_the_deploy_off_everywhere(
        rig: Rig, deployed: tuple[Path, str]) -> None:
    project, _ = deployed
    lives = {user: live_of(rig, user) for user in rig.users}
    counts = {user: len(versions_of(rig, user)) for user in rig.users}
    clear_traces(rig)
    write_project(project, {"main.py": "print('no release')\n"},
                  hooks={"post_upload": [traced("post_upload")], "release": [traced("release"), "exit 3"]})
    done = deploy(rig, project)
    assert done.returncode != 0
    assert "the release step failed on " in done.stdout and "no host switched" in done.stdout
    assert {user: live_of(rig, user) for user in rig.users} == lives
    assert {user: len(versions_of(rig, user)) for user in rig.users} == counts
    assert sum(1 for user in rig.users for line in trace(rig, user) if line.startswith("release ")) == 1


def test_the_rollback_playbook_brings_every_host_to_one_version(
        rig: Rig, deployed: tuple[Path, str]) -> None:
    project, _ = deployed
    write_project(project, {"main.py": "print('six')\n"}, hooks={})
    ok(deploy(rig, project))
    newest = live_of(rig, rig.users[0])
    assert all(live_of(rig, user) == newest for user in rig.users)
    previous = os.readlink(rig.home(rig.users[0]) / "deploy" / newest / "previous")[3:]
    done = ok(deploy(rig, project, "--diff", book="plugbox.deploy.rollback"))
    assert all(live_of(rig, user) == previous for user in rig.users)
    assert done.stdout.count(f"+live: {previous}") == HOSTS
    again = ok(deploy(rig, project, "-e", f"plugbox_version={newest}", book="plugbox.deploy.rollback"))
    assert all(live_of(rig, user) == newest for user in rig.users)
    assert all(row["changed"] == 1 for row in recap(again).values())


def test_the_env_playbook_changes_the_environment_everywhere_and_never_shows_a_value(
        rig: Rig, deployed: tuple[Path, str]) -> None:
    project, _ = deployed
    before = {user: live_of(rig, user) for user in rig.users}
    secret = "s3cret-" + os.urandom(6).hex()
    done = ok(rig.ansible("ansible-playbook", "plugbox.deploy.env", "-vvv", "-e", f"plugbox_project={project}",
                          "-e", json.dumps({"plugbox_env_set": {"API_KEY": secret}}), env=in_place(rig)))
    new = live_of(rig, rig.users[0])
    assert f"version {new} is live on {HOSTS} hosts" in done.stdout
    assert secret not in done.stdout + done.stderr
    for user in rig.users:
        home = rig.home(user)
        assert live_of(rig, user) == new != before[user]
        env = home / "deploy" / ".plugbox" / new / "env"
        assert f"API_KEY={secret}" in env.read_text().splitlines()
        assert oct(env.stat().st_mode & 0o777) == "0o600"
        old, made = (home / "deploy" / v / "app" / "main.py" for v in (before[user], new))
        assert old.stat().st_ino == made.stat().st_ino, f"{user}: not hard-linked from live"
        for leftover in (home / ".ansible" / "tmp").glob("**/*"):
            assert not leftover.is_file() or secret not in leftover.read_text(errors="replace")


def test_an_artifact_is_deployed_once_and_a_second_run_changes_nothing(
        rig: Rig, tmp_path: Path, deployed: tuple[Path, str]) -> None:
    import tarfile

    project, _ = deployed
    build = tmp_path / "build"
    (build / "app").mkdir(parents=True)
    (build / "app" / "main.py").write_text("print('from an artifact')\n")
    artifact = tmp_path / "app.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        tar.add(build / "app", arcname="app")
    first = ok(deploy(rig, project, "-e", f"plugbox_artifact={artifact}"))
    new = live_of(rig, rig.users[0])
    assert f"version {new} is live on {HOSTS} hosts" in first.stdout
    for user in rig.users:
        assert live_of(rig, user) == new
        assert (rig.home(user) / "deploy" / new / "app" / "main.py").read_text() == "print('from an artifact')\n"
        record = json.loads((rig.home(user) / "deploy" / ".plugbox" / new / "record.json").read_text())
        assert record["artifact"] == "app.tar.gz"
    again = ok(deploy(rig, project, "-e", f"plugbox_artifact={artifact}"))
    assert {host: row["changed"] for host, row in recap(again).items()} == {u: 0 for u in rig.users}
    assert all(live_of(rig, user) == new for user in rig.users)


def test_without_plugbox_in_ansibles_python_the_deploy_says_so_in_one_line(
        rig: Rig, tmp_path: Path, deployed: tuple[Path, str]) -> None:
    hidden = tmp_path / "hidden"
    (hidden / "plugbox_client").mkdir(parents=True)
    (hidden / "plugbox_client" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    done = rig.ansible("ansible-playbook", "plugbox.deploy.deploy", "-e", f"plugbox_project={deployed[0]}",
                       env=in_place(rig, PYTHONPATH=str(hidden)))
    assert done.returncode != 0
    assert "plugbox is not installed in the Python that runs Ansible" in done.stdout
    assert all(row.get("changed", 0) == 0 for row in recap(done).values())


def tree_project(root: Path) -> Path:
    tree = root / "tree"
    (tree / "app" / "static").mkdir(parents=True)
    (tree / "app" / "main.py").write_text("print('hello')\n")
    (tree / "app" / "static" / "style.css").write_text("body { color: black }\n")
    (tree / "with space.txt").write_text("spaces are fine\n")
    (tree / "big.bin").write_bytes(os.urandom(200_000))
    (tree / "link").symlink_to("app/main.py")
    (root / "plugbox.toml").write_text('[build]\nversion_dir = "tree"\n')
    return root


def files_of(root: Path) -> dict[str, int]:
    """Relative path -> inode of every regular file under ROOT."""
    return {str(p.relative_to(root)): p.lstat().st_ino
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def upload_book(path: Path, project: Path, dest: str, link_dest: str | None = None,
                hosts: str = "all") -> Path:
    task = {"plugbox.deploy.upload": {"project": str(project), "dest": dest}, "register": "sent"}
    if link_dest:
        task["plugbox.deploy.upload"]["link_dest"] = link_dest
    return playbook(path, [{
        "hosts": hosts, "gather_facts": False,
        "tasks": [
            {"ansible.builtin.file": {"path": "~/up", "state": "directory"}},
            task,
            {"ansible.builtin.debug": {"msg": "SENT {{ sent.sent }} LINKED {{ sent.linked }}"}},
        ],
    }])


def test_an_unchanged_upload_hard_links_every_file_over_ansibles_connection(
        rig: Rig, tmp_path: Path) -> None:
    project = tree_project(tmp_path / "project")
    tree = project / "tree"
    logins_before = {user: rig.sshd.logins_of(user) for user in rig.users}
    first = ok(rig.ansible("ansible-playbook", str(upload_book(tmp_path / "v1.yml", project, "up/v1")),
                           env=in_place(rig)))
    assert first.stdout.count("SENT 4 LINKED 0") == HOSTS, first.stdout
    second = ok(rig.ansible("ansible-playbook", str(upload_book(tmp_path / "v2.yml", project, "up/v2",
                                                                "../v1")), env=in_place(rig)))
    assert second.stdout.count("SENT 0 LINKED 4") == HOSTS, second.stdout
    for user in rig.users:
        v1, v2 = rig.home(user) / "up" / "v1", rig.home(user) / "up" / "v2"
        assert files_of(v1).keys() == files_of(tree).keys()
        assert files_of(v2) == files_of(v1), f"{user}: not hard-linked"
        assert (v2 / "link").readlink() == Path("app/main.py")
    # rsync rode the control master Ansible had open: at most one login per host each run.
    assert all(rig.sshd.logins_of(u) - logins_before[u] <= 2 for u in rig.users)


def test_upload_takes_ssh_args_with_spaces_and_quotes(rig: Rig, tmp_path: Path) -> None:
    """A ProxyCommand through the first host for the second: the ssh args reach rsync's ssh intact."""
    project = tree_project(tmp_path / "project")
    via, to = rig.users[0], rig.users[1]
    proxy = shlex.join([
        "ssh", "-i", str(rig.key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={rig.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-p", str(rig.sshd.port), "-W", "%h:%p", f"{via}@127.0.0.1",
    ])
    extra = {
        "ansible_ssh_extra_args": f"-o ProxyCommand={shlex.quote(proxy)}",
        "ansible_control_path_dir": str(tmp_path / "cp"),   # no master of an earlier test to ride
    }
    before = rig.sshd.logins_of(via)
    book = upload_book(tmp_path / "proxy.yml", project, "up/proxied", hosts=to)
    try:
        done = ok(rig.ansible("ansible-playbook", str(book), "-e", json.dumps(extra), env=in_place(rig)))
    finally:
        for socket in (tmp_path / "cp").glob("*"):
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "x"],
                           capture_output=True, timeout=30)
    assert "SENT 4 LINKED 0" in done.stdout
    assert rig.sshd.logins_of(via) > before
    assert files_of(rig.home(to) / "up" / "proxied").keys() == files_of(project / "tree").keys()


def test_upload_refuses_become(rig: Rig, tmp_path: Path) -> None:
    project = tree_project(tmp_path / "project")
    book = playbook(tmp_path / "become.yml", [{
        "hosts": rig.users[0], "gather_facts": False,
        "tasks": [{"plugbox.deploy.upload": {"project": str(project), "dest": "up/x"},
                   "become": True, "become_user": rig.users[1]}],
    }])
    done = rig.ansible("ansible-playbook", str(book), env=in_place(rig))
    assert done.returncode != 0
    assert "uploads as the login user" in done.stdout
    assert not (rig.home(rig.users[0]) / "up" / "x").exists()


def test_upload_over_the_local_connection(tmp_path: Path) -> None:
    """ansible_connection=local: rsync between two paths of this machine, no ssh."""
    if find_ansible() is None:
        pytest.fail("ansible-core not found: pip install -e '.[test]'", pytrace=False)
    project = tree_project(tmp_path / "project")
    target = tmp_path / "target"
    target.mkdir()
    book = playbook(tmp_path / "local.yml", [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "tasks": [
            {"plugbox.deploy.upload": {"project": str(project), "dest": str(target / "v1")}},
            {"plugbox.deploy.upload": {"project": str(project), "dest": str(target / "v2"),
                                       "link_dest": "../v1"}, "register": "sent"},
            {"ansible.builtin.assert": {"that": ["sent.linked == 4", "sent.sent == 0"]}},
        ],
    }])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
           "PATH": f"{find_ansible()}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_COLLECTIONS_PATH": str(REPOSITORY), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    done = subprocess.run(["ansible-playbook", str(book)], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)
    ok(done)
    assert files_of(target / "v2") == files_of(target / "v1")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
