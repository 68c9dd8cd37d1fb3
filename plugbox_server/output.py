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
# In the machine-facing mode (serve.py) stdout carries the exchange with plug:
# messages and hook output go to stderr, which plug passes on.
_messages_to_stderr = False


def _gone(*_) -> None:
    global _caller_gone
    _caller_gone = True


def messages_to_stderr() -> None:
    global _messages_to_stderr
    _messages_to_stderr = True


def caller_gone() -> None:
    """The caller has gone away: say nothing more, hooks write to /dev/null."""
    _gone()


def say(message: str, err: bool = False) -> None:
    """`plugbox: message` on stdout (stderr with err), while anyone is reading."""
    if _caller_gone:
        return
    stream = sys.stderr if err or _messages_to_stderr else sys.stdout
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
    if _caller_gone:
        return subprocess.DEVNULL
    return 2 if _messages_to_stderr else None
