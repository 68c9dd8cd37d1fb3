"""`plugbox` for people and scripts: parses the command line, calls one function of
operations.py (or report.py), reports. Every failure leaves through errors.exit_for.

No `from __future__ import annotations` here: typer would have to eval every
annotation, as a string, at each start (about 2 ms of every run of plugbox).
"""

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from plugbox_server import __version__, hooks, layout, operations, report
from plugbox_server.errors import (COMMAND_NOT_FOUND, COMMAND_NOT_RUN, USAGE, Aborted, PlugboxError, exit_for,
                                   for_caller)
from plugbox_server.names import VERSION_FORMS  # see VERSIONS in plugbox(1)
from plugbox_server.output import ask, say

app = typer.Typer(
    name="plugbox",
    help="Keep the versions of a service on this host: each version a directory in "
    "HOME/deploy/, the live one a symlink, rollback one atomic rename.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _home(ctx: typer.Context) -> Path:
    return Path(layout.home_from(ctx.obj))


def reports_errors(command):
    """The one place an expected failure becomes `plugbox: ...` on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (PlugboxError, OSError, KeyboardInterrupt) as error:
            code, message = exit_for(error, "interrupted; run `plugbox check` to see the state")
            say(for_caller(message), err=True)
            raise typer.Exit(code) from None

    return wrapper


RevOption = Annotated[Optional[str], typer.Option(
    "--rev", metavar="REV", show_default=False,
    help="Instead of a VERSION: the version deployed from this git revision (its first digits will do).")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", "-n", help="Say what would be removed and what kept, and why; remove nothing.")]
YesOption = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do not ask before removing more than one version (plugbox asks only on a terminal).")]


def _one_of(version: Optional[str], rev: Optional[str], required: bool = False) -> None:
    if version is not None and rev is not None:
        raise PlugboxError("give VERSION or --rev, not both", code=USAGE)
    if required and version is None and rev is None:
        raise PlugboxError("give VERSION or --rev REV", code=USAGE)


def _confirm(yes: bool):
    """Before removing more than one version, on a terminal: show the plan and ask."""
    if yes or not sys.stdin.isatty():
        return None

    def confirm(plan: operations.Plan) -> None:
        if len(plan.remove) <= 1:
            return
        for line in report.plan_lines(plan, kept=True):
            print(line, file=sys.stderr)
        if not ask(f"remove {len(plan.remove)} versions? [y/N] "):
            raise Aborted("called off", "nothing removed")

    return confirm


def _show_version(value: bool) -> None:
    if value:
        print(f"plugbox {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[Optional[str], typer.Option(
        "--home", metavar="DIR", envvar="PLUGBOX_HOME",
        help="The service's home, which holds deploy/ [default: $HOME].")] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print plugbox's version and exit.")] = False,
) -> None:
    # A string, not a Path: Path("") would be the current directory.
    ctx.obj = home


@app.command("next-version")
@reports_errors
def next_version(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the name, its previous version and the home as JSON.")] = False,
) -> None:
    """Create a new, empty version whose previous is the live version; print its name.

    Creates deploy/ on first use. The name, alone on stdout, is where the client
    uploads; `upgrade-to NAME` makes it live. With --json, one object: {"name",
    "previous" (the live version, or null), "home"}: all a deploy needs to know.
    """
    name, previous = operations.next_version(_home(ctx))
    if as_json:
        print(json.dumps({"name": name, "previous": previous, "home": str(_home(ctx).absolute())}))
        return
    print(name)


@app.command("upgrade-to")
@reports_errors
def upgrade_to(
    ctx: typer.Context,
    version: Annotated[Optional[str], typer.Argument(
        metavar="VERSION", show_default=False,
        help=f"A version made by next-version against the live one: {VERSION_FORMS}.")] = None,
    rev: RevOption = None,
) -> None:
    """Make VERSION live: post_upload, stop (or refresh), switch, start, check.

    Links the version's shared paths, runs its post_upload (a failure changes
    nothing), points live's next at it, runs the live version's stop unless
    VERSION has a refresh hook, switches live, runs VERSION's start or refresh,
    then its check. If those fail, live is switched back and brought up again.
    """
    _one_of(version, rev, required=True)
    operations.upgrade_to(_home(ctx), version, rev=rev)


@app.command("rollback-to")
@reports_errors
def rollback_to(
    ctx: typer.Context,
    version: Annotated[Optional[str], typer.Argument(
        metavar="[VERSION]", show_default=False,
        help=f"{VERSION_FORMS[0].upper()}{VERSION_FORMS[1:]} [default: the live version's previous].")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Use VERSION's refresh hook instead of stop + start.")] = False,
    rev: RevOption = None,
) -> None:
    """Switch live back to VERSION: stop the live version, switch, start and check.

    Never runs post_upload and rewrites no link, so `upgrade-to` the version
    rolled back from rolls forward again.
    """
    _one_of(version, rev)
    operations.rollback_to(_home(ctx), version, refresh, rev=rev)


@app.command("remove")
@reports_errors
def remove(
    ctx: typer.Context,
    versions: Annotated[Optional[list[str]], typer.Option(
        "-v", metavar="VERSION", show_default=False,
        help=f"A version to delete ({VERSION_FORMS}); repeat for more.")] = None,
    rev: RevOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
) -> None:
    """Delete versions, re-pointing the links that named them past them.

    Refuses the live version, and a version a running process uses (its cwd,
    executable, a mapped or open file, as /proc shows), naming the process.
    Deletes nothing outside the version's directory. On a terminal, asks
    before deleting more than one.
    """
    if not versions and rev is None:
        raise PlugboxError("name the versions to remove: -v VERSION (repeat for more), or --rev REV", code=USAGE)
    report.remove(_home(ctx), versions or [], sys.stdout, rev=rev, dry_run=dry_run, confirm=_confirm(yes))


@app.command("status")
@reports_errors
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print every version as JSON.")] = False,
    every: Annotated[bool, typer.Option("--all", "-a", help="List every version, not only the newest 20.")] = False,
) -> None:
    """List the newest 20 versions, newest first: state, revision, who, when, message.

    States: live; previous (in live's previous chain); retired (was live once,
    no longer in that chain); failed (a hook failed and plugbox switched back);
    pending (made, never live). A last line says how many older versions
    --all lists. With --json, every version, each with its links and whole
    record. Changes nothing.
    """
    report.status(_home(ctx), as_json, sys.stdout, every=every)


@app.command("prune")
@reports_errors
def prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", metavar="N", min=1, help="How many versions to keep.")] = 5,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
) -> None:
    """Remove versions until at most N remain: never-live ones first, then the oldest.

    Never removes the live version nor its previous, nor a version a running
    process uses: it says so and takes the next one. On a terminal, asks before
    removing more than one.
    """
    report.prune(_home(ctx), keep, sys.stdout, dry_run=dry_run, confirm=_confirm(yes))


@app.command("verify")
@reports_errors
def verify(
    ctx: typer.Context,
    version: Annotated[Optional[str], typer.Argument(
        metavar="[VERSION]", show_default=False,
        help=f"{VERSION_FORMS[0].upper()}{VERSION_FORMS[1:]} [default: the live version].")] = None,
    rev: RevOption = None,
) -> None:
    """Compare a version with what was uploaded; name every file that differs.

    Hashes every uploaded file again and compares with the version's manifest:
    prints each path changed, added or removed since the upload (a hard-linked
    file written in place changes every version that shares it), then what
    post_upload made and has changed since (compared by size and mtime only).
    Exits 1 when anything differs. Changes nothing.
    """
    _one_of(version, rev)
    report.verify(_home(ctx), version, sys.stdout, rev)


@app.command("check")
@reports_errors
def check(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed without losing a version.")] = False,
) -> None:
    """Verify the invariants of deploy/; print each problem; exit 1 if there is one.

    Changes nothing, unless --repair: then finish or undo an interrupted command
    (a half-done remove, leftover temporary links, broken link pairs) without
    losing a version, and say what was done.
    """
    report.check(_home(ctx), repair, sys.stdout)


@app.command("log")
@reports_errors
def log(
    ctx: typer.Context,
    output: Annotated[bool, typer.Option(
        "--output", help="Print instead what the hooks of past commands printed.")] = False,
    count: Annotated[Optional[int], typer.Option(
        "-n", "--count", metavar="N", min=0, show_default=False,
        help="Only the last N operations (with --output: the last N commands' output).")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", metavar="WHEN", show_default=False,
        help="Only what happened since WHEN: a time ago (30m, 2h, 3d, 1w) or a UTC date "
        "(2026-12-02, 2026-12-02T03:00).")] = None,
) -> None:
    """Print the history of operations: time, user, command, from, to, outcome.

    Reads deploy/.log, where every command that changes state adds one line.
    With --output, prints the kept output of hooks (deploy/.output), each
    command's part under a line with its time and command. Changes nothing.
    """
    report.log(_home(ctx), sys.stdout, output, count, since)


env_app = typer.Typer(
    help="The live version's environment: NAME=VALUE pairs that every hook, plugbox exec and "
    "plugbox shell get, kept beside each version (a rollback restores them).",
    no_args_is_help=False, invoke_without_command=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(env_app, name="env")


@env_app.callback()
@reports_errors
def env_list(ctx: typer.Context) -> None:
    """List the live version's variables: name, source ([env] of plugbox.toml, or plug env
    set), a short digest of the value, and the version that last changed it. Never a value."""
    if ctx.invoked_subcommand is None:
        report.env(_home(ctx), "list", [], [], sys.stdout)


@env_app.command("get")
@reports_errors
def env_get(ctx: typer.Context,
            name: Annotated[str, typer.Argument(metavar="NAME", help="The variable whose value to print.")]) -> None:
    """Print one value of the live version's environment, on purpose."""
    report.env(_home(ctx), "get", [name], [], sys.stdout)


