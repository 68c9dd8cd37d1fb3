"""The zipapp `plug bootstrap` installs carries bytecode, so the host never compiles it.

zipimport cannot write a cache into the archive: without .pyc files in it every
run of plugbox on the host would compile typer and plugbox afresh (about 100 ms).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from plugbox_client import bootstrap
from plugbox_server import __version__

LOADED_FROM = (
    "import sys; sys.path.insert(0, sys.argv[1]); import plugbox_server.cli, typer; "
    "print(plugbox_server.cli.__file__); print(typer.__file__)"
)


def test_modules_load_from_bytecode_in_the_archive(tmp_path: Path) -> None:
    target = bootstrap.build(tmp_path / "plugbox")

    done = subprocess.run([sys.executable, "-I", "-S", "-c", LOADED_FROM, str(target)],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{target}/plugbox_server/cli.pyc", f"{target}/typer/__init__.pyc"]
    ran = subprocess.run([sys.executable, "-I", "-S", str(target), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert ran.stdout == f"plugbox {__version__}\n"
