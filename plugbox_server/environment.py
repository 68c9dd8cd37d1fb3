"""A version's environment: its NAME=VALUE pairs, the rules they follow, their file,
and how a deploy or an environment change makes a version's from live's.

Pure, no I/O: record.py reads and writes the file; layout.py checks [env] of
plugbox.toml with check_name and check_value; protocol.py reads a request's
changes with them. Values are never put in a message, a log line or a record:
only names, sources and versions (and, for `plug env`, a short digest).

The file, deploy/.plugbox/NAME/env (mode 0600), is one NAME=VALUE a line, the value
as is (no quoting, no escapes): what a line holds after its first `=` is the value,
so any value without a newline or a NUL round-trips exactly, `=` and quotes
included.

Each name comes from one source: SET (`plug env set`, values that exist only on the
hosts) or TOML (`[env]` of plugbox.toml, which travels with the project).
"""

from __future__ import annotations

from plugbox_server.errors import USAGE, PlugboxError
from plugbox_server.plain import Plain

SET = "set"
TOML = "toml"
RESERVED_PREFIX = "PLUGBOX_"   # plugbox's own variables, which every hook gets


def check_name(name) -> str | None:
    """Why `name` cannot be a variable's name, or None."""
    # [A-Za-z_][A-Za-z0-9_]*: for an ASCII string, exactly what isidentifier() takes.
    if not isinstance(name, str) or not (name.isascii() and name.isidentifier()):
        return f"{str(name)!a} is not a name: a name is letters, digits and _, not starting with a digit"
    if name.startswith(RESERVED_PREFIX):
        return f"{name} starts with {RESERVED_PREFIX}, which plugbox's own variables do"
    return None


def check_value(name: str, value) -> str | None:
    """Why `value` cannot be one, or None; never says the value."""
    if not isinstance(value, str):
        return f"the value of {name} is not a string"
    if "\n" in value or "\0" in value:
        return f"the value of {name} has a newline or a NUL, which a line of the environment cannot hold"
    return None


def checked(values: dict) -> dict[str, str]:
    """`values` if every name and value is good; else refused (usage), naming the first bad one."""
    for name, value in values.items():
        why = check_name(name) or check_value(name, value)
        if why:
            raise PlugboxError(why, "nothing changed", code=USAGE)
    return dict(values)


def render(values: dict[str, str]) -> bytes:
    """The file's text: one NAME=VALUE a line, sorted by name."""
    return "".join(f"{name}={values[name]}\n" for name in sorted(values)).encode()


def parse(text: bytes) -> dict[str, str]:
    """The pairs of a file render() wrote (lines that are not NAME=VALUE are skipped)."""
    values = {}
    for line in text.decode("utf-8", "surrogateescape").split("\n"):
        name, equals, value = line.partition("=")
        if equals and check_name(name) is None:
            values[name] = value
    return values


def digest(value: str) -> str:
    """A short digest of a value, to compare two without showing either."""
    import hashlib  # only `env` shows digests

    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:8]


class Environment(Plain):
    """A version's environment: values, each name's source, and the version that last
    changed each value (what record.py keeps of it: names, sources, versions)."""

    FIELDS = ("values", "sources", "since")
    DEFAULTS = {"values": dict, "sources": dict, "since": dict}

    def __repr__(self) -> str:
        return f"Environment(sources={self.sources!r}, since={self.since!r})"  # never a value

    def known(self) -> dict[str, dict]:
        """What the record keeps: {NAME: {"source", "since"}}, no value."""
        return {name: {"source": self.sources.get(name, SET), "since": self.since.get(name)}
                for name in sorted(self.values)}


def for_deploy(live: Environment, toml: dict[str, str], name: str) -> Environment:
    """The environment of a version deployed over `live`: live's `plug env set` values
    carried forward, plus the project's [env]. A name from both is refused."""
    carried = {k: v for k, v in live.values.items() if live.sources.get(k, SET) == SET}
    both = sorted(set(carried) & set(toml))
    if both:
        raise PlugboxError(
            f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} set on the host (plug env set) and in "
            "[env] of plugbox.toml: a name comes from one source",
            f"remove {'it' if len(both) == 1 else 'them'} from [env], or `plug env unset "
            f"{' '.join(both)}`; nothing changed")
    return _made(live, {**carried, **toml}, {**{k: SET for k in carried}, **{k: TOML for k in toml}}, name)


def for_change(live: Environment, set_values: dict[str, str], unset: list[str], name: str) -> Environment:
    """The environment of a version made from live by `plug env set/unset`."""
    from_toml = sorted(k for k in set_values if live.sources.get(k) == TOML)
    if from_toml:
        raise PlugboxError(f"{', '.join(from_toml)} comes from [env] of plugbox.toml",
                           "change it there and deploy; nothing changed", code=USAGE)
    for gone in unset:
        if gone not in live.values or live.sources.get(gone, SET) != SET:
            why = "comes from [env] of plugbox.toml" if gone in live.values else "is not set"
            raise PlugboxError(f"{gone} {why}", "see `plugbox env`; nothing changed", code=USAGE)
    values = {k: v for k, v in live.values.items() if k not in unset}
    values.update(set_values)
    sources = {k: live.sources.get(k, SET) for k in values}
    sources.update({k: SET for k in set_values})
    return _made(live, values, sources, name)


def _made(live: Environment, values: dict[str, str], sources: dict[str, str], name: str) -> Environment:
    since = {k: (live.since.get(k) or name) if live.values.get(k) == v and k in live.values else name
             for k, v in values.items()}
    return Environment(values, sources, since)


def diff(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str]]:
    """(what, NAME) for each name added, removed or changed, sorted by name."""
    changes = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            changes.append(("added", name))
        elif name not in after:
            changes.append(("removed", name))
        elif before[name] != after[name]:
            changes.append(("changed", name))
    return changes
