"""Run a command on a terminal of its own (a pty), type into it, read what it shows.

For what a person types into: `plug ssh`. A library, not a test module. Every wait
is bounded; a command that outlives the bound is killed and the test fails.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers import TIMEOUT


@dataclass
class Session:
    code: int
    shown: str  # everything the terminal showed, \r\n line ends and all


def on_terminal(argv: list[str], typed: str, *, env: dict[str, str], cwd: Path,
                type_when: Callable[[], object] | None = None) -> Session:
    """Start argv with a pty as stdin, stdout and stderr, type `typed` (at once, or
    once `type_when()` is true: a Ctrl-C at a chosen moment), read until it ends."""
    child, main = started_on_terminal(argv, env=env, cwd=cwd)
    if type_when is None:
        # Typed ahead: the terminal keeps it until the program reads it.
        os.write(main, typed.encode())
    shown = b""
    deadline = time.monotonic() + TIMEOUT
    while True:  # ends when the child and its children have closed the terminal
        if type_when is not None and type_when():
            os.write(main, typed.encode())
            type_when = None
        wait = 0.05 if type_when is not None else TIMEOUT
        if not select.select([main], [], [], wait)[0]:
            if type_when is not None and time.monotonic() < deadline:
                continue
            child.kill()
            child.wait(timeout=TIMEOUT)
            os.close(main)
            raise AssertionError(f"{argv[0]} showed nothing for {TIMEOUT} s: {shown!r}")
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return Session(child.wait(timeout=TIMEOUT), shown.decode(errors="replace"))


def started_on_terminal(argv: list[str], *, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, int]:
    """argv on a pty of its own, its controlling terminal (so that a typed Ctrl-C is a
    SIGINT to its process group); returns the process and the pty's main side."""
    main, terminal = pty.openpty()
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
                             start_new_session=True, preexec_fn=_controlling_terminal)
    os.close(terminal)
    return child, main


def _controlling_terminal() -> None:
    """In the child, after setsid: the pty becomes its controlling terminal, as a login's is."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
