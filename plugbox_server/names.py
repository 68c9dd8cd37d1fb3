"""Names: of versions (the one validator both sides use, and the making of new
ones), of the user at the keyboard, and of the moment: the one lookup of the
user and of the clock for both sides.

Pure but for the clock and the user database. A name is the UTC second the version was created, in ISO 8601
basic format, `YYYYMMDDTHHMMSSZ` (`20261121T090000Z`): no colon, so a path
inside a version can go on PATH or PYTHONPATH, `python3 -m venv` accepts it,
and rsync, scp and tar never read it as `host:path`. A version made in a second
that already has one (or while the clock is behind the newest name) gets a
three-digit suffix after the newest name, `20261121T090000Z.001`: a name sorts
before its own extensions, and `Z.999` before the next second's digits, so plain
string order stays creation order.
"""

import os
import re
import time

from plugbox_server.errors import USAGE, PlugboxError

# ASCII: \d alone would also accept the digits of other scripts.
PATTERN = re.compile(r"\d{8}T\d{6}Z(\.\d{3})?", re.ASCII)
# The colon form of earlier plugbox versions: refused, with a word on what changed.
_OLD = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?", re.ASCII)
_SECOND = "%Y%m%dT%H%M%SZ"
FORMAT = "YYYYMMDDTHHMMSSZ, such as 20261121T090000Z"


def is_version_name(name: str) -> bool:
    return PATTERN.fullmatch(name) is not None


def validate_version(name: str) -> str:
    """Return `name` unchanged if it is a version name, else refuse; never clean it up."""
    if not is_version_name(name):
        old = " (the old form with colons)" if _OLD.fullmatch(name) else ""
        # ascii(): one line, control characters escaped once ('a\nb', not 'a\\nb').
        raise PlugboxError(
            f"{name!a} is not a version name{old}: a name is {FORMAT}",
            "see `plugbox status` for the versions", code=USAGE,
        )
    return name


def new_version_name(existing: "list[str] | set[str]", now=None) -> str:
    """A name after every existing one: the current UTC second, or the newest plus a suffix.

    `now`: a datetime (naive ones are local time), default the clock.
    """
    name = time.strftime(_SECOND, time.gmtime(now.timestamp() if now is not None else None))
    newest = max(existing, default="")
    if name > newest:
        return name
    second, _, suffix = newest.partition(".")
    count = int(suffix or "0") + 1
    if count > 999:
        raise PlugboxError(f"too many versions made in the second {second}", "try again in a second")
    return f"{second}.{count:03d}"


def utc_now() -> str:
    """The moment, as the log, the lock and the records write it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def login() -> str:
    """The user's name as getpass finds it (LOGNAME, USER, ..., then the user
    database), or the uid when there is none."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def who() -> str:
    """Who is at the keyboard: PLUGBOX_USER, which plug sets to its own user (the
    log and the records name the person, not the service's login), else the login."""
    return os.environ.get("PLUGBOX_USER") or login()
