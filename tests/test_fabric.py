"""The Fabric door (plugbox_client.fabric): `fab deploy`, `fab rollback`, `fab status`
from a fabfile of three lines, against the real sshd, beside plug doing the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIMEOUT, Plug, Run, live, versions, write_app, write_config

FAB = Path(sys.executable).parent / "fab"

FABFILE = """\
from plugbox_client.fabric import Service
service = Service()                     # reads plugbox.toml, as plug does
deploy, rollback, status = service.tasks


@service.prepare
def stamp(c):
    c.run("echo built-by-fab > app/stamp.txt")
    c.run("echo prepare-function >> order.txt")
"""


@pytest.fixture
def fab(project_dir: Path, ssh_config: Path):
    if not FAB.exists():
        pytest.fail(f"{FAB}: not found; pip install -e '.[test]' brings Fabric", pytrace=False)

    def run(*args: str) -> Run:
        env = {**os.environ, "PLUG_SSH_CONFIG": str(ssh_config)}
        env.pop("PLUG_SSH_OPTIONS", None)
        done = subprocess.run([str(FAB), *args], cwd=project_dir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert "Traceback" not in done.stderr, done.stderr
        return Run(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def project(project_dir: Path, service_home: Path) -> Path:
    write_app(project_dir, {"app/main.py": "print('hello')\n"})
    write_config(project_dir, service_home, prepare=["echo prepare-line >> order.txt"], upload=["app"],
                 hooks={"check": ["test ! -e $PLUGBOX_HOME/sick"]})
    (project_dir / "fabfile.py").write_text(FABFILE)
    return project_dir


def test_fab_deploy_runs_the_python_prepare_first_and_deploys_as_plug_does(
        fab, project: Path, service_home: Path) -> None:
    done = fab("deploy", "--message", "from a fabfile")
    assert done.code == 0, done.err
    name = live(service_home)
    assert done.out.splitlines()[0] == f"version {name} is live (first deploy)"
    assert done.out.splitlines()[2].startswith("seconds: prepare ")
    assert "==> prepare: stamp()" in done.err
    assert (project / "order.txt").read_text() == "prepare-function\nprepare-line\n"
    assert (service_home / "deploy" / name / "app" / "stamp.txt").read_text() == "built-by-fab\n"
    record = (service_home / "deploy" / ".plugbox" / name / "record.json").read_text()
    assert '"message": "from a fabfile"' in record


def test_fab_status_and_rollback_print_what_plug_prints(
        fab, project: Path, service_home: Path, ssh_config: Path) -> None:
    assert fab("deploy").code == 0
    (project / "app" / "main.py").write_text("print('two')\n")
    assert fab("deploy").code == 0
    first, second = versions(service_home)
    plug = Plug(project, ssh_config)
    assert fab("status").out == plug.ok("status").out
    assert fab("status", "--json").out.startswith("{")

    back = fab("rollback")
    assert back.code == 0, back.err
    assert back.out.splitlines()[0] == f"version {first} is live (was {second})"
    forward = fab("rollback", "--version", second)
    assert forward.code == 0 and live(service_home) == second


def test_fab_fails_with_plugs_line_and_exit_status(fab, project: Path, service_home: Path,
                                                   ssh_config: Path) -> None:
    assert fab("deploy").code == 0
    (service_home / "sick").write_text("")
    (project / "app" / "main.py").write_text("print('sick')\n")
    failed = fab("deploy")
    plugged = Plug(project, ssh_config)("deploy")
    assert failed.code == plugged.code == 4
    # The host said why, and plug adds nothing: the same last line from both.
    last = failed.err.splitlines()[-1]
    assert last.startswith("plugbox: check of ") and "switched back to" in last
    unnamed = re.compile(r"\d{8}T\d{6}Z(\.\d{3})?")
    assert unnamed.sub("V", plugged.err.splitlines()[-1]) == unnamed.sub("V", last)

    bad = fab("rollback", "--version", "nonsense")
    plugged = Plug(project, ssh_config)("rollback", "nonsense")
    assert bad.code == plugged.code == 2
    assert bad.err.splitlines() == plugged.err.splitlines()
    assert bad.err.startswith("plug: 'nonsense' is not a version name")


def test_a_failing_python_prepare_step_stops_the_deploy_in_one_line(
        fab, project: Path, service_home: Path) -> None:
    (project / "fabfile.py").write_text(FABFILE.replace('"echo built-by-fab > app/stamp.txt"', '"exit 3"'))
    done = fab("deploy")
    assert done.code == 1
    assert done.err.splitlines()[-1] == (
        "plug: prepare: stamp() failed: `exit 3` exited with 3; nothing changed on "
        "plugbox-test; fix the build and deploy again")
    assert versions(service_home) == []
    assert not (project / "order.txt").exists()


def test_fab_with_a_fabric_host_refuses(fab, project: Path, service_home: Path) -> None:
    done = fab("-H", "somewhere", "status")
    assert done.code == 2
    assert done.err.splitlines() == [
        "plug: the plugbox tasks take their hosts from plugbox.toml, not from Fabric (somewhere); "
        "run them without -H"]
