"""`plug`: parses the command line, calls one function of driver.py (or config.py), reports.

The one place where an expected failure becomes `plug: <what>: <why>; <next step>` on
stderr and an exit status, through errors.exit_for, as in plugbox. The server
commands pass plugbox's own output and exit status through.
"""

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from plugbox_client import completion
from plugbox_client import config as cfg
from plugbox_server import __version__
from plugbox_server import protocol as P
from plugbox_server.errors import USAGE, PlugboxError, exit_for
from plugbox_server.names import VERSION_FORMS

app = typer.Typer(
    name="plug",
    help="Deploy this project to its host with plugbox: each version a directory, "
    "the live one a symlink, rollback one atomic rename. Reads plugbox.toml, "
    "found upward from the current directory.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -c and -s go before the command or after it, as people put them.
ConfigOption = Annotated[Optional[Path], typer.Option(
    "-c", "--config", metavar="FILE", dir_okay=False,
    help="The plugbox.toml to use [default: the nearest one upward from here].")]
StageOption = Annotated[Optional[str], typer.Option(
    "-s", "--stage", metavar="NAME", autocompletion=completion.stages,
    help="Use the [stages.NAME] table of plugbox.toml: its host or hosts, jump and home.")]
RevOption = Annotated[Optional[str], typer.Option(
    "--rev", metavar="REV", show_default=False,
    help="Instead of VERSION: the version deployed from this git revision (its first digits will do).")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", "-n", help="Say what would be removed and what kept, and why; remove nothing.")]
YesOption = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do not ask before removing more than one version (plug asks only when "
    "standard input is a terminal).")]


def reported(run, /, *args, interrupted: str = "interrupted; see `plug status`", **kwargs) -> int:
    """run(*args, **kwargs); its expected failure as one `plug: ...` line on stderr; its
    exit status (what plug exits with, and a fabfile's task too)."""
    try:
        code = run(*args, **kwargs)
    except (PlugboxError, OSError, KeyboardInterrupt) as error:
        code, message = exit_for(error, interrupted)
        if message:  # none: the host has said why already
            print(f"plug: {message}", file=sys.stderr)
    return code or 0


HostOption = Annotated[Optional[str], typer.Option(
    "--host", metavar="NAME", help="With several hosts: the one to use, by its name in plugbox.toml.")]


def reports_errors(interrupted: str = "interrupted; see `plug status`"):
    """The command's failures as one line on stderr and an exit status;
    `interrupted`: what a Ctrl-C that reaches plug itself says."""
    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            code = reported(command, *args, interrupted=interrupted, **kwargs)
            if code:
                raise typer.Exit(code)

        return wrapper

    return decorate


_before: dict[str, Optional[object]] = {"config": None, "stage": None}  # -c, -s given before the command


def _given(option: str, name: str, after):
    """An option given before the command or after it; both, and different: bad usage."""
    before = _before[name]
    if before is not None and after is not None and before != after:
        raise PlugboxError(f"{option} is given twice, before the command and after it",
                           "give it once", code=USAGE)
    return after if after is not None else before


def _load(config: Optional[Path], stage: Optional[str] = None, upload_required: bool = False) -> cfg.Config:
    """plugbox.toml; `upload_required`: its [build] must say what a version is made of."""
    return cfg.load_config(_given("-c", "config", config), stage=_given("-s", "stage", stage),
                           upload_required=upload_required)


def _named(versions: list[str], rev: Optional[str], one: bool = True) -> None:
    """The versions on plug's command line, checked before anything connects."""
    from plugbox_client import driver

    if one and versions and rev is not None:
        raise PlugboxError("give VERSION or --rev, not both", code=USAGE)
    for name in versions:
        driver.version_argument(name)
    if rev is not None:
        driver.revision_argument(rev)


def _on_hosts(loaded: cfg.Config, command: str, confirm: bool = False, **fields) -> int:
    """A plugbox command on the host (every host), its output and status passed through."""
    from plugbox_client import driver

    return driver.server_command(loaded, P.request(command, loaded.home, origin=driver.caller(), **fields),
                                 confirm=confirm)


def _ask(yes: bool, dry_run: bool) -> bool:
    """Whether to ask before removing versions: on a terminal, unless --yes or --dry-run."""
    return not (yes or dry_run) and sys.stdin.isatty()


def _report(lines: list[str]) -> None:
    for line in lines:
        print(line)


def _show_version(value: bool) -> None:
    if value:
        print(f"plug {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print plug's version and exit.")] = False,
    stage: StageOption = None,
    config: ConfigOption = None,
) -> None:
    _before.update(config=config, stage=stage)


