"""The layout: every name plugbox owns, in the home, in deploy/ and inside a version,
the home's default, and the rules of plugbox.toml that both sides check.

Pure, no I/O (but for reading the environment for the home). The client's
config.py and the host's hooks.py validate plugbox.toml with the same `settings()`
below; store.py, record.py and argv.py's rsync filters take their names from here.
"""

from __future__ import annotations

import os
import posixpath

from plugbox_server.environment import check_name, check_value
from plugbox_server.errors import REFUSED, USAGE, PlugboxError
from plugbox_server.plain import Plain

# --- the home ---------------------------------------------------------------------

DEPLOY = "deploy"
SHARED = "shared"
CONFIG_DIR = "config"
HOME_LIVE = "live"                 # HOME/live -> deploy/live
HOME_LIVE_TARGET = "deploy/live"


def home_from(given: str | None) -> str:
    """The home: `given` (--home), else PLUGBOX_HOME, else HOME. An empty one is
    refused, never taken for the current directory or for /. HOME_SH is the same
    rule for the host's shell, before plugbox is found."""
    if given is None:
        given = os.environ.get("PLUGBOX_HOME")
        if given == "":
            raise PlugboxError("PLUGBOX_HOME is set but empty", "set it to the service's home, or unset it")
    if given is None:
        given = os.environ.get("HOME")
        if given == "":
            raise PlugboxError("HOME is empty, and neither --home nor PLUGBOX_HOME is given",
                               "give the service's home with --home DIR")
        if given is None:
            return os.path.expanduser("~")
    if given == "":
        raise PlugboxError("--home is empty", "give the service's home: --home DIR", code=USAGE)
    return given


# home_from() in sh, for the snippets plug runs on the host: $1, else PLUGBOX_HOME, else HOME.
HOME_SH = 'h=${1:-${PLUGBOX_HOME:-$HOME}}; '

# --- deploy/ ----------------------------------------------------------------------

LIVE = "live"                      # deploy/live -> NAME
HOME_LIVE_FROM_DEPLOY = "../live"  # HOME/live, as seen from deploy/
LOCK = ".lock"
LOG = ".log"
OUTPUT = ".output"                 # the kept output of hooks; rotated to .output.1
OUTPUT_OLD = ".output.1"
BOOKKEEPING_FILES = (LOCK, LOG, OUTPUT, OUTPUT_OLD)
TMP_LINK = ".link-"                # a link being written, renamed over its place
NEW = ".new-"                      # .new-NAME: a version being made (staging)
REMOVING = ".removing-"            # .removing-NAME: a version being removed
# The relay of an engine's deploy (relay.py): a directory of mode 0700 holding its
# socket (mode 0600) and the lock that makes it the only relay of this home.
RELAY = ".relay"
RELAY_SOCKET = "socket"
RELAY_LOCK = "lock"
# .plugbox/NAME/: what plugbox knows of the version NAME (record.py): its record,
# manifest, post-upload list and environment. Mode 0700, files in it 0600 where
# secret: never inside the version's tree, which a web server may serve.
RECORDS = ".plugbox"

# --- inside a version --------------------------------------------------------------

PREVIOUS = "previous"
NEXT = "next"
CONFIG = "plugbox.toml"
# Where plugbox versions before 0.2 kept a version's record: inside it. Read, and
# moved to deploy/.plugbox/NAME/ the first time a command writes the record.
RECORD_DIR = ".plugbox"
LINKS = (PREVIOUS, NEXT)
# Top-level names of a version that are plugbox's, not the upload's: never shared,
# never taken from an archive. The host writes plugbox.toml itself (from the
# project's file, whatever its name), so rsync never sends one; the others are
# kept from rsync's --delete, and an upload that has its own is refused.
OWNED = (*LINKS, CONFIG, RECORD_DIR)
# What plugbox writes beside the version's tree: not part of its manifest or digest.
BESIDE_TREE = (*LINKS, RECORD_DIR)

# --- plugbox.toml -----------------------------------------------------------------

HOOKS = ("post_upload", "release", "stop", "start", "refresh", "check")
# Seconds a hook may run, all its lines together, unless [timeouts] says otherwise.
DEFAULT_TIMEOUTS = {"post_upload": 900, "release": 900, "stop": 300, "start": 300, "refresh": 300,
                    "check": 300}
# The hooks that run in the version's own directory (the others in HOME).
IN_VERSION = ("post_upload", "release")

KEYS = {
    "service": ("host", "hosts", "jump", "home", "shared", "keep_connection"),
    "build": ("prepare", "upload", "version_dir", "artifact", "exclude"),
    "hooks": HOOKS,
    "timeouts": HOOKS,
    "release": ("host", "when_changed"),
    "env": (),     # each key a variable of the version's environment
    "stages": (),  # each key a stage: a table of STAGE_KEYS
}
OPEN_TABLES = ("env", "stages")  # whose keys are names of the user's, not plugbox's
# What a [stages.NAME] table may set: where the service runs, not what it is.
STAGE_KEYS = ("host", "hosts", "jump", "home")

_WILDCARD = frozenset("*?[\\")


