"""plugbox's own messages to its caller, who may go away in the middle of a command.

A dropped ssh connection, or a Ctrl-C on plug, closes the pipes plugbox writes
to. A command that changes state then goes on to its end (or switches back) in
silence instead of dying between two of its steps with a service stopped: the
log still records how it ended. From then on hooks write to /dev/null, since a
hook writing to the closed pipe would die of SIGPIPE and count as failed.
"""

import signal
import subprocess
import sys

_caller_gone = False


def _gone(*_) -> None:
    global _caller_gone
    _caller_gone = True


def say(message: str, err: bool = False) -> None:
    """`plugbox: message` on stdout (stderr with err), while anyone is reading."""
    if _caller_gone:
        return
    stream = sys.stderr if err else sys.stdout
    try:
        print(f"plugbox: {message}", file=stream, flush=True)
    except OSError:  # EPIPE: nobody reads any more
        _gone()


def keep_going_when_the_caller_goes() -> None:
    # A handler, not SIG_IGN: exec resets handlers, so the processes that hooks
    # start still get the default SIGHUP.
    signal.signal(signal.SIGHUP, _gone)


def hook_output():
    """What a hook's stdout and stderr are: ours, or /dev/null once the caller has gone."""
    return subprocess.DEVNULL if _caller_gone else None
