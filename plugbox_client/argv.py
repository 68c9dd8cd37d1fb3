"""The argument lists of every ssh and rsync that plug runs.

Pure, no I/O: each function returns a list of strings, and the tests compare them by
equality. Nothing here is ever given to a shell on this machine. The one string that
reaches a shell is the remote command of ssh, which ssh joins with spaces and hands
to the login shell on the host: it is always a single argument made by shlex.join
from validated parts.
"""

import shlex
from pathlib import PurePosixPath

def plugbox_env(user: str) -> dict[str, str]:
    """What plug tells plugbox: that plug called (its hints then name plug's commands)
    and who is at the keyboard (the user its log records, not the service's login)."""
    return {"PLUGBOX_CLIENT": "plug", "PLUGBOX_USER": user}


# Run plugbox on the host: the copy `plug bootstrap` installed in HOME/.local/bin
# (HOME is $1, or the login's $HOME when $1 is empty), else the one on PATH. A
# non-interactive ssh session rarely has ~/.local/bin on its PATH, hence the look.
# $2 and $3 are plugbox_env()'s values: arguments, never part of the script's text.
FIND_PLUGBOX = (
    'h=${1:-$HOME}; PLUGBOX_CLIENT=$2; PLUGBOX_USER=$3; shift 3; '
    'export PLUGBOX_CLIENT PLUGBOX_USER; p="$h/.local/bin/plugbox"; '
    'if [ ! -x "$p" ]; then p=$(command -v plugbox) || { '
    'echo "plugbox is not installed on this host (not in $h/.local/bin nor on PATH)" >&2; exit 127; }; fi; '
    'exec "$p" "$@"'
)

# Install a plugbox zipapp read from stdin into HOME/.local/bin (atomically, so a
# second bootstrap upgrades it in place) and create the layout.
INSTALL_PLUGBOX = (
    "set -e; h=${1:-$HOME}; "
    "command -v python3 >/dev/null || { echo 'python3 is not installed on this host' >&2; exit 1; }; "
    "python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || "
    '{ echo "plugbox needs python3 3.11 or newer; this host has $(python3 --version 2>&1)" >&2; exit 1; }; '
    'mkdir -p "$h/.local/bin" "$h/deploy" "$h/shared" "$h/config"; '
    't="$h/.local/bin/.plugbox.$$"; cat >"$t"; chmod 755 "$t"; mv -f "$t" "$h/.local/bin/plugbox"'
)

# Exit status of FIND_PLUGBOX when there is no plugbox to run.
NOT_INSTALLED = 127


def plugbox_args(home: str | None, args: list[str]) -> list[str]:
    """plugbox's own arguments: --home first when the config names one."""
    return (["--home", home] if home else []) + list(args)


def remote_plugbox(home: str | None, args: list[str], user: str) -> list[str]:
    """The host-side argv that finds plugbox and runs it with `args`, told plugbox_env(user)."""
    env = plugbox_env(user)
    return ["sh", "-c", FIND_PLUGBOX, "plugbox", home or "", env["PLUGBOX_CLIENT"],
            env["PLUGBOX_USER"], *plugbox_args(home, args)]


def remote_install(home: str | None) -> list[str]:
    """The host-side argv that installs a zipapp read from stdin; see INSTALL_PLUGBOX."""
    return ["sh", "-c", INSTALL_PLUGBOX, "plug-bootstrap", home or ""]


def ssh_base(control_path: str, jump: tuple[str, ...] = (), extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """ssh with the options every connection of one plug command shares.

    ssh keeps the first value it gets for an option, so plug's own connection
    options come first (a ControlPath in `extra` would leave the master out of
    reach of `-O exit`); `extra` follows and adds to the user's configuration
    (-F, -p, -i, -o ...).
    """
    argv = ["ssh", "-o", f"ControlPath={control_path}", *extra]
    if jump:
        argv += ["-J", ",".join(jump)]
    return argv


def _with_mode(base: list[str], *mode: str) -> list[str]:
    """`base` with the ControlMaster mode right after `ssh`, ahead of any extra options."""
    return [base[0], *mode, *base[1:]]


def ssh_open(base: list[str], host: str) -> list[str]:
    """Start the master connection in the background; returns once it is up."""
    return [*_with_mode(base, "-o", "ControlMaster=yes", "-o", "ControlPersist=yes"),
            "-f", "-N", "--", host]


def ssh_close(base: list[str], host: str) -> list[str]:
    return [*base, "-O", "exit", "--", host]


def ssh_run(base: list[str], host: str, remote: list[str]) -> list[str]:
    """Run `remote` on the host over the master connection, as one quoted argument."""
    return [*_with_mode(base, "-o", "ControlMaster=no"), "--", host, shlex.join(remote)]


def rsync_rsh(base: list[str]) -> str:
    """The value of rsync's -e: the same ssh, riding the same master connection."""
    return shlex.join(_with_mode(base, "-o", "ControlMaster=no"))


def version_path(home: str, version: str) -> str:
    """The directory of a version on the host, with the trailing slash rsync wants."""
    return str(PurePosixPath(home) / "deploy" / version) + "/"


def destination(host: str | None, path: str) -> str:
    """rsync's destination: `host:path` over ssh, the bare path on this machine."""
    return f"{host}:{path}" if host else path


def rsync_upload(
    sources: list[str],
    dest: str,
    *,
    link_dest: str | None = None,
    shared: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    rsh: str | None = None,
    dry_run: bool = False,
) -> list[str]:
    """rsync a version: `sources` into `dest`, unchanged files hard-linked from `link_dest`.

    Filter rules apply first match first, so their order is the design:
    previous/next and the record in .plugbox/ are protected from --delete
    (plugbox wrote them there);
    plugbox.toml is always sent, whatever the user's excludes say; shared paths
    are never sent (and, being excluded, never deleted); then the user's excludes.
    The output is one itemized line per file (`-ii` lists the hard-linked ones
    too) followed by --stats, which deploy.py counts.
    `--modify-window=-1` compares mtimes to the nanosecond (receiver 3.1.3 or
    later): with whole seconds, a same-size edit made in the second of the last
    deploy would pass for unchanged and be hard-linked from the live version.
    """
    argv = ["rsync", "-a", "--delete", "--modify-window=-1", "-ii",
            "--out-format=%i %l %n%L", "--stats"]
    if rsh is not None:
        argv += ["--protect-args", "-e", rsh]
    if dry_run:
        argv.append("--dry-run")
    if link_dest is not None:
        argv.append(f"--link-dest={link_dest}")
    argv += ["--filter=P /previous", "--filter=P /next", "--filter=P /.plugbox",
             "--include=/plugbox.toml"]
    argv += [f"--exclude=/{path}" for path in shared]
    argv += [f"--exclude={pattern}" for pattern in exclude]
    return [*argv, "--", *sources, dest]


def ssh_extra(environ) -> list[str]:
    """Extra ssh arguments from the environment (see transport.py for the contract).

    PLUG_SSH_CONFIG=FILE becomes `-F FILE`; PLUG_SSH_OPTIONS is split like a shell
    would split it (`-p 2222 -i key -o StrictHostKeyChecking=no`).
    """
    extra = []
    if environ.get("PLUG_SSH_CONFIG"):
        extra += ["-F", environ["PLUG_SSH_CONFIG"]]
    if environ.get("PLUG_SSH_OPTIONS"):
        extra += shlex.split(environ["PLUG_SSH_OPTIONS"])
    return extra
