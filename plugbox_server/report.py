"""What the read-only commands print, and prune's and check's verdicts.

Shared by the two ways in: the typer CLI prints to stdout, the machine-facing
mode (serve.py) sends the same text to plug. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from plugbox_server import operations
from plugbox_server.errors import PlugboxError, for_caller


def status(home: Path, as_json: bool, out: TextIO) -> dict:
    """Prints the state; returns {"live": NAME}, which plug compares across hosts."""
    live, rows = operations.status(home)
    if as_json:
        print(json.dumps({"home": str(home.absolute()), "live": live,
                          "versions": [vars(row) for row in rows]}, indent=2), file=out)
        return {"live": live}
    if not rows:
        print("no versions", file=out)
        return {"live": live}
    width = max(len(row.name) for row in rows)
    for row in rows:
        links = "".join(f"  {kind} {target}" for kind, target in
                        (("previous", row.previous), ("next", row.next)) if target)
        print(f"{row.name:<{width}}  {row.state:<8}{links}".rstrip(), file=out)
    return {"live": live}


def prune(home: Path, keep: int, out: TextIO) -> None:
    removed, left = operations.prune(home, keep)
    if not removed:
        why = "live and its previous are never pruned" if left > keep else f"--keep {keep}"
        print(f"nothing to prune: {left} version{'' if left == 1 else 's'} left ({why})", file=out)


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


def log(home: Path, out: TextIO) -> None:
    entries = operations.log(home)
    if not entries:
        print("no operations yet", file=out)
        return
    rows = [["TIME", "USER", "COMMAND", "FROM", "TO", "OUTCOME"], *entries]
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(5)]
    for row in rows:
        print("  ".join(field.ljust(w) for field, w in zip(row, widths)) + "  " + " ".join(row[5:]),
              file=out)