@env_app.command("diff")
@reports_errors
def env_diff(ctx: typer.Context,
             versions: Annotated[Optional[list[str]], typer.Argument(
                 metavar="[A [B]]", help="Default: live's previous and live; one: A and live.",
                 show_default=False)] = None) -> None:
    """Name the variables added, removed or changed from version A to version B."""
    report.env(_home(ctx), "diff", [], versions or [], sys.stdout)


MessageOption = Annotated[Optional[str], typer.Option(
    "-m", "--message", metavar="TEXT", help="Why: kept in the log and the new version's record.")]


@env_app.command("set")
@reports_errors
def env_set(ctx: typer.Context,
            name: Annotated[str, typer.Argument(metavar="NAME", help="The variable to set; its value comes "
                                                "from standard input.")],
            message: MessageOption = None) -> None:
    """Set NAME to what standard input holds (less one trailing newline): a new version
    from the live one's files, with the changed environment, made live as a deploy is.
    The value is never on a command line; it is read without echo on a terminal."""
    value = _value_of(name)
    name_, live = operations.change_environment(_home(ctx), {name: value}, [], origin={"message": message})
    say(f"version {name_} is live (was {live}): {name} set")


@env_app.command("unset")
@reports_errors
def env_unset(ctx: typer.Context,
              names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The variables to remove.")],
              message: MessageOption = None) -> None:
    """Remove variables set with `env set`: a new version, made live as a deploy is."""
    name_, live = operations.change_environment(_home(ctx), {}, names, origin={"message": message})
    say(f"version {name_} is live (was {live}): {' '.join(names)} unset")


