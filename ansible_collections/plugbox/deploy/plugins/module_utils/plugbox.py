# Copyright: Plugbox developers
# MIT License (see LICENSE of the Plugbox repository)
"""Find the plugbox zipapp on the host and import plugbox's own code from it.

`plug bootstrap` installs plugbox as one zipapp (a zip of the plugbox_server
package and the pure-Python modules it needs) at HOME/.local/bin/plugbox or the
login's ~/.local/bin/plugbox. Put on sys.path, that zip is importable like any
package, so a module on the host calls plugbox's functions directly: one
implementation of the host side, never a second.
"""

from __future__ import annotations

import os
import sys
import zipfile

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
    """The path of the plugbox zipapp to use; raises PlugboxMissing."""
    paths = [given] if given else candidates(home)
    for path in paths:
        if os.path.exists(path):
            if not zipfile.is_zipfile(path):
                raise PlugboxMissing("%s is not a plugbox zipapp (not a zip file); %s" % (path, NOT_INSTALLED_HINT))
            return path
    raise PlugboxMissing("plugbox is not installed on this host: no %s; %s" % (" nor ".join(paths), NOT_INSTALLED_HINT))


def load(path):
    """Import plugbox_server from the zipapp at PATH; returns the package.

    The zipapp goes first on sys.path, so a plugbox_server installed otherwise on
    the host never shadows the one the zipapp carries.
    """
    if sys.version_info < (3, 11):
        raise PlugboxMissing("plugbox needs Python 3.11 or newer; this module runs on %s (%s): set "
                             "ansible_python_interpreter" % (sys.version.split()[0], sys.executable))
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
