"""`plug bootstrap`'s zipapp: plugbox built as one file that a bare python3 runs,
which is how it travels to the hosts (driver.bootstrap sends it, and the host's
python3 unpacks it into a directory and compiles it there: argv.INSTALL_PLUGBOX).

The host has python3 (3.11 or newer) and rsync, and no pip packages, so the zipapp
carries plugbox_server and every pure-Python module it imports, copied from where
they are installed here. Building writes only in a temporary directory; the zipapp
is checked here with an interpreter that sees no site-packages before it is sent.
"""

import json
import shutil
import sys
import tempfile
import zipapp
from importlib.util import find_spec
from pathlib import Path

from plugbox_client import transport
from plugbox_server.errors import PlugboxError

ENTRY = "plugbox_server.main:main"

# Asks a fresh interpreter which top-level modules outside the standard library
# the server imports. Optional ones (typer uses rich only if it is there) stay out:
# they are not imported until used, and typer works without them.
_PROBE = (
    "import sys, json; before = set(sys.modules); import plugbox_server.cli; "
    "new = {m.partition('.')[0] for m in set(sys.modules) - before}; "
    "print(json.dumps(sorted(n for n in new if n not in sys.stdlib_module_names)))"
)


def modules() -> list[str]:
    """The top-level modules the zipapp must carry, plugbox_server first."""
    result = transport.run([sys.executable, "-c", _PROBE], out=transport.CAPTURE)
    if result.code != 0:
        raise PlugboxError("could not import plugbox_server here", "reinstall plugbox")
    names = json.loads(result.stdout)
    return ["plugbox_server", *sorted(n for n in names if n != "plugbox_server")]


def build(target: Path) -> Path:
    """Write the zipapp to `target` and check that it runs without site-packages."""
    with tempfile.TemporaryDirectory(prefix="plug-zipapp-") as staging:
        staging = Path(staging)
        for name in modules():
            _copy_module(name, staging)
        # Sources only: the host compiles them once, for its own python3, when it
        # installs them as a directory (zipimport could not cache bytecode: a zipapp
        # run as it is would compile typer and plugbox at every run).
        zipapp.create_archive(staging, target, interpreter="/usr/bin/env python3", main=ENTRY, compressed=True)
    check = transport.run([sys.executable, "-I", "-S", str(target), "--version"], out=transport.CAPTURE)
    if check.code != 0:
        raise PlugboxError(f"the plugbox zipapp does not run without site-packages (exit {check.code})",
                           "see the message above")
    return target


def _copy_module(name: str, staging: Path) -> None:
    spec = find_spec(name)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        raise PlugboxError(f"cannot find the module {name} to put in the zipapp", "reinstall plugbox")
    if spec.submodule_search_locations:
        source = Path(next(iter(spec.submodule_search_locations)))
        compiled = [p for p in source.rglob("*") if p.suffix in (".so", ".pyd")]
        if compiled:
            raise PlugboxError(f"{name} has compiled parts ({compiled[0].name}); the zipapp must be pure Python",
                               "install a pure-Python build of it")
        shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        origin = Path(spec.origin)
        if origin.suffix != ".py":
            raise PlugboxError(f"{name} is compiled ({origin.name}); the zipapp must be pure Python",
                               "install a pure-Python build of it")
        shutil.copy2(origin, staging / origin.name)
