"""plugbox's own messages, and its hooks' output, to a caller who may go away.

A dropped ssh connection, or a Ctrl-C on plug, closes the pipes plugbox writes
to. A command that changes state then goes on to its end (or switches back) in
silence instead of dying between two of its steps with a service stopped: the
log still records how it ended, and the kept hook output what the hooks said.
Hooks never write to the caller themselves: plugbox relays their output (see
hooks.run), so a caller that goes away never kills a hook with SIGPIPE.

Where messages go is one setting: stdout by default, stderr once
`messages_to_stderr()` is called (a mode in which stdout carries data only).
Errors (`say(..., err=True)`) always go to stderr.
"""

import sys

_caller_gone = False
_messages_to_stderr = False


def _gone(*_) -> None:
    global _caller_gone
    _caller_gone = True


def messages_to_stderr() -> None:
    """From now on, say()'s messages and hook output go to stderr, not stdout."""
    global _messages_to_stderr
    _messages_to_stderr = True


def _stream(err: bool = False):
    # Looked up at each call: tests (and typer's runner) replace sys.stdout.
    return sys.stderr if err or _messages_to_stderr else sys.stdout


def say(message: str, err: bool = False) -> None:
    """`plugbox: message` on stdout (stderr with err), while anyone is reading."""
    if _caller_gone:
        return
    try:
        print(f"plugbox: {message}", file=_stream(err), flush=True)
    except (OSError, ValueError):  # EPIPE: nobody reads any more; ValueError: closed
        _gone()


def relay(chunk: bytes) -> None:
    """Pass a piece of hook output to the caller, while anyone is reading."""
    if _caller_gone:
        return
    stream = _stream()
    try:
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            stream.flush()
            binary.write(chunk)
            binary.flush()
        else:
            stream.write(chunk.decode(errors="replace"))
            stream.flush()
    except (OSError, ValueError):
        _gone()


def keep_going_when_the_caller_goes() -> None:
    import signal  # only commands that change state need it

    # A handler, not SIG_IGN: exec resets handlers, so the processes that hooks
    # start still get the default SIGHUP.
    signal.signal(signal.SIGHUP, _gone)


def the_caller_went_away() -> None:
    """Said by the machine-facing mode when its input ends: say nothing more."""
    _gone()


def ask(question: str) -> bool:
    """Ask a person at a terminal a yes/no question on stderr; True for y or yes.
    The end of input, or anything else, is no."""
    try:
        sys.stderr.write(question)
        sys.stderr.flush()
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")
