"""What the read-only commands print, and prune's and check's verdicts.

Shared by the two ways in: the typer CLI prints to stdout, the machine-facing
mode (serve.py) sends the same text to plug. Standard library only.
"""

from __future__ import annotations

import time
from pathlib import Path

from plugbox_server import operations, record
from plugbox_server.environment import digest
from plugbox_server.errors import USAGE, PlugboxError, for_caller
from plugbox_server.names import since as moment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO


def status(home: Path, as_json: bool, out: TextIO, brief: bool = False, every: bool = False) -> dict:
    """Print the versions, newest first: the newest operations.SHOWN of them and how
    many more `--all` shows, or with `every` all of them (with `brief`, nothing);
    `as_json` prints every version, whole records included, for scripts. Return
    what plug's compact view of several hosts and its completion use: {"live",
    "versions" (the names shown), "row" (the live version's name, revision, who,
    when, message; with `brief`)}."""
    live, rows, count = operations.newest_status(home, None if every or as_json else operations.SHOWN,
                                                 with_live=brief)
    now = time.time()
    known = {"live": live, "versions": [row.name for row in rows]}
    if brief:
        described = [_described(row.record, now) for row in rows if row.name == live]
        return {**known, "row": [live, *described[0]] if described else None}
    if as_json:
        import json

        print(json.dumps({"home": str(home.absolute()), "live": live,
                          "versions": [vars(row) for row in rows]}, indent=2), file=out)
        return known
    if not rows:
        print("no versions", file=out)
        return known
    artifacts = any((row.record or {}).get("artifact_sha256") for row in rows)
    table = [[row.name, row.state, *_described(row.record, now, artifacts)] for row in rows]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]) - 1)]
    for cells in table:
        print(("  ".join(cell.ljust(w) for cell, w in zip(cells, widths)) + "  " + cells[-1]).rstrip(),
              file=out)
    older = count - len(rows)
    if older:
        print(for_caller(f"... and {_versions(older).replace('version', 'older version')}: "
                         "`plugbox status --all` shows every version"), file=out)
    return known


def _described(record: dict | None, now: float, artifacts: bool = False) -> list[str]:
    """Revision (+ when uncommitted changes), who (user@machine), how long ago, the
    artifact (its name and the start of its sha256; when some version has one), message."""
    record = record or {}
    revision = str(record.get("revision") or "-")[:7] + ("+" if record.get("dirty") else "")
    who = str(record.get("user") or "-") + (f"@{record['machine']}" if record.get("machine") else "")
    message = " ".join(str(record.get("message") or "").split())
    if len(message) > 60:
        message = message[:57] + "..."
    cells = [revision, who, _ago(record.get("created"), now)]
    if artifacts:
        cells.append(artifact_shown(record))
    return [*cells, message]


def artifact_shown(record: dict) -> str:
    """The artifact a version was made from, as status shows it: `app.tar.gz sha256:3f9c2a1b4d5e`."""
    sha256 = record.get("artifact_sha256")
    if not sha256:
        return "-"
    return f"{record.get('artifact') or 'artifact'} sha256:{str(sha256)[:12]}"


def _ago(created: str | None, now: float) -> str:
    seconds = _seconds(created)
    if seconds is None:
        return "-"
    seconds = now - seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def _seconds(moment: str | None) -> int | None:
    """The seconds since the epoch of a moment as names.utc_now() writes it
    (YYYY-MM-DDTHH:MM:SSZ), read by hand: the form is fixed-width, and
    time.strptime (with calendar) would cost each status several milliseconds
    of imports. None when it is not one."""
    if not isinstance(moment, str) or len(moment) != 20 or not moment.isascii() or \
            moment[4::3] != "--T::Z" or not (moment[0:4] + moment[5::3] + moment[6::3]).isdigit():
        return None
    year, month, day = int(moment[0:4]), int(moment[5:7]), int(moment[8:10])
    hour, minute, second = int(moment[11:13]), int(moment[14:16]), int(moment[17:19])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    year -= month <= 2
    era = year // 400
    of_era = year - era * 400
    of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    of_era_days = of_era * 365 + of_era // 4 - of_era // 100 + of_year
    days = era * 146097 + of_era_days - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


def verify(home: Path, version: str | None, out: TextIO, rev: str | None = None) -> None:
    name, result = operations.verify(home, version, rev)
    for key, label in (("changed", "changed"), ("added", "added"), ("removed", "removed"),
                       ("post_upload_changed", "changed since post_upload"),
                       ("post_upload_removed", "removed since post_upload")):
        for path in result[key]:
            print(f"{label}: {path if path.isprintable() else ascii(path)}", file=out)
    if record.differs(result) or result["digest"] != result["recorded"]:
        count = sum(len(result[k]) for k in ("changed", "added", "removed",
                                              "post_upload_changed", "post_upload_removed"))
        raise PlugboxError(f"{name} differs from its upload in {count} "
                           f"path{'' if count == 1 else 's'} (digest {result['digest']}, "
                           f"recorded {result['recorded']})",
                           "deploy again to get a clean version")
    print(f"{name}: as uploaded ({result['digest']})", file=out)


