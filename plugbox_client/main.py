"""The `plug` executable: start the ssh connection first, then load the rest of plug.

The commands that work on the host spend most of their time waiting for ssh to
connect; loading typer and plug's own modules takes tens of milliseconds more.
So this module, which imports little, finds the command and its plugbox.toml
and starts the session to the host before the CLI is even imported; the
command then takes that session over (transport.open_session). Anything
unusual here (no config, a typo, --help) just skips the head start: the CLI
then reports it as usual. Like the CLI, it takes -c and -s before the command
or after it.
"""

import os
import signal
import sys

from plugbox_server.errors import INTERRUPTED

# The commands that talk to plugbox on the host through one session.
_HOST_COMMANDS = {"deploy", "rollback", "status", "log", "remove", "prune", "check", "verify", "exec", "ssh",
                  "env"}
_VALUE_OPTIONS = {"-c", "--config", "-m", "--message", "--wait-lock", "--keep", "--batch", "--rev", "--since",
                  "--count", "--artifact"}


_interrupts = 0


def _interrupted(signum, frame):
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) end plug through its cleanup, with
    a one-line message. Another while plug is ending what the first interrupted (the
    host finishing or undoing a deploy, rsync stopping) says so and lets it end; a
    third leaves at once (what plug started dies with it)."""
    global _interrupts
    _interrupts += 1
    if _interrupts == 1:
        raise KeyboardInterrupt
    if _interrupts == 2:
        os.write(2, b"plug: still ending what was interrupted, in a few seconds; "
                    b"interrupt once more to leave at once\n")
        return
    os.write(2, b"plug: left at once; see `plug status`\n")
    os._exit(INTERRUPTED)


def _parse(argv: list[str]):
    """(command, -c FILE, -s STAGE, the other arguments, --host NAME), as far as a quick look tells."""
    command, config, stage, host, arguments, words, options = None, None, None, None, [], iter(argv), True
    for word in words:
        if options and command == "log" and word == "-n":  # log's -n N; elsewhere, --dry-run
            next(words, None)
            continue
        if options and word in ("-h", "--help", "--version", "-n", "--dry-run"):
            return None, None, None, [], None
        if options and word == "--":
            options = False
        elif options and (word in ("-c", "--config", "-s", "--stage") or word.startswith(("--config=", "--stage="))):
            value = word.partition("=")[2] if "=" in word else next(words, None)
            given = config if word.startswith(("-c", "--config")) else stage
            if given is not None and given != value:  # the CLI refuses it: connect nowhere
                return None, None, None, [], None
            if word.startswith(("-c", "--config")):
                config = value
            else:
                stage = value
        elif options and word == "--host":  # status, exec, ssh: that host alone
            host = next(words, None)
        elif options and word in _VALUE_OPTIONS:
            next(words, None)
        elif options and word.startswith("-"):
            pass
        elif command is None:
            command = word
        else:
            arguments.append(word)
            options = options and command != "exec"  # exec: what follows is the command's
    return command, config, stage, arguments, host


def _value(argv: list[str], option: str) -> str | None:
    """The value of `option` (`--option VALUE` or `--option=VALUE`), or None."""
    for i, word in enumerate(argv):
        if word == option:
            return argv[i + 1] if i + 1 < len(argv) else ""
        if word.startswith(option + "="):
            return word.partition("=")[2]
    return None


def start_ahead(argv: list[str]) -> None:
    command, config, stage, arguments, host = _parse(argv)
    if command not in _HOST_COMMANDS:
        return
    if command in ("rollback", "remove", "verify"):
        from plugbox_server.names import is_version_spec

        if not all(map(is_version_spec, arguments)):
            return  # refused before anything connects
    # Only a deploy of what [build] says needs [build] to say it (as the CLI loads it);
    # an --artifact that is no file is refused before anything connects.
    artifact = _value(argv, "--artifact")
    if artifact is not None and not os.path.isfile(artifact):
        return
    from plugbox_client import config as cfg
    from plugbox_client import transport

    try:
        loaded = cfg.load_config(config or None, stage=stage,
                                 upload_required=command == "deploy" and artifact is None)
        transport.start_ahead(loaded.for_host(host) if host in loaded.hosts else loaded)
    except Exception:  # the CLI finds and reports the problem itself
        pass


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    try:
        start_ahead(sys.argv[1:])
        from plugbox_client.cli import main as cli

        cli()
    except KeyboardInterrupt:  # before a command could say it in its own words
        os.write(2, b"plug: interrupted\n")
        sys.exit(INTERRUPTED)
    except SystemExit as done:  # how typer ends every command
        _leave(done)


def _leave(done: SystemExit) -> None:
    """Exit with `done`'s status now, without the interpreter's teardown of every
    module plug loaded (typer's, click's, rich's ...: about 10 ms at the end of each
    command). The output is flushed first; the sessions, rsync and the temporary
    directories of the command were closed when it returned; the only exit hook
    registered by then is logging's, which has nothing to flush. When something
    would still need that teardown (a thread of plug's still running, output that
    cannot be flushed), the interpreter ends as usual."""
    import threading

    code = done.code
    if not (code is None or isinstance(code, int)) or threading.active_count() > 1:
        raise done
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise done from None
    os._exit(code or 0)
