"""What `plug bootstrap` installs is compiled on the host, once, so no run compiles it.

The zipapp is how plugbox travels; the host's python3 unpacks it into a directory
and compiles it there (argv.INSTALL_PLUGBOX): a zipapp run as it is would pay for
zipimport and runpy at every run, and could cache no bytecode of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import TIMEOUT
from plugbox_client import argv as A
from plugbox_client import bootstrap
from plugbox_server import __version__

LOADED_FROM = (
    "import sys; sys.path.insert(0, sys.argv[1]); sys.dont_write_bytecode = True; "
    "import plugbox_server.cli, typer; "
    "print(plugbox_server.cli.__cached__); print(typer.__cached__)"
)


def install(archive: Path, login: Path, home: Path, into: str = "login") -> subprocess.CompletedProcess:
    with open(archive, "rb") as stdin:
        return subprocess.run(["sh", "-c", A.INSTALL_PLUGBOX, "plug-bootstrap", str(home), into], stdin=stdin,
                              capture_output=True, text=True, timeout=TIMEOUT,
                              env={"HOME": str(login), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})


def snapshot(directory: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in directory.rglob("*")}


def test_the_host_runs_plugbox_from_bytecode_compiled_at_install(tmp_path: Path) -> None:
    archive = bootstrap.build(tmp_path / "plugbox.pyz")
    login, home = tmp_path / "login", tmp_path / "home"
    login.mkdir()

    done = install(archive, login, home)

    script = login / ".local" / "bin" / "plugbox"
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{script}\n", "")
    [installed] = (login / ".local" / "lib" / "plugbox").iterdir()
    # The script runs this python3 without site, on the directory installed.
    lines = script.read_text().splitlines()
    assert lines[0] == f"#!{Path(sys.executable).parent / 'python3'} -IS"  # the python3 of its PATH
    assert f"sys.path.insert(0, {str(installed)!r})" in lines
    loaded = subprocess.run([sys.executable, "-I", "-S", "-c", LOADED_FROM, str(installed)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert loaded.stdout.splitlines() == [
        f"{installed}/plugbox_server/__pycache__/cli.{sys.implementation.cache_tag}.pyc",
        f"{installed}/typer/__pycache__/__init__.{sys.implementation.cache_tag}.pyc"]
    assert all(Path(line).is_file() for line in loaded.stdout.splitlines())
    # Runs write nothing there: everything they import was compiled at install.
    before = snapshot(installed)
    ran = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    assert ran.stdout == f"plugbox {__version__}\n"
    subprocess.run([str(script), "--home", str(home), "status"], check=True, capture_output=True, timeout=TIMEOUT)
    assert snapshot(installed) == before


def test_a_second_install_keeps_the_directory_a_running_plugbox_may_still_import_from(tmp_path: Path) -> None:
    login, home = tmp_path / "login", tmp_path / "home"
    login.mkdir()
    libs = login / ".local" / "lib" / "plugbox"
    built = bootstrap.build(tmp_path / "plugbox.pyz")
    made = []
    for n in range(3):
        archive = tmp_path / f"plugbox-{n}.pyz"  # three archives (plugbox of three builds)
        shutil.copy(built, archive)
        with zipfile.ZipFile(archive, "a") as z:
            z.writestr(f"build-{n}.txt", "")
        assert install(archive, login, home).returncode == 0
        made.append({entry.name for entry in libs.iterdir()})
    # The new directory and the one before it stay; older ones go.
    assert [len(names) for names in made] == [1, 2, 2]
    assert made[0] < made[1] and not made[0] & made[2]
    # A zipapp an older plug installed is replaced the same way.
    script = login / ".local" / "bin" / "plugbox"
    os.replace(tmp_path / "plugbox-0.pyz", script)
    assert install(tmp_path / "plugbox-1.pyz", login, home).returncode == 0
    assert script.read_bytes().startswith(b"#!") and b"sys.path.insert" in script.read_bytes()