class Settings(Plain):
    """What plugbox.toml says of a version itself, as both sides read it."""

    FIELDS = ("hooks", "timeouts", "shared", "env", "release_host", "when_changed")
    DEFAULTS = {
        "hooks": dict,            # hook -> its command lines
        "timeouts": dict,         # hook -> seconds
        "shared": (),             # [service] shared: paths
        "env": dict,              # [env]: plain settings, never secrets
        "release_host": None,     # [release] host: where it runs
        "when_changed": (),       # [release] when_changed: paths
    }

    def has(self, hook: str) -> bool:
        return bool(self.hooks.get(hook))

    def timeout(self, hook: str) -> float:
        return self.timeouts.get(hook, DEFAULT_TIMEOUTS[hook])


class ConfigError(PlugboxError):
    """plugbox.toml says something plugbox cannot take."""


class Checker:
    """Checks values of plugbox.toml; each refusal names the file, the key and what is wrong.

    `code`: the exit code of a refusal (bad usage for plug, which reads the
    project's file; refused for plugbox, which reads a version's).
    """

    def __init__(self, path, code: int = REFUSED):
        self.path = path
        self.code = code

    def error(self, table: str | None, key: str, problem: str, hint: str) -> PlugboxError:
        where = f"[{key}]" if table is None else f"[{table}] {key}"
        return ConfigError(f"{self.path}: {where}: {problem}", hint, code=self.code)

    def table(self, data: dict, name: str) -> dict:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(None, name, "must be a table", f"write it as [{name}]")
        return value

    def string(self, table: str, key: str, value) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(table, key, f"must be a non-empty string, not {shown(value)}", "fix the value")
        return value

    def strings(self, table: str, key: str, value) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(table, key, f"must be a list of non-empty strings, not {shown(value)}",
                             f'write it as {key} = ["..."]')
        return tuple(value)

    def plain(self, table: str, key: str, value: str) -> None:
        if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
            raise self.error(table, key, f"{shown(value)} contains a control character", "remove it")

    def relative(self, table: str, key: str, value: str, *, allow_dot=False, pattern_safe=False,
                 inside: str = "the project directory") -> str:
        """A relative path that stays `inside` the directory it is relative to, normalised."""
        self.plain(table, key, value)
        if value.startswith("/"):
            raise self.error(table, key, f"{value!r} is not a relative path", f"give it relative to {inside}")
        if ".." in value.split("/"):
            raise self.error(table, key, f"{value!r} leaves {inside}", "remove the '..'")
        normal = posixpath.normpath(value)
        if normal == "." and not allow_dot:
            raise self.error(table, key, f"{value!r} names no path", "name a path")
        if pattern_safe and _WILDCARD.intersection(value):
            raise self.error(table, key, f"{value!r} contains a wildcard", "list plain paths")
        return normal

    def unique(self, table: str, key: str, values, what="entries") -> None:
        seen = set()
        for v in values:
            if v in seen:
                raise self.error(table, key, f"two {what} are {v!r}", "keep one")
            seen.add(v)

    def seconds(self, table: str, key: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise self.error(table, key, f"{value!r} is not a number of seconds above 0",
                             "give the time limit in seconds, such as 300")
        return value


def settings(data: dict, check: Checker) -> Settings:
    """Check every table and key name of a parsed plugbox.toml, and the values a
    version's own hooks depend on; return those. The client checks the rest (where
    to deploy, what to build) on top of this."""
    for name in data:
        if name not in KEYS:
            raise check.error(None, name, "unknown table", f"the tables are {', '.join(KEYS)}")
    tables = {name: check.table(data, name) for name in KEYS}
    for name, keys in KEYS.items():
        if name in OPEN_TABLES:
            continue
        for key in tables[name]:
            if key not in keys:
                raise check.error(name, key, "unknown key", f"the keys of [{name}] are {', '.join(keys)}")
    for name, table in tables["stages"].items():
        if not isinstance(table, dict):
            raise check.error(None, f"stages.{name}", "must be a table", f"write it as [stages.{name}]")
        for key in table:
            if key not in STAGE_KEYS:
                raise check.error(f"stages.{name}", key, "unknown key",
                                  f"a stage sets {', '.join(STAGE_KEYS)}; the rest is in [service] and [build]")

    hooks = {key: check.strings("hooks", key, lines) for key, lines in tables["hooks"].items()}
    timeouts = {key: check.seconds("timeouts", key, value) for key, value in tables["timeouts"].items()}
    shared = tuple(check.relative("service", "shared", p, pattern_safe=True, inside="the version directory")
                   for p in check.strings("service", "shared", tables["service"].get("shared", [])))
    check.unique("service", "shared", shared)
    for p in shared:
        top = p.split("/")[0]
        if top in OWNED:
            raise check.error("service", "shared", f"{p!r} would replace the version's own {top}",
                              "choose another path")
    env = {}
    for key, value in tables["env"].items():
        why = check_name(key) or check_value(key, value)
        if why:
            raise check.error("env", key, why, "[env] holds NAME = \"value\" lines, each on one line")
        env[key] = value
    keep = tables["service"].get("keep_connection")  # plug's alone, but a bad one is bad on both sides
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise check.error("service", "keep_connection", f"{keep!r} is not a whole number of seconds above 0",
                          "give the seconds to keep the connection after a command, such as 60, "
                          "or leave it out to keep none")
    release = tables["release"]
    release_host = check.string("release", "host", release["host"]) if "host" in release else None
    when_changed = tuple(check.relative("release", "when_changed", p, inside="the version directory")
                         for p in check.strings("release", "when_changed", release.get("when_changed", [])))
    return Settings(hooks, timeouts, shared, env, release_host, when_changed)


def shown(value) -> str:
    if isinstance(value, str):
        return repr(value)
    return f"{type(value).__name__} {value!r}"
