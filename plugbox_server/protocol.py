"""The wire protocol between plug and `plugbox --serve`: both sides import this.

JSON, one object a line, on the session's stdin and stdout; plugbox's messages and
hook output go on its stderr. plugbox speaks first:

    {"hello": {"plugbox": VERSION, "protocol": NUMBER, "python": "3.11.7", "rsync": true}}

and refuses (exit USAGE) when the client asked for another protocol. The client
sends one request, {"command": ..., "home": ..., FIELD: ...} (REQUEST_FIELDS says
which fields exist and what each must be). Every command ends with

    {"exit": CODE, "error": TEXT (when CODE is not 0), "out": TEXT, ...}

where "out" is what a person would see on stdout.

A deploy of an artifact (its sha256 in the request's origin) that the live
version was made from ends at once, unless "force": {"exit": 0, "unchanged":
true, "name": LIVE, "was": LIVE}; nothing is made, and no gate is asked.
Otherwise a deploy answers {"upload": {"name", "path", "live"}} once it holds the lock and
has made the staging directory, then waits for {"uploaded": true}: the end of
input before that means the caller has gone, and the staging directory is removed.
Gates, asked for by the request ("gated": true, for several hosts), let the caller
decide for all hosts at once: once it holds the lock, plugbox answers {"newest":
{"name", "live"}} and waits for {"name": NAME}; after post_upload it answers
{"prepared": {"name"}} and waits for {"switch": true} (anything else, or the end
of input, removes the new version: nothing switched). Before that, the one host
that runs the release step for all is sent {"release": true}: it runs it (or
skips it) and answers {"released": {"ran", "why"}}, or ends with an exit message
when it failed, its new version removed. After a good check it
answers {"switched": {"name"}} and waits: {"revert": true} switches back, {"commit":
true} or the end of input keeps the switch. A gated rollback answers {"ready":
{"live", "previous", "versions", "version"}} under the lock ("version": what the
request's version or rev names on this host, resolved there) and waits for
{"version": NAME} (null: nothing to do here). A remove or prune asked to
"confirm" answers {"plan": {"remove": [NAMES], "lines": [TEXT]}} under the lock,
when it has something to remove, and goes ahead on {"commit": true} only.

Every request that changes state carries "origin" with at least the user and
the machine plug runs on: the lock names them to whoever it turns away.

Standard library only, and cheap to import: both start-ups load it. json (and the
re it brings) is imported when the first message is encoded or decoded, and
`hello_line` needs none of it: plugbox --serve says hello before importing anything.
"""

from __future__ import annotations

from plugbox_server import environment
from plugbox_server.errors import USAGE, PlugboxError
from plugbox_server.names import is_version_name

NUMBER = 3
ARGS = ("--serve", str(NUMBER))     # plugbox's arguments for this mode
BOOTSTRAP_HINT = "run `plug bootstrap` to install the plugbox that matches plug"

# The messages' keys, each written once.
HELLO, EXIT, OUT, ERROR = "hello", "exit", "out", "error"
NEWEST, NAME = "newest", "name"
UPLOAD, UPLOADED = "upload", "uploaded"
PREPARED, SWITCH, SWITCHED = "prepared", "switch", "switched"
RELEASE, RELEASED = "release", "released"
REVERT, COMMIT, ABORT = "revert", "commit", "abort"
READY, VERSION = "ready", "version"
UNCHANGED = "unchanged"
PLAN = "plan"

COMMANDS = ("deploy", "rollback", "remove", "status", "verify", "log", "prune", "check", "env", "hello")
ENV_ACTIONS = ("list", "get", "diff")


class ProtocolError(PlugboxError):
    """What came over the wire is not this protocol: the two sides do not match."""

    code = USAGE

    def __init__(self, message: str):
        super().__init__(message, BOOTSTRAP_HINT)


def encode(message: dict) -> bytes:
    import json

    return (json.dumps(message) + "\n").encode()


def decode(line: bytes | str, sender: str = "the other side") -> dict:
    """One message; ProtocolError when the line is not one."""
    import json

    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise ProtocolError(f"{sender} sent {_shown(line)}, which is not plugbox's protocol")
    return message


def hello(version: str, python: str, rsync: bool) -> dict:
    return {HELLO: {"plugbox": version, "protocol": NUMBER, "python": python, "rsync": rsync}}


def hello_line(version: str, python: str, rsync: bool) -> bytes:
    """encode(hello(...)), written without json: the versions are plain words (a value
    that is not goes through json, as any message does)."""
    if not all(text.isascii() and text.isprintable() and '"' not in text and "\\" not in text
               for text in (version, python)):
        return encode(hello(version, python, rsync))
    return (f'{{"{HELLO}": {{"plugbox": "{version}", "protocol": {NUMBER}, "python": "{python}", '
            f'"rsync": {"true" if rsync else "false"}}}}}\n').encode()