def prune(home: Path, keep: int, out: TextIO, dry_run: bool = False, confirm=None) -> None:
    plan = operations.prune(home, keep, dry_run=dry_run, confirm=confirm)
    if dry_run:
        for line in plan_lines(plan, kept=True):
            print(line, file=out)
        print(f"dry run: nothing removed ({_versions(len(plan.remove))} would go, "
              f"{len(plan.keep)} would stay)", file=out)
    elif not plan.remove:
        left = len(plan.keep)
        why = "live and its previous are never pruned" if left > keep else f"--keep {keep}"
        print(f"nothing to prune: {_versions(left)} left ({why})", file=out)


def remove(home: Path, versions: list[str], out: TextIO, rev: str | None = None, dry_run: bool = False,
           confirm=None) -> None:
    plan = operations.remove(home, versions, rev=rev, dry_run=dry_run, confirm=confirm)
    if dry_run:
        for line in plan_lines(plan):
            print(line, file=out)
        print("dry run: nothing removed", file=out)


def plan_lines(plan: operations.Plan, kept: bool = False) -> list[str]:
    """What a remove or prune would delete (and, with `kept`, what it keeps and why),
    newest first: for --dry-run, and for the question before deleting."""
    lines = [(name, f"would remove {name}  {plan.states.get(name, '')}".rstrip()) for name in plan.remove]
    if kept:
        lines += [(name, f"keep         {name}  {why}") for name, why in plan.keep]
    return [line for _, line in sorted(lines, reverse=True)]


def _versions(count: int) -> str:
    return f"{count} version{'' if count == 1 else 's'}"


def check(home: Path, repair: bool, out: TextIO) -> None:
    left, done = operations.check(home, repair)
    for message in done:
        print(f"repaired: {message}", file=out)
    for message in left:
        print(f"problem: {for_caller(message)}", file=out)
    if left:
        raise PlugboxError(f"{len(left)} problem{'s' if len(left) > 1 else ''} in deploy/",
                           None if repair else "run `plugbox check --repair`")
    if not done:
        print("ok", file=out)


def env(home: Path, action: str, names: list[str], versions: list[str], out: TextIO) -> None:
    """`env` (the live version's names: source, a short digest, the version that last
    changed each), `env get NAME` (one value, on purpose), `env diff [A [B]]`."""
    if action == "diff":
        a, b, changes = operations.environment_diff(home, versions)
        for what, name in changes:
            print(f"{what} {name}", file=out)
        if not changes:
            print(f"the environments of {a} and {b} are the same", file=out)
        return
    version, environment = operations.environment_of(home, versions[0] if versions else None)
    if action == "get":
        if len(names) != 1:
            raise PlugboxError("get prints one value", "name one variable", code=USAGE)
        if names[0] not in environment.values:
            raise PlugboxError(f"{names[0]} is not set in {version}", "see `plugbox env`")
        print(environment.values[names[0]], file=out)
        return
    if not environment.values:
        print(f"no variables in the environment of {version}", file=out)
        return
    rows = [("NAME", "SOURCE", "DIGEST", "CHANGED IN")] + [
        (name, "[env]" if environment.sources.get(name) == "toml" else "plug env set",
         digest(value), environment.since.get(name, "-"))
        for name, value in sorted(environment.values.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3], file=out)


def log(home: Path, out: TextIO, output: bool = False, count: int | None = None,
        since: str | None = None) -> None:
    """The log (or, with `output`, the kept hook output, command by command): only
    what happened at or after `since` (any form names.since takes), the last
    `count` of it."""
    start = moment(since) if since is not None else None
    if output:
        parts = _output_parts(operations.hook_output(home))
        parts = [part for when, part in parts if start is None or when >= start]
        parts = parts[-count:] if count is not None else parts
        print("".join(parts) if parts else "no hook output kept" + _since(since), file=out,
              end="" if parts else "\n")
        return
    entries = [entry for entry in operations.log(home) if start is None or entry[0] >= start]
    entries = entries[-count:] if count is not None else entries
    if not entries:
        print("no operations yet" if since is None else "no operations" + _since(since), file=out)
        return
    rows = [["TIME", "USER", "COMMAND", "FROM", "TO", "OUTCOME"], *entries]
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(5)]
    for row in rows:
        print("  ".join(field.ljust(w) for field, w in zip(row, widths)) + "  " + " ".join(row[5:]),
              file=out)


def _since(since: str | None) -> str:
    return f" since {moment(since)}" if since is not None else ""


# The heading store.OutputRecord writes before each command's kept output.
_HEADING = rb"=== (\S+) .*"


def _output_parts(kept: bytes) -> list[tuple[str, str]]:
    """The kept hook output, one part per command: (its time, its text). A part the
    rotation of the file continued under a second heading stays one part."""
    import re  # `log --output` only

    parts: list[tuple[str, str]] = []
    for piece in re.split(rb"(?m)^(?==== )", kept):
        if not piece:
            continue
        heading = re.match(_HEADING, piece)
        text = piece.decode(errors="replace")
        if parts and (heading is None or piece.split(b"\n", 1)[0].endswith(b", continued")):
            parts[-1] = (parts[-1][0], parts[-1][1] + text)
        else:
            parts.append((heading.group(1).decode(errors="replace") if heading else "", text))
    return parts
