# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""Find plugbox on the host and import plugbox's own code from it.

`plug bootstrap` installs plugbox in HOME/.local or the login's ~/.local: the
plugbox_server package and the pure-Python modules it needs, in a directory of
.local/lib/plugbox/ that .local/bin/plugbox, a Python script, puts on sys.path
(plugbox_client.argv._INSTALL_PY writes it); an older plug installed them as one
zipapp at .local/bin/plugbox. Put on sys.path, either is importable like any
package, so a module on the host calls plugbox's functions directly: one
implementation of the host side, never a second.
"""

from __future__ import annotations

import ast
import os
import sys
import zipfile

_loaded = {}   # the zipapp imported in this interpreter: path -> (device, inode, mtime)

NOT_INSTALLED_HINT = "install it with `plug bootstrap` (or a bootstrap task of plugbox.deploy)"


class PlugboxMissing(Exception):
    """No usable plugbox on this host; the message is one line, fit for `msg`."""


def candidates(home):
    """Where plug looks for plugbox, in its order: HOME's .local/bin, the login's."""
    login = os.path.expanduser("~")
    found = []
    for base in (home, login):
        if base:
            path = os.path.join(base, ".local", "bin", "plugbox")
            if path not in found:
                found.append(path)
    return found


def find_zipapp(home, given=None):
    """What to import plugbox from: the directory .local/bin/plugbox names, or the
    zipapp it is (an older plug's); raises PlugboxMissing."""
    paths = [given] if given else candidates(home)
    for path in paths:
        if os.path.exists(path):
            if zipfile.is_zipfile(path):
                return path
            installed = _installed(path)
            if installed is None:
                raise PlugboxMissing("%s is not plugbox as plug bootstrap installs it; %s" % (path, NOT_INSTALLED_HINT))
            return installed
    raise PlugboxMissing("plugbox is not installed on this host: no %s; %s" % (" nor ".join(paths), NOT_INSTALLED_HINT))


def _installed(script):
    """The directory the script `plug bootstrap` wrote puts on sys.path, if it is one
    (its line `sys.path.insert(0, 'DIRECTORY')`) and it exists."""
    try:
        with open(script, "rb") as f:
            head = f.read(4096).decode("utf-8")
        line = next(line for line in head.splitlines() if line.startswith("sys.path.insert(0, "))
        directory = ast.literal_eval(line[len("sys.path.insert(0, "):-1])
    except (OSError, UnicodeDecodeError, StopIteration, ValueError, SyntaxError):
        return None
    return directory if isinstance(directory, str) and os.path.isdir(directory) else None


def load(path):
    """Import plugbox_server from the zipapp at PATH; returns the package.

    The zipapp goes first on sys.path, so a plugbox_server installed otherwise on
    the host never shadows the one the zipapp carries.
    """
    if sys.version_info < (3, 11):
        raise PlugboxMissing("plugbox needs Python 3.11 or newer; this module runs on %s (%s): set "
                             "ansible_python_interpreter" % (sys.version.split()[0], sys.executable))
    # An interpreter that outlives a task (Mitogen's) may have imported an older
    # plugbox, since replaced by a bootstrap: forget it, and zipimport's index of it.
    st = os.stat(path)
    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if _loaded.get(path) != stamp:
        for name in [n for n in sys.modules if n == "plugbox_server" or n.startswith("plugbox_server.")]:
            del sys.modules[name]
        try:
            import zipimport
            zipimport._zip_directory_cache.pop(path, None)
        except (ImportError, AttributeError):
            pass
        sys.path_importer_cache.pop(path, None)
        _loaded[path] = stamp
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        import plugbox_server
    except ImportError as error:
        raise PlugboxMissing("%s does not hold plugbox_server (%s); %s" % (path, error, NOT_INSTALLED_HINT))
    where = os.path.dirname(os.path.dirname(os.path.abspath(plugbox_server.__file__)))
    if where != os.path.abspath(path):
        raise PlugboxMissing("plugbox_server was imported from %s, not from %s" % (where, path))
    return plugbox_server


def home_of(given):
    """The service's home on this host as plugbox takes it: `given`, else
    PLUGBOX_HOME, else the login's HOME; absolute."""
    from plugbox_server import layout

    return os.path.abspath(layout.home_from(given or None))


def steps():
    """What each step of a deploy or rollback hands plugbox, and the answer it waits
    for: step -> (message for a value, or None, the key(s) of the answer, end input).
    The messages are protocol.py's, of the plugbox this host runs."""
    from plugbox_server import protocol as P

    table = {
        # An environment change has no upload: plugbox goes on to post_upload.
        "name": (lambda value: {P.NAME: value}, (P.UPLOAD, P.PREPARED), False),
        "uploaded": (lambda value: {P.UPLOADED: True}, (P.PREPARED,), False),
        "switch": (lambda value: {P.SWITCH: True}, (P.SWITCHED,), False),
        "commit": (lambda value: {P.COMMIT: True}, (P.EXIT,), False),
        "revert": (lambda value: {P.REVERT: True}, (P.EXIT,), False),
        "abort": (lambda value: {P.ABORT: True}, (P.EXIT,), False),
        "version": (lambda value: {P.VERSION: value}, (P.EXIT,), False),
        "end": (None, (P.EXIT,), True),
    }
    release = getattr(P, "RELEASE", None)   # SPEC section 9; older plugbox: no such step
    if release is not None:
        table["release"] = (lambda value: {release: True}, (getattr(P, "RELEASED", "released"),), False)
    return table