def exit_message(code: int, error: str | None = None, out: str = "", **fields) -> dict:
    message = {EXIT: code, OUT: out, **fields}
    if error is not None:
        message[ERROR] = error
    return message


def exit_code(message: dict) -> int:
    code = message.get(EXIT)
    return code if isinstance(code, int) and not isinstance(code, bool) else 1


# --- requests ---------------------------------------------------------------------


def _text(value) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _flag(value) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _seconds(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("a number of seconds")
    return float(value)


def _keep(value) -> int:
    if value is None:
        return 5
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("a whole number")
    return value


def _count(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a whole number, 0 or more")
    return value


def _texts(value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of strings")
    return value


def _object(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("an object")
    return value


def _values(value) -> dict[str, str]:
    """Environment values to set: names and values as environment.py allows."""
    values = _object(value)
    for name, text in values.items():
        if environment.check_name(name) or environment.check_value(name, text):
            raise ValueError("NAME: VALUE pairs of the environment")  # never the value itself
    return values


def _names(value) -> list[str]:
    names = _texts(value)
    if any(environment.check_name(name) for name in names):
        raise ValueError("a list of variables' names")
    return names


def _action(value) -> str:
    if value is None:
        return "list"
    if value not in ENV_ACTIONS:
        raise ValueError(f"one of {', '.join(ENV_ACTIONS)}")
    return value


# Every field a request may carry, and how it is read: the one place both sides
# agree on what each means (a missing field takes the reader's default).
REQUEST_FIELDS = {
    "command": _text, "home": _text,
    "json": _flag, "output": _flag, "repair": _flag, "refresh": _flag,
    "gated": _flag, "hold": _flag, "force": _flag, "dry_run": _flag, "confirm": _flag, "brief": _flag,
    "all": _flag,
    "version": _text, "versions": _texts, "rev": _text, "keep": _keep, "wait_lock": _seconds,
    "count": _count, "since": _text, "config": _text, "origin": _object,
    # an environment change (a "deploy" with these instead of an upload), and `env`'s own
    "env_set": _values, "env_unset": _names, "action": _action, "names": _names,
}


def request(command: str, home: str | None, **fields) -> dict:
    """A request as the client sends it; fields that are None are left out."""
    message = {"command": command, "home": home, **fields}
    return {key: value for key, value in message.items() if value is not None}


def read_request(message: dict) -> dict:
    """The request with every field read (defaults filled in); ProtocolError for an
    unknown command or field, or a field of the wrong kind."""
    read = {}
    for key in message:
        if key not in REQUEST_FIELDS:
            raise ProtocolError(f"the request has a field {key!r} this plugbox does not know")
    for key, convert in REQUEST_FIELDS.items():
        try:
            read[key] = convert(message.get(key))
        except ValueError as error:
            raise ProtocolError(f"the request's field {key!r} must be {error}") from None
    if read["command"] not in COMMANDS:
        raise ProtocolError(f"no command {str(read['command'])!a} in protocol {NUMBER}")
    return read


# --- what the host tells of versions, read by the client --------------------------


def read_versions(payload, sender: str, *keys: str) -> tuple:
    """The values of `keys` in a message's payload, each a version name or None
    (or, for "path", an absolute path); ProtocolError otherwise."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"plugbox on {sender} answered {_shown(str(payload))}")
    values = []
    for key in keys:
        value = payload.get(key)
        if key == "path":
            good = isinstance(value, str) and value.startswith("/") and "\n" not in value
        else:
            good = value is None or (isinstance(value, str) and is_version_name(value))
        if not good:
            raise ProtocolError(f"plugbox on {sender} answered {_shown(str(payload))}, "
                                f"whose {key!r} is not what plug understands")
        values.append(value)
    return tuple(values)


def read_plan(payload, sender: str) -> dict:
    """A remove's or prune's plan: {"remove": [NAMES], "lines": [TEXT]}; ProtocolError otherwise."""
    good = (isinstance(payload, dict) and isinstance(payload.get("remove"), list)
            and all(isinstance(name, str) and is_version_name(name) for name in payload["remove"])
            and isinstance(payload.get("lines"), list)
            and all(isinstance(line, str) and "\n" not in line for line in payload["lines"]))
    if not good:
        raise ProtocolError(f"plugbox on {sender} answered {_shown(str(payload))}, which is no plan plug understands")
    return payload


def _shown(line) -> str:
    text = line.decode(errors="replace") if isinstance(line, bytes) else str(line)
    text = text.strip()
    return repr(text[:80]) if text else "nothing"
