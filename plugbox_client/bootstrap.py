"""`plug bootstrap`: build plugbox as one zipapp and install it on the host.

The host has python3 (3.11 or newer) and rsync, and no pip packages, so the zipapp
carries plugbox_server and every pure-Python module it imports, copied from where
they are installed here. Building writes only in a temporary directory; the zipapp
is checked here with an interpreter that sees no site-packages before it is sent.
"""

import compileall
import json
import py_compile
import shutil
import sys
import tempfile
import zipapp
from importlib.util import find_spec
from pathlib import Path

from plugbox_client import transport
from plugbox_client.config import Config
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
        # zipimport cannot cache bytecode inside an archive: without .pyc files in it,
        # every run would compile typer and plugbox again (about 100 ms of a 180 ms
        # `plugbox status`). Next to each source (where zipimport looks), unchecked: a
        # host whose python has another magic number skips them and compiles the source.
        compileall.compile_dir(staging, quiet=1, legacy=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
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


def bootstrap(config: Config, into_home: bool = False) -> list[str]:
    """Install (or upgrade) plugbox on the host (on each host in turn) and create the
    layout; returns the report. With several hosts, one that fails does not stop
    the others: the report names it, and the command fails at the end.

    plugbox goes to the login's ~/.local/bin, where plug finds it for every home of
    that login, or with `into_home` to HOME/.local/bin, for that home alone.
    """
    with tempfile.TemporaryDirectory(prefix="plug-") as scratch:
        zipapp_path = build(Path(scratch, "plugbox"))
        if not config.several:
            return _install(config, zipapp_path, into_home)
        failed = []
        for name in config.hosts:
            try:
                for line in _install(config.for_host(name), zipapp_path, into_home):
                    print(f"{name}: {line}", flush=True)
            except PlugboxError as error:
                print(f"plug: {name}: {error}", file=sys.stderr, flush=True)
                failed.append(error)
        if failed:
            raise PlugboxError(f"plugbox was not installed on {len(failed)} of {len(config.hosts)} hosts",
                               "see the lines above", code=failed[0].code)
        return []


def _install(config: Config, zipapp_path: Path, into_home: bool) -> list[str]:
    with transport.connect(config) as host:
        installed = transport.install_plugbox(host, zipapp_path, into_home)
        if installed.code != 0:
            raise PlugboxError(f"could not install plugbox on {host.label} (exit {installed.code})",
                               "see the message above")
        version = host.plugbox(["--version"], capture=True)
        state = host.plugbox(["status", "--json"], capture=True)
        if version.code != 0 or state.code != 0:
            raise PlugboxError(f"plugbox was installed on {host.label} but does not run there",
                               "see the message above")
    home = json.loads(state.stdout)["home"]
    paths = installed.stdout.split("\n")
    return [
        *(f"{version.stdout.strip()} installed on {host.label} as {path}" for path in paths if path),
        "it serves " + (f"the service in {home} alone" if into_home else
                        "every service of this ssh login whose home has no plugbox of its own"),
        f"layout ready in {home}: deploy/, shared/, config/",
    ]
