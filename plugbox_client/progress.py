"""The upload's progress on a terminal: one bar per host, drawn by rich on stderr.

Imported only when there is a bar to draw (stderr a terminal, no --quiet): plug
never loads rich otherwise. Each bar follows one rsync through its upload.Count:
the entries in place out of those rsync considers (the file being sent counted
by the share of its bytes sent), the bytes sent and rsync's rate, and the time
left at that pace. While the bars are up, what plug and the hosts say on stderr
is printed above them (rich's Live redirects sys.stderr).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn,
                           TimeRemainingColumn)

from plugbox_client.upload import Count, human


class Bars:
    """One bar per name, in the order given; a context manager around the uploads."""

    def __init__(self, names: list[str]):
        self.display = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[files]}"), TextColumn("{task.fields[sent]}"),
            TimeRemainingColumn(),
            # stdout stays data: only stderr passes above the bars.
            console=Console(stderr=True), transient=False, refresh_per_second=10, redirect_stdout=False)
        width = max(map(len, names), default=0)
        self.tasks: dict[str, TaskID] = {
            name: self.display.add_task(name.ljust(width), total=None, files="", sent="")
            for name in names}

    def __enter__(self) -> "Bars":
        self.display.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.display.stop()
        return False

    def of(self, name: str) -> Callable[[Count], None]:
        """What the rsync of `name` tells how far it has got."""
        task = self.tasks[name]

        def show(count: Count) -> None:
            files = f"{count.entries:,}/{count.total:,} entries" if count.total else f"{count.entries:,} entries"
            sent = f"{human(count.transferred)} sent" + (f" at {count.rate}" if count.rate else "")
            self.display.update(task, total=count.total, completed=count.completed(), files=files, sent=sent)

        return show