def _value_of(name: str) -> str:
    """A value from standard input: typed without echo on a terminal, else all of it
    less one trailing newline (so that `echo "$X" | plugbox env set NAME` works)."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{name}: ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


@app.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@reports_errors
def exec_(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(
        metavar="COMMAND...", help="The program and its arguments; put -- before them.")],
) -> None:
    """Run COMMAND in the live version's directory, with the hooks' environment.

    What a systemd unit's ExecStart uses: COMMAND replaces plugbox (exec), so its
    output is its own and plugbox exits with its status, and the unit never names
    a version. It gets PLUGBOX_HOME, PLUGBOX_VERSION, PLUGBOX_VERSION_DIR and
    PLUGBOX_PREVIOUS, as hooks do. Run by plug exec, plugbox stays beside COMMAND
    and ends it when plug's connection goes. Refused when there is no live
    version. Takes no lock and changes nothing itself.
    """
    directory, env = operations.exec_context(_home(ctx))
    _run(command, directory, env)


@app.command("shell")
@reports_errors
def shell(ctx: typer.Context) -> None:
    """Open a login shell in HOME/live, with the hooks' environment.

    The shell is $SHELL (else /bin/sh), as `plug ssh` opens it; it ends when its
    terminal or plug's connection goes. Refused when there is no live version.
    """
    home = _home(ctx)
    _, env = operations.exec_context(home)
    live = home.absolute() / layout.HOME_LIVE
    _run([os.environ.get("SHELL") or "/bin/sh", "-l"], live, {**env, "PWD": str(live)})


def _run(command: list[str], directory: Path, env: dict[str, str]) -> None:
    """COMMAND in `directory`: attached to plug, which may go away, or in plugbox's place."""
    sys.stdout.flush()
    if os.environ.get("PLUGBOX_CLIENT") == "plug":
        raise typer.Exit(hooks.run_attached(command, directory, env))
    try:
        os.chdir(directory)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise PlugboxError(f"{command[0]!a}: command not found on this host", code=COMMAND_NOT_FOUND) from None
    except OSError as error:
        raise PlugboxError(f"could not run {command[0]!a}: {error.strerror}", code=COMMAND_NOT_RUN) from None


def main() -> None:
    app()
