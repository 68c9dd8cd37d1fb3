"""The Ansible collection (ansible_collections/plugbox/deploy) against 20 hosts.

The hosts are users of one local sshd (tests/ansible_rig.py). Needs root (the rig
makes users) and ansible-core 2.19 (ansible-playbook on PATH, or its bin/ in
$PLUGBOX_ANSIBLE_BIN); without either, these tests are skipped, saying why.
"""

from __future__ import annotations

import base64
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
from sshd import SshdError

HOSTS = 20
REPOSITORY = Path(__file__).resolve().parent.parent
COLLECTION = REPOSITORY / "ansible_collections" / "plugbox" / "deploy"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the Ansible rig creates users: needs root"),
    pytest.mark.skipif(find_ansible() is None, reason="ansible-core not found: put ansible-playbook "
                       "on PATH or its bin/ directory in PLUGBOX_ANSIBLE_BIN"),
]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
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
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def recap(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of ansible-playbook: host -> {ok, changed, failed, ...}."""
    table = {}
    for line in done.stdout.splitlines():
        found = re.match(r"^(pbx-a\d\d)\s+:\s+(.*)$", line)
        if found:
            table[found[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[2])}
    return table


def test_ping_reaches_every_host(rig: Rig) -> None:
    began = time.monotonic()
    done = ok(rig.ansible("ansible", "all", "-m", "ansible.builtin.ping"))
    took = time.monotonic() - began
    assert done.stdout.count("SUCCESS") == HOSTS
    assert all(rig.sshd.logins_of(user) >= 1 for user in rig.users)
    print(f"ping of {HOSTS} hosts: {took:.1f}s")


def test_collection_builds_and_installs_offline(rig: Rig, tmp_path: Path) -> None:
    bin_dir = find_ansible()
    built = subprocess.run([str(bin_dir / "ansible-galaxy"), "collection", "build", "--output-path",
                            str(tmp_path / "dist")], cwd=COLLECTION, capture_output=True, text=True,
                           env=rig.env(), timeout=120)
    ok(built)
    tarball = tmp_path / "dist" / "plugbox-deploy-0.1.0.tar.gz"
    assert tarball.is_file()
    install = [str(bin_dir / "ansible-galaxy"), "collection", "install", str(tarball),
               "-p", str(tmp_path / "collections")]
    if shutil.which("unshare"):
        install = ["unshare", "--net", *install]   # no network at all: nothing but the tarball
    ok(subprocess.run(install, capture_output=True, text=True, env=rig.env(), timeout=120))
    assert (tmp_path / "collections/ansible_collections/plugbox/deploy/playbooks/deploy.yml").is_file()

    env = rig.env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"))
    for name in ("deploy", "rollback"):
        listed = ok(rig.ansible("ansible-playbook", f"plugbox.deploy.{name}", "--list-tasks", env=env))
        assert "plugbox.deploy.status" in listed.stdout or "What is live now" in listed.stdout


def test_status_without_plugbox_says_so_in_one_line(rig: Rig, tmp_path: Path) -> None:
    book = playbook(tmp_path / "status.yml", [{
        "hosts": "pbx-a01", "gather_facts": False,
        "tasks": [{"plugbox.deploy.status": {}}],
    }])
    done = rig.ansible("ansible-playbook", str(book), env=in_place(rig))
    assert done.returncode != 0
    assert recap(done)["pbx-a01"]["failed"] == 1
    message = re.search(r'"msg": "([^"]*)"', done.stdout)
    assert message, done.stdout
    assert message[1].startswith("plugbox is not installed on this host: no /home/pbx-a01/.local/bin/plugbox")
    assert "plug bootstrap" in message[1]


def test_status_imports_plugbox_from_its_zipapp(rig: Rig, tmp_path: Path) -> None:
    from plugbox_client.bootstrap import build

    zipapp = build(tmp_path / "plugbox")
    hosts = "pbx-a01:pbx-a02:pbx-a03"
    book = playbook(tmp_path / "status.yml", [{
        "hosts": hosts, "gather_facts": False,
        "tasks": [
            {"ansible.builtin.file": {"path": "~/.local/bin", "state": "directory"}},
            {"ansible.builtin.copy": {"src": str(zipapp), "dest": "~/.local/bin/plugbox", "mode": "0755"}},
            # A version made by the installed plugbox itself, for status to see.
            {"ansible.builtin.command": {"argv": ["~/.local/bin/plugbox", "next-version"]},
             "register": "made"},
            {"plugbox.deploy.status": {}, "register": "state"},
            {"ansible.builtin.debug": {"msg": "STATE {{ state | to_json | b64encode }} MADE {{ made.stdout }}"}},
        ],
    }])
    done = ok(rig.ansible("ansible-playbook", str(book), env=in_place(rig)))
    states = re.findall(r'"msg": "STATE ([A-Za-z0-9+/=]+) MADE (\w+)"', done.stdout)
    assert len(states) == 3, done.stdout
    for encoded, made in states:
        state = json.loads(base64.b64decode(encoded))
        assert state["changed"] is False
        assert state["live"] is None
        assert state["home"].startswith("/home/pbx-a0")
        assert state["plugbox_path"] == state["home"] + "/.local/bin/plugbox"
        assert state["plugbox_version"] == "0.1.0"
        assert [(v["name"], v["state"]) for v in state["versions"]] == [(made, "pending")]


def upload_book(path: Path, src: Path, dest: str, link_dest: list[str], check: bool = False,
                hosts: str = "all") -> Path:
    task = {"plugbox.deploy.upload": {"src": str(src), "dest": dest, "link_dest": link_dest},
            "register": "sent"}
    if check:
        task["check_mode"] = True
    return playbook(path, [{
        "hosts": hosts, "gather_facts": False,
        "tasks": [
            {"ansible.builtin.file": {"path": "~/up", "state": "directory"}},
            task,
            {"ansible.builtin.debug": {"msg": "SENT {{ sent.sent }} LINKED {{ sent.linked }} "
                                              "CHANGED {{ sent.changed }}"}},
        ],
    }])


def make_tree(root: Path) -> Path:
    (root / "app" / "static").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hello')\n")
    (root / "app" / "static" / "style.css").write_text("body { color: black }\n")
    (root / "with space.txt").write_text("spaces are fine\n")
    (root / "big.bin").write_bytes(os.urandom(200_000))
    (root / "link").symlink_to("app/main.py")
    return root


def files_of(root: Path) -> dict[str, int]:
    """Relative path -> inode of every regular file under ROOT."""
    return {str(p.relative_to(root)): p.lstat().st_ino
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_second_upload_of_an_unchanged_tree_hard_links_every_file(rig: Rig, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    logins_before = {user: rig.sshd.logins_of(user) for user in rig.users}

    first = ok(rig.ansible("ansible-playbook", str(upload_book(tmp_path / "v1.yml", tree, "up/v1", [])),
                           env=in_place(rig)))
    assert first.stdout.count("SENT 4 LINKED 0 CHANGED True") == HOSTS, first.stdout

    dry = ok(rig.ansible("ansible-playbook", str(upload_book(tmp_path / "dry.yml", tree, "up/v2",
                                                             ["../v1"], check=True)), env=in_place(rig)))
    assert dry.stdout.count("CHANGED True") == HOSTS
    assert not any((rig.home(user) / "up" / "v2").exists() for user in rig.users)

    began = time.monotonic()
    second = ok(rig.ansible("ansible-playbook", str(upload_book(tmp_path / "v2.yml", tree, "up/v2",
                                                                ["../v1"])), env=in_place(rig)))
    took = time.monotonic() - began
    assert second.stdout.count("SENT 0 LINKED 4 CHANGED True") == HOSTS, second.stdout

    expected = files_of(tree).keys()
    for user in rig.users:
        v1, v2 = rig.home(user) / "up" / "v1", rig.home(user) / "up" / "v2"
        assert files_of(v1).keys() == expected
        assert files_of(v2) == files_of(v1), f"{user}: not hard-linked"
        assert (v2 / "link").readlink() == Path("app/main.py")
        assert (v2 / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    # rsync rode the control master Ansible had open: at most one login per host in all.
    assert all(rig.sshd.logins_of(u) - logins_before[u] <= 1 for u in rig.users)

    again = ok(rig.ansible("ansible-playbook", str(upload_book(tmp_path / "v2.yml", tree, "up/v2",
                                                               ["../v1"])), env=in_place(rig)))
    assert again.stdout.count("SENT 0 LINKED 0 CHANGED False") == HOSTS
    print(f"second upload to {HOSTS} hosts: {took:.1f}s")


def test_upload_takes_ssh_args_with_spaces_and_quotes(rig: Rig, tmp_path: Path) -> None:
    """A ProxyCommand through pbx-a01 for pbx-a02: the ssh args reach rsync's ssh intact."""
    tree = make_tree(tmp_path / "tree")
    proxy = shlex.join([
        "ssh", "-i", str(rig.key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={rig.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-p", str(rig.sshd.port), "-W", "%h:%p", "pbx-a01@127.0.0.1",
    ])
    extra = {
        "ansible_ssh_extra_args": f"-o ProxyCommand={shlex.quote(proxy)}",
        # A control directory of its own: no master of an earlier test to ride.
        "ansible_control_path_dir": str(tmp_path / "cp"),
    }
    before = rig.sshd.logins_of("pbx-a01")
    book = upload_book(tmp_path / "proxy.yml", tree, "up/proxied", [], hosts="pbx-a02")
    try:
        done = ok(rig.ansible("ansible-playbook", str(book), "-e", json.dumps(extra), env=in_place(rig)))
    finally:
        for socket in (tmp_path / "cp").glob("*"):
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "x"],
                           capture_output=True, timeout=30)
    assert "SENT 4 LINKED 0 CHANGED True" in done.stdout
    assert rig.sshd.logins_of("pbx-a01") > before
    assert files_of(rig.home("pbx-a02") / "up" / "proxied").keys() == files_of(tree).keys()


def test_upload_refuses_become(rig: Rig, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    book = playbook(tmp_path / "become.yml", [{
        "hosts": "pbx-a01", "gather_facts": False,
        "tasks": [{"plugbox.deploy.upload": {"src": str(tree), "dest": "up/x"},
                   "become": True, "become_user": "pbx-a02"}],
    }])
    done = rig.ansible("ansible-playbook", str(book), env=in_place(rig))
    assert done.returncode != 0
    assert "uploads as the login user" in done.stdout
    assert not (rig.home("pbx-a01") / "up" / "x").exists()


def test_upload_over_the_local_connection(tmp_path: Path) -> None:
    """ansible_connection=local: rsync between two paths of this machine, no ssh."""
    tree = make_tree(tmp_path / "tree")
    target = tmp_path / "target"
    target.mkdir()
    book = playbook(tmp_path / "local.yml", [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "tasks": [
            {"plugbox.deploy.upload": {"src": str(tree), "dest": str(target / "v1")}},
            {"plugbox.deploy.upload": {"src": str(tree), "dest": str(target / "v2"), "link_dest": ["../v1"]},
             "register": "sent"},
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
