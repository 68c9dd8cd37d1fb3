"""Names: of versions (the one validator both sides use, the forms a person may
name one by, and the making of new ones), of the user at the keyboard and the
machine they type on, and of the moment: the one lookup of the user and of the
clock for both sides.

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
import time

from plugbox_server.errors import USAGE, PlugboxError

# The patterns below are compiled on first use (re's own cache), not at import:
# most runs of plugbox and plug need none of them. ASCII: \d alone would also
# accept the digits of other scripts.
# The colon form of earlier plugbox versions: refused, with a word on what changed.
_OLD = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?"
_SECOND = "%Y%m%dT%H%M%SZ"
FORMAT = "YYYYMMDDTHHMMSSZ, such as 20261121T090000Z"

# What a person may name a version by, besides its name (chain.resolve says which
# version each form names): a prefix of a name, shorter than a whole one (a whole
# name means that version alone, never its .001 sibling); live, previous, live~N.
_PREFIX = r"\d{1,8}|\d{8}T\d{0,6}|\d{8}T\d{6}Z(\.\d{0,2})?"
_RELATIVE = r"live|previous|live~(\d{1,6})"
SPEC_FORMAT = (FORMAT + ", or a unique prefix of one (20261121T09), "
               "live, previous or live~N (N versions back from live)")
# The same forms, as both CLIs' --help names them.
VERSION_FORMS = "a name, a unique prefix of one (20261202T03), live, previous or live~N"
# A git revision as `--rev` takes it: at least 4 hex digits, as git abbreviates.
_REVISION = r"[0-9a-fA-F]{4,64}"


def _fullmatch(pattern: str, text: str):
    import re

    return re.fullmatch(pattern, text, re.ASCII)


def is_version_name(name: str) -> bool:
    """Whether `name` is YYYYMMDDTHHMMSSZ, or that and .NNN: checked by hand, not by a
    regular expression, because the form is fixed-width (every character has its
    place) and this runs for every entry of deploy/ (and plug's start-up needs no re).
    isascii() before isdigit(): isdigit() alone also takes other scripts' digits, and "²"."""
    size = len(name)
    return ((size == 16 or (size == 20 and name[16] == "." and name[17:].isdigit()))
            and name[8] == "T" and name[15] == "Z" and name.isascii()
            and name[:8].isdigit() and name[9:15].isdigit())


# version_names() finds many at once: one pass of this expression (in C) over them all
# costs half of is_version_name for each (a deploy/ of 10,000: 1.4 ms against 2.8).
# The same form, which tests/test_names.py checks against is_version_name.
_NAMES = r"^\d{8}T\d{6}Z(?:\.\d{3})?$"


def version_names(candidates: "list[str] | set[str]") -> list[str]:
    """The names among `candidates` that is_version_name takes."""
    joined = "\n".join(candidates)
    if joined.count("\n") != len(candidates) - 1:  # a name with a newline in it: one at a time
        return [name for name in candidates if is_version_name(name)]
    import re

    return re.findall(_NAMES, joined, re.ASCII | re.MULTILINE)


def validate_version(name: str) -> str:
    """Return `name` unchanged if it is a version name, else refuse; never clean it up."""
    if not is_version_name(name):
        old = " (the old form with colons)" if _fullmatch(_OLD, name) else ""
        # ascii(): one line, control characters escaped once ('a\nb', not 'a\\nb').
        raise PlugboxError(
            f"{name!a} is not a version name{old}: a name is {FORMAT}",
            "see `plugbox status` for the versions", code=USAGE,
        )
    return name


def is_version_spec(text: str) -> bool:
    """Whether `text` is a way to name a version: a name, a prefix, or a relative name."""
    return bool(is_version_name(text) or _fullmatch(_PREFIX, text) or _fullmatch(_RELATIVE, text))


def validate_version_spec(text: str) -> str:
    """Return `text` unchanged if it can name a version (see is_version_spec), else refuse."""
    if not is_version_spec(text):
        old = " (the old form with colons)" if _fullmatch(_OLD, text) else ""
        raise PlugboxError(f"{text!a} is not a version name{old}: a name is {SPEC_FORMAT}",
                           "see `plugbox status` for the versions", code=USAGE)
    return text


def steps_back(spec: str) -> int | None:
    """How many versions back from live a relative name goes (live 0, previous 1,
    live~N N); None for a name or a prefix."""
    if spec == "live":
        return 0
    if spec == "previous":
        return 1
    if not spec.startswith("live~"):
        return None
    relative = _fullmatch(_RELATIVE, spec)
    if relative is None:
        return None
    return int(relative.group(1))


def validate_revision(text: str) -> str:
    """A git revision, or the start of one, as `--rev` takes it; refuse anything else."""
    if not _fullmatch(_REVISION, text):
        raise PlugboxError(f"--rev {text!a}: a revision is 4 to 64 hexadecimal digits, such as 3f9c2a1",
                           "see `plugbox status` for the revisions", code=USAGE)
    return text.lower()


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


_caller: dict[str, str] = {}  # who plug runs as, and where, once its request has said it


def called_from(user: str | None, machine: str | None) -> None:
    """The person and the machine a request comes from, as plug says them; who_at() names them."""
    _caller.update({key: value for key, value in (("user", user), ("machine", machine)) if value})


def who_at() -> str:
    """user@machine: who is at the keyboard, and on which machine: as plug's request
    said (called_from), else who() on this one (plugbox run by hand)."""
    return f"{_caller.get('user') or who()}@{_caller.get('machine') or os.uname().nodename}"


# --- --since: a moment as people write it ---------------------------------------------

_AGO = r"(\d{1,9})([smhdw])"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MOMENTS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def since(text: str, now: float | None = None) -> str:
    """The UTC moment `text` means, as utc_now() writes moments: a time ago (30m,
    2h, 3d, 1w) before `now` (default: the clock), or a UTC date or date and time
    (2026-12-02, 2026-12-02T03:00, 2026-12-02 03:00:00Z). Bad usage otherwise."""
    ago = _fullmatch(_AGO, text)
    if ago:
        moment = (time.time() if now is None else now) - int(ago.group(1)) * _UNITS[ago.group(2)]
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(moment, 0)))
    given = text.replace(" ", "T", 1).removesuffix("Z")
    for layout in _MOMENTS:
        try:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(given, layout))
        except ValueError:
            continue
    raise PlugboxError(f"--since {text!a}: give a time ago (30m, 2h, 3d, 1w) or a UTC date "
                       "(2026-12-02, 2026-12-02T03:00)", code=USAGE)