@app.command()
@reports_errors()
def deploy(
    config: ConfigOption = None,
    message: Annotated[Optional[str], typer.Option(
        "-m", "--message", metavar="TEXT", help="Why: kept in the host's log with the version.")] = None,
    wait_lock: Annotated[float, typer.Option(
        "--wait-lock", metavar="SECONDS", min=0,
        help="If another command holds the host's lock, wait up to SECONDS for it [default: fail at once].")] = 0,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "-n", help="Read the host's state and say what a deploy would do; change nothing.")] = False,
    batch: Annotated[Optional[int], typer.Option(
        "--batch", metavar="N", min=1, show_default=False,
        help="With several hosts: switch N hosts at a time, each group's check passing before the next "
        "[default: all at once].")] = None,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="With several hosts: when one fails to switch, carry on with the others "
        "instead of switching every host back.")] = False,
    artifact: Annotated[Optional[Path], typer.Option(
        "--artifact", metavar="FILE", show_default=False,
        help="Deploy FILE, built already (prepare is not run), instead of what [build] says: an archive "
        "(.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2, .zip) becomes the version's files, any other file "
        "its one file.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Make a new version even where the live one was made from the same "
        "artifact (same sha256).")] = False,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", help="No progress bars: plain lines only, as when standard error is not a terminal.")] = False,
    stage: StageOption = None,
) -> None:
    """Deploy the project: build, upload, make live, as one transaction on the host.

    Runs [build] prepare here while ssh connects. On the host, one plugbox holds
    the lock throughout: it makes the new version in a staging directory, rsync
    fills it (unchanged files hard-linked from the live one), it appears under
    its name once complete, then post_upload, stop, switch, start and check run,
    their output printed as they run. A failure or Ctrl-C before the switch
    leaves the host as it was; once the upload is complete, the host finishes
    (or switches back) by itself. Ends with what is live, the files sent and
    hard-linked, and the seconds each step took.

    With several hosts, the same version is prepared on all of them in parallel
    (any failure: none switches), then switched, all at once or --batch N at a
    time; if one fails, every host is put back on its version. Ends with a
    table: host, live version, result, seconds.

    An artifact ([build] artifact, or --artifact FILE) is unpacked here and sent
    the same way; a member that could write outside the version is refused
    before anything is sent. Where the live version was made from the same
    artifact, nothing is deployed (exit 0) unless --force.

    On a terminal, the upload shows a progress bar per host: entries in place,
    bytes sent and rate, time left.
    """
    from plugbox_client import driver

    if artifact is not None and not artifact.is_file():
        raise PlugboxError(f"--artifact {artifact}: no such file", "name the file the build made; "
                           "nothing was done", code=USAGE)
    loaded = _load(config, stage, upload_required=artifact is None)
    if artifact is not None:
        artifact = artifact.absolute()
    _report(driver.dry_run(loaded, artifact, force) if dry_run else
            driver.deploy(loaded, message, wait_lock, batch or 0, keep_going, artifact, force, quiet=quiet))


@app.command()
@reports_errors()
def rollback(
    version: Annotated[Optional[str], typer.Argument(
        metavar="[VERSION]", autocompletion=completion.versions, show_default=False,
        help=f"The version to make live: {VERSION_FORMS} [default: live's previous].")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Use VERSION's refresh hook instead of stop + start.")] = False,
    wait_lock: Annotated[float, typer.Option(
        "--wait-lock", metavar="SECONDS", min=0,
        help="If another command holds the host's lock, wait up to SECONDS for it [default: fail at once].")] = 0,
    rev: RevOption = None,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> None:
    """Make an earlier version live again.

    Stops the live version, switches live to VERSION, starts and checks it.
    `plug status` shows the versions; rolling forward is `plug rollback NEWER`.
    VERSION may be a unique prefix of a name (20261202T03), live~N (N versions
    back from live), or, with --rev, the git revision it was deployed from.
    Ends with what is live and the seconds it took. With several hosts, every
    host goes to the same version (by default the previous of the newest live
    one), and nothing is rolled back unless every host has it.
    """
    from plugbox_client import driver

    _named([version] if version else [], rev)
    _report(driver.rollback(_load(config, stage), version, refresh, wait_lock, rev=rev))


@app.command()
@reports_errors()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
    every: Annotated[bool, typer.Option(
        "--all", "-a", help="Every version, not only the newest 20; with several hosts, every host's "
        "versions, not one line per host.")] = False,
    host: HostOption = None,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """List the versions on the host.

    The newest 20, newest first (--all: every one), each with its state (live,
    previous, retired, failed, pending), revision, who made it, when, and the
    deploy message; --json has every version's links and whole record. With
    several hosts, one line per host: its live version, revision, who, when
    and message, then a line that says whether their live versions differ;
    --all lists every host's versions (each line starting with the host's
    name), --host NAME one host's.
    """
    from plugbox_client import driver

    loaded = driver.on_host(_load(config, stage), host)
    brief = loaded.several and not (every or as_json)
    return driver.status(loaded, P.request("status", loaded.home, json=as_json or None, brief=brief or None,
                                           all=every or None, origin=driver.caller()))


@app.command()
@reports_errors()
def log(
    output: Annotated[bool, typer.Option(
        "--output", help="Print instead what the hooks of past commands printed, as the host kept it.")] = False,
    count: Annotated[Optional[int], typer.Option(
        "-n", "--count", metavar="N", min=0, show_default=False,
        help="Only the last N operations (with --output: the last N commands' output).")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", metavar="WHEN", show_default=False,
        help="Only what happened since WHEN: a time ago (30m, 2h, 3d, 1w) or a UTC date "
        "(2026-12-02, 2026-12-02T03:00).")] = None,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """Print the history of operations on the host.

    One line each: time, user, command, live before, live after, outcome.
    With --output, what the hooks printed (the host keeps it, whether or not
    anyone was listening): how a deploy interrupted by Ctrl-C ended, say.
    """
    from plugbox_server.names import since as moment

    if since is not None:
        moment(since)  # bad usage, before anything connects
    return _on_hosts(_load(config, stage), "log", output=output or None, count=count, since=since)


@app.command()
@reports_errors()
def remove(
    versions: Annotated[Optional[list[str]], typer.Argument(
        metavar="VERSION...", autocompletion=completion.versions, show_default=False,
        help=f"The versions to delete: {VERSION_FORMS}.")] = None,
    rev: RevOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """Delete versions on the host.

    Never the live one, nor one a running process uses; the links that named
    them are re-pointed past them. On a terminal, shows them and asks before
    deleting more than one.
    """
    if not versions and rev is None:
        raise PlugboxError("name the versions to remove: VERSION..., or --rev REV", code=USAGE)
    _named(versions or [], rev, one=False)
    several = len(versions or []) + (rev is not None) > 1  # one name removes one version at most
    return _on_hosts(_load(config, stage), "remove", confirm=_ask(yes, dry_run) and several,
                     versions=versions or None, rev=rev, dry_run=dry_run or None)


@app.command()
@reports_errors()
def prune(
    keep: Annotated[int, typer.Option("--keep", metavar="N", min=1, help="How many versions to keep.")] = 5,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """Delete old versions, keeping at most N.

    Never-live versions go first, then the oldest; never the live version nor its
    previous, nor one a running process uses. On a terminal, shows what would go
    and asks before deleting more than one.
    """
    return _on_hosts(_load(config, stage), "prune", confirm=_ask(yes, dry_run), keep=keep,
                     dry_run=dry_run or None)


@app.command()
@reports_errors()
def verify(
    version: Annotated[Optional[str], typer.Argument(
        metavar="[VERSION]", autocompletion=completion.versions, show_default=False,
        help=f"The version to verify: {VERSION_FORMS} [default: the live one].")] = None,
    rev: RevOption = None,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """Compare a version on the host with what was uploaded.

    Names every file changed, added or removed since the upload (a hard-linked
    file written in place changes every version sharing it); exits 1 when
    anything differs.
    """
    _named([version] if version else [], rev)
    return _on_hosts(_load(config, stage), "verify", version=version, rev=rev)


@app.command()
@reports_errors()
def check(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed without losing a version.")] = False,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """Verify the versions and links on the host.

    Prints each problem and exits 1 if there is one; --repair fixes what can be
    fixed without losing a version.
    """
    return _on_hosts(_load(config, stage), "check", repair=repair or None)


@app.command()
@reports_errors()
def bootstrap(
    into_home: Annotated[bool, typer.Option(
        "--into-home", help="Install into HOME/.local/bin, for this service alone, "
        "instead of the login's ~/.local/bin.")] = False,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> None:
    """Install or upgrade plugbox on the host, and create the layout.

    The host needs only python3 (3.11 or newer) and rsync. plugbox travels as
    one self-contained zipapp; the host's python3 unpacks it into
    ~/.local/lib/plugbox/ of the ssh login and compiles it once, and
    ~/.local/bin/plugbox runs it: once per login, for every service it runs. plug finds it there even when that
    directory is not on the PATH of an ssh session. Also creates HOME/deploy/,
    HOME/shared/ and HOME/config/. Says where it installed plugbox.
    """
    import tempfile

    from plugbox_client import bootstrap as b
    from plugbox_client import driver

    loaded = _load(config, stage)
    with tempfile.TemporaryDirectory(prefix="plug-") as scratch:
        _report(driver.bootstrap(loaded, b.build(Path(scratch, "plugbox")), into_home=into_home))


@app.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@reports_errors("interrupted")
def exec_(
    command: Annotated[list[str], typer.Argument(
        metavar="COMMAND...", help="The program to run on the host and its arguments, after --.", show_default=False)],
    tty: Annotated[bool, typer.Option(
        "-t", "--tty", help="Give COMMAND a terminal on the host, for programs you type into.")] = False,
    host: HostOption = None,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> int:
    """Run a command on the host, in the live version's directory.

    COMMAND gets the environment the hooks get (PLUGBOX_HOME, PLUGBOX_VERSION,
    PLUGBOX_VERSION_DIR, PLUGBOX_PREVIOUS); its output streams here, and plug
    exits with its status; it ends when plug does. With several hosts it runs on
    every one at once, each line prefixed by its host, and plug exits with the
    status of the first host where it failed; --host NAME picks one. Options for
    plug go before --.
    """
    from plugbox_client import driver

    return driver.exec_in_live(driver.on_host(_load(config, stage), host), command, tty)


@app.command("ssh")
@reports_errors("interrupted")
def ssh(host: HostOption = None, config: ConfigOption = None, stage: StageOption = None) -> int:
    """Open an interactive shell on the host, in HOME/live.

    A login shell (the login's $SHELL, else /bin/sh) with the live version's
    environment, over the same ssh configuration as every plug command, jump
    hosts included. Exits with the shell's status. With several hosts, --host
    NAME says which.
    """
    from plugbox_client import driver

    return driver.shell_in_live(driver.on_host(_load(config, stage), host))


@app.command()
@reports_errors()
def disconnect(host: HostOption = None, config: ConfigOption = None, stage: StageOption = None) -> None:
    """Close the connections kept to the hosts, now.

    With keep_connection in [service] of plugbox.toml, or PLUG_KEEP_CONNECTION
    in the environment, each command leaves its ssh connection up for that many
    seconds, so that the next one skips the login. This closes it on every host
    (--host NAME: that one), and says for each whether one was open.
    """
    from plugbox_client import driver

    _report(driver.disconnect(driver.on_host(_load(config, stage), host)))


env_app = typer.Typer(
    help="The environment of the live version on the host: settings and secrets, NAME=VALUE, "
    "versioned with the code (a rollback restores them). Values are never shown but by `env get`.",
    invoke_without_command=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(env_app, name="env")


@env_app.callback()
@reports_errors()
def env_list(ctx: typer.Context, config: ConfigOption = None, stage: StageOption = None) -> int:
    """List the live version's variables: name, source ([env] of plugbox.toml, or plug
    env set), a short digest of the value, and the version that last changed it."""
    if ctx.invoked_subcommand is None:
        return _on_hosts(_load(config, stage), "env", action="list")
    return 0


@env_app.command("get")
@reports_errors()
def env_get(name: Annotated[str, typer.Argument(metavar="NAME", help="The variable whose value to print.")],
            config: ConfigOption = None, stage: StageOption = None) -> int:
    """Print one value of the live version's environment, on purpose."""
    return _on_hosts(_load(config, stage), "env", action="get", names=[name])


@env_app.command("diff")
@reports_errors()
def env_diff(versions: Annotated[Optional[list[str]], typer.Argument(
                 metavar="[A [B]]", autocompletion=completion.versions, show_default=False,
                 help=f"Versions ({VERSION_FORMS}) [default: live's previous and live; one: A and live].")] = None,
             config: ConfigOption = None, stage: StageOption = None) -> int:
    """Name the variables added, removed or changed from version A to version B."""
    _named(versions or [], None, one=False)
    return _on_hosts(_load(config, stage), "env", action="diff", versions=versions or None)


WaitLockOption = Annotated[float, typer.Option(
    "--wait-lock", metavar="SECONDS", min=0,
    help="If another command holds the host's lock, wait up to SECONDS for it [default: fail at once].")]
MessageOption = Annotated[Optional[str], typer.Option(
    "-m", "--message", metavar="TEXT", help="Why: kept in the host's log and the new version's record.")]


@env_app.command("set")
@reports_errors()
def env_set(
    assignments: Annotated[list[str], typer.Argument(
        metavar="NAME=VALUE...|NAME", help="Values to set; a lone NAME reads its value from standard input.")],
    message: MessageOption = None,
    wait_lock: WaitLockOption = 0,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> None:
    """Set variables: a new version from the live one's files, with the changed environment,
    made live as a deploy is (post_upload, stop or refresh, switch, start, check).

    NAME=VALUE puts the value on plug's own command line (and in your shell's history):
    for a secret, give NAME alone, and its value on standard input (typed without echo,
    or piped: all of it, less one trailing newline). Values travel to the host inside
    the ssh session, never on a command line there.
    """
    from plugbox_client import driver
    from plugbox_server import environment

    values = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals:
            if len(assignments) > 1:
                raise PlugboxError(f"{name}: a lone NAME takes its value from standard input, alone",
                                   "set it by itself, or give NAME=VALUE", code=USAGE)
            value = _value_from_stdin(name)
        values[name] = value
    environment.checked(values)
    _report(driver.deploy(_load(config, stage), message, wait_lock, change=(values, [])))


@env_app.command("unset")
@reports_errors()
def env_unset(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Variables set with `plug env set`.")],
    message: MessageOption = None,
    wait_lock: WaitLockOption = 0,
    config: ConfigOption = None,
    stage: StageOption = None,
) -> None:
    """Remove variables: a new version, made live as a deploy is."""
    from plugbox_client import driver
    from plugbox_server import environment

    for name in names:
        why = environment.check_name(name)
        if why:
            raise PlugboxError(why, "nothing changed", code=USAGE)
    _report(driver.deploy(_load(config, stage), message, wait_lock, change=({}, list(names))))


def _value_from_stdin(name: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{name}: ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


@app.command()
@reports_errors()
def init(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help='Where to deploy: [user@]host, or "local".')],
    home: Annotated[Optional[str], typer.Option("--home", metavar="DIR", help="The service's home on the host.")] = None,
    jump: Annotated[Optional[list[str]], typer.Option("--jump", metavar="HOST", help="An ssh jump host; repeat for more.")] = None,
    shared: Annotated[Optional[list[str]], typer.Option("--shared", metavar="PATH", help="A path that outlives versions; repeat for more.")] = None,
    prepare: Annotated[Optional[list[str]], typer.Option("--prepare", metavar="LINE", help="A shell line run before upload; repeat for more.")] = None,
    upload: Annotated[Optional[list[str]], typer.Option("--upload", metavar="PATH", help="A path to upload; repeat for more.")] = None,
    version_dir: Annotated[Optional[str], typer.Option("--version-dir", metavar="DIR", help="The directory whose contents become the version [default: .].")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", metavar="PATTERN", help="An rsync pattern left out of the upload; repeat for more [default: .git, __pycache__, *.pyc].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    config: Annotated[Optional[Path], typer.Option(
        "-c", "--config", metavar="FILE", dir_okay=False, show_default=False,
        help=f"Where to write [default: ./{cfg.FILENAME}].")] = None,
) -> None:
    """Write a commented plugbox.toml here.

    Asks nothing: what the options do not set is left commented out as an example.
    Refuses to replace an existing file unless --force.
    """
    if upload and version_dir is not None:
        raise PlugboxError("--upload and --version-dir exclude each other", "give one of them", code=USAGE)
    text = cfg.render_config(
        host, jump=tuple(jump or ()), home=home, shared=tuple(shared or ()), prepare=tuple(prepare or ()),
        upload=tuple(upload or ()), version_dir=version_dir, exclude=tuple(exclude) if exclude else None,
    )
    print(f"wrote {cfg.write_config(_given('-c', 'config', config) or Path(cfg.FILENAME), text, force=force)}")


def main() -> None:
    app(prog_name="plug")
