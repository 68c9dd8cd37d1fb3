"""The argument lists of every ssh and rsync that plug runs.

Pure, no I/O: each function returns a list of strings, and the tests compare them by
equality. Nothing here is ever given to a shell on this machine. The one string that
reaches a shell is the remote command of ssh, which ssh joins with spaces and hands
to the login shell on the host: it is always a single argument made by shlex.join
from validated parts.
"""

import shlex

from plugbox_server import layout, protocol


def plugbox_env(user: str) -> dict[str, str]:
    """What plug tells plugbox: that plug called (its hints then name plug's commands)
    and who is at the keyboard (the user its log records, not the service's login)."""
    return {"PLUGBOX_CLIENT": "plug", "PLUGBOX_USER": user}


# Find plugbox on the host, in the order plug promises: the copy in the service's
# home's .local/bin (the home as plugbox itself resolves it: layout.HOME_SH), then
# the login's own ~/.local/bin (where `plug bootstrap` installs it, once per login),
# then PATH. A non-interactive ssh session rarely has ~/.local/bin on its PATH,
# hence the look. Not found: exit errors.COMMAND_NOT_FOUND in silence; plug says
# it, in one line. Then run it: $2 and $3 are plugbox_env()'s values, arguments,
# never part of the script's text.
FIND_PLUGBOX = (
    layout.HOME_SH + 'p="$h/.local/bin/plugbox"; '
    '[ -x "$p" ] || p="$HOME/.local/bin/plugbox"; '
    '[ -x "$p" ] || p=$(command -v plugbox) || exit 127; '
    'PLUGBOX_CLIENT=$2; PLUGBOX_USER=$3; shift 3; '
    'export PLUGBOX_CLIENT PLUGBOX_USER; exec "$p" "$@"'
)

# What INSTALL_PLUGBOX runs, with the host's python3, to install the zipapp it read
# (argv: the archive, the .local to install into, HOME): plugbox as a directory,
# .local/lib/plugbox/DIGEST (the archive's sha256), compiled there once by and for
# this python3, so that no run compiles anything, and no run pays for zipimport and
# runpy either (a zipapp: about 7 ms more a run); then .local/bin/plugbox, a script
# that runs it with that python3 -I -S (no site, no PYTHON* variables: about 4 ms
# less a run). Each directory is made beside its place and renamed into it, the
# script written beside its own and renamed over it: a second bootstrap upgrades in
# place, and a plugbox running meanwhile (which imports as it goes) keeps the
# directory it started from: the one before is kept, older ones removed. A copy
# already in HOME/.local is upgraded too, since plug runs that one first. A plugbox
# installed as a zipapp by an older plug is found and run the same way until then.
# The directory keeps the zipapp's __main__.py, so `python3 DIRECTORY` runs it as
# `python3 ZIPAPP` did; the Ansible door runs it so, and imports from it
# (ansible_collections/.../module_utils/plugbox.py reads the script's sys.path line).
# Prints each script it wrote, one a line; one line on stderr when it cannot.
_INSTALL_PY = r"""
import compileall, hashlib, os, shutil, sys, zipfile
archive, local, home = sys.argv[1:4]
with open(archive, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:16]
def install(local):
    libs = os.path.join(local, "lib", "plugbox")
    target = os.path.join(libs, digest)
    os.makedirs(libs, exist_ok=True)
    if not os.path.isdir(target):
        staging = f"{target}.new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(archive) as z:
            z.extractall(staging, [n for n in z.namelist() if not n.endswith(".pyc")])  # __main__.py: python3 DIR runs it
        if not compileall.compile_dir(staging, ddir=target, quiet=2):
            raise OSError(f"{sys.executable} could not compile it")
        os.rename(staging, target)
    script = os.path.join(local, "bin", "plugbox")
    kept = {digest}
    try:
        with open(script, "rb") as f:
            before = f.read(4096)
        kept.add(before.split(b"sys.path.insert(0, '", 1)[1].split(b"'", 1)[0].decode().rsplit("/", 1)[1])
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    exe = sys.executable
    usable = exe and exe.isprintable() and " " not in exe and len(exe) < 200
    os.makedirs(os.path.dirname(script), exist_ok=True)
    written = f"{script}.{os.getpid()}.new"
    with open(written, "w") as f:
        f.write((f"#!{exe} -IS" if usable else "#!/usr/bin/env python3") + "\n"
                "# plugbox, installed by plug bootstrap: compiled in the directory below for this python3\n"
                f"import sys\nsys.path.insert(0, {target!r})\n"  # read by ansible's module_utils/plugbox.py too
                "from plugbox_server.main import main\nmain()\n")
    os.chmod(written, 0o755)
    os.replace(written, script)
    for entry in os.listdir(libs):
        if entry not in kept and ".new-" not in entry:
            shutil.rmtree(os.path.join(libs, entry), ignore_errors=True)
    print(script)
try:
    own = os.path.join(home, ".local")
    if os.path.realpath(local) != os.path.realpath(own) and os.path.isfile(os.path.join(own, "bin", "plugbox")):
        install(own)
    install(local)
except OSError as error:
    sys.exit(f"could not install plugbox in {local}: {error.strerror or error}")
"""

# Install plugbox, sent as a zipapp on stdin (bootstrap.build), and create the layout
# in HOME: into the login's ~/.local, or HOME/.local when $2 is "home" (see
# _INSTALL_PY). Refuses, in one line, a host without what plugbox needs (python3
# 3.11, rsync). The Python travels as one line (exec of its repr): ssh hands the
# command to the login's shell, whatever it is.
INSTALL_PLUGBOX = (
    "set -e; " + layout.HOME_SH +
    "command -v python3 >/dev/null || { echo 'python3 is not installed on this host; install python3 (3.11 "
    "or newer)' >&2; exit 1; }; "
    "python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || "
    '{ echo "plugbox needs python3 3.11 or newer; this host has $(python3 --version 2>&1); '
    'install a newer python3" >&2; exit 1; }; '
    "command -v rsync >/dev/null || { echo 'rsync is not installed on this host; install rsync "
    "(apt-get install rsync)' >&2; exit 1; }; "
    'if [ "$2" = home ]; then d="$h/.local"; else d="$HOME/.local"; fi; '
    f'mkdir -p "$d/bin" "$h/{layout.DEPLOY}" "$h/{layout.SHARED}" "$h/{layout.CONFIG_DIR}"; '
    't="$d/bin/.plugbox.$$.pyz"; cat >"$t"; '
    "python3 -I -S -c " + shlex.quote(f"exec({_INSTALL_PY!r})") + ' "$t" "$d" "$h" || '
    '{ s=$?; rm -f "$t"; exit $s; }; rm -f "$t"'
)

# What the master connection runs when there is no plugbox to serve yet (bootstrap):
# one empty line once it runs (the master is up), then it holds the connection
# until plug closes its input.
HOLD = ["sh", "-c", "echo; exec cat >/dev/null"]


def plugbox_args(home: str | None, args: list[str]) -> list[str]:
    """plugbox's own arguments: --home first when the config names one."""
    return (["--home", home] if home else []) + list(args)


def remote_plugbox(home: str | None, args: list[str], user: str) -> list[str]:
    """The host-side argv that finds plugbox and runs it with `args`, told plugbox_env(user)."""
    return _found_plugbox(home, user, plugbox_args(home, args))


def _found_plugbox(home: str | None, user: str, args: list[str]) -> list[str]:
    env = plugbox_env(user)
    return ["sh", "-c", FIND_PLUGBOX, "plugbox", home or "", env["PLUGBOX_CLIENT"], env["PLUGBOX_USER"], *args]


def remote_install(home: str | None, into_home: bool = False) -> list[str]:
    """The host-side argv that installs a zipapp read from stdin; see INSTALL_PLUGBOX."""
    return ["sh", "-c", INSTALL_PLUGBOX, "plug-bootstrap", home or "", "home" if into_home else "login"]








# Connecting never hangs: a host that does not answer fails within ConnectTimeout,
# a connection that dies mid-command is noticed within about a minute.
CONNECTION_DEFAULTS = ("ConnectTimeout=10", "ServerAliveInterval=15", "ServerAliveCountMax=4")


def ssh_base(control_path: str, jump: tuple[str, ...] = (), extra: list[str] | tuple[str, ...] = (),
             defaults: str | None = None) -> list[str]:
    """ssh with the options every connection of one plug command shares.

    ssh keeps the first value it gets for an option, so plug's own connection
    options come first (a ControlPath in `extra` would leave the master out of
    reach of `-O exit`); `extra` follows and adds to the user's configuration
    (-F, -p, -i, -o ...). `defaults` is plug's ssh_config file, which includes
    ~/.ssh/config first and then sets CONNECTION_DEFAULTS, so that the user's
    own settings win; with a -F of the user's in `extra`, the defaults follow
    `extra` as options instead.
    """
    argv = ["ssh", "-o", f"ControlPath={control_path}", *extra]
    if "-F" in extra or defaults is None:
        argv += [a for option in CONNECTION_DEFAULTS for a in ("-o", option)]
    else:
        argv += ["-F", defaults]
    if jump:
        argv += ["-J", ",".join(jump)]
    return argv


def ssh_session(base: list[str], host: str, remote: list[str], keep: int | None = None) -> list[str]:
    """The connection of one plug command, running `remote` as its session.

    Without `keep`, it is the master connection itself: the master lives exactly
    as long as that session (and the sessions riding on it), no longer. With
    `keep` seconds, the session rides the master that listens at base's control
    path, or makes one there, which ssh puts in the background once logged in
    (ControlPersist) and which outlives the last session riding it by `keep`
    seconds; the session itself, like any rider, ends as plug does.
    """
    mode = (("-o", "ControlMaster=auto", "-o", f"ControlPersist={keep}") if keep else
            ("-o", "ControlMaster=yes", "-o", "ControlPersist=no"))
    return [*_with_mode(base, *mode), "-T", "--", host, shlex.join(remote)]


def kept_control_path(directory: str, jump: tuple[str, ...] = ()) -> str:
    """Where the master kept for a destination listens, in `directory`: ssh's %C (a
    hash of this machine, the host, port and user as ssh resolves them), and a
    hash of the jump hosts when there are some: one master per way to the host."""
    if not jump:
        return f"{directory}/%C"
    import zlib

    return f"{directory}/%C-{zlib.crc32(','.join(jump).encode()):08x}"


def ssh_exit(base: list[str], host: str) -> list[str]:
    """Tell the master at base's control path to close, at once (`ssh -O exit`)."""
    return [*_with_mode(base, "-O", "exit"), "--", host]


def remote_serve(home: str | None, user: str) -> list[str]:
    """The host-side argv of `plugbox --serve`: the home goes in its requests, not here."""
    return _found_plugbox(home, user, list(protocol.ARGS))


def _with_mode(base: list[str], *mode: str) -> list[str]:
    """`base` with the ControlMaster mode right after `ssh`, ahead of any extra options."""
    return [base[0], *mode, *base[1:]]






def ssh_ride(base: list[str], host: str, remote: list[str], tty: bool = False) -> list[str]:
    """Run `remote` on the host over the master connection, as one quoted argument;
    `tty`: with a terminal on the host (`-t`), for what a person types into."""
    return [*_with_mode(base, "-o", "ControlMaster=no", *(["-t"] if tty else [])), "--", host,
            shlex.join(remote)]




def rsync_rsh(base: list[str]) -> str:
    """The value of rsync's -e: the same ssh, riding the same master connection."""
    return shlex.join(_with_mode(base, "-o", "ControlMaster=no"))




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
    checksum: bool = False,
    progress: bool = False,
) -> list[str]:
    """rsync a version: `sources` into `dest`, unchanged files hard-linked from `link_dest`.

    Filter rules apply first match first, so their order is the design:
    previous/next and the record in .plugbox/ are protected from --delete
    (plugbox wrote them there); plugbox.toml is never sent (plugbox writes
    it); shared paths
    are never sent (and, being excluded, never deleted); then the user's excludes.
    The output is one itemized line per file (`-ii` lists the hard-linked ones
    too) followed by --stats, which deploy.py counts.
    `--modify-window=-1` compares mtimes to the nanosecond (receiver 3.1.3 or
    later): with whole seconds, a same-size edit made in the second of the last
    deploy would pass for unchanged and be hard-linked from the live version.
    `checksum` (an unpacked artifact, whose members' mtimes are whole seconds,
    or one fixed time in a reproducible build) compares contents instead:
    a file is hard-linked when its content and attributes are live's, copied
    on the host when only its mtime differs, sent when its content does.
    `progress` adds rsync's overall progress (bytes, rate) and, up front, the
    number of entries; --no-inc-recursive makes that number known before the
    transfer starts (it costs nothing measurable: 3.26 s against 3.48 s, median
    of 6, for 30,000 unchanged files over ssh on 127.0.0.1).
    """
    argv = ["rsync", "-a", "--delete", "--modify-window=-1", "-ii",
            "--out-format=%i %l %n%L", "--stats"]
    if checksum:
        argv.append("--checksum")
    if rsh is not None:
        argv += ["--protect-args", "-e", rsh]
    if dry_run:
        argv.append("--dry-run")
    if progress:
        argv += ["--info=progress2,flist2", "--no-inc-recursive"]
    if link_dest is not None:
        argv.append(f"--link-dest={link_dest}")
    # plugbox.toml is written by the host itself from the project's file, which
    # may be named otherwise (-c FILE); excluded, it is also protected from --delete.
    argv += [f"--filter=P /{name}" for name in layout.OWNED if name != layout.CONFIG]
    argv.append(f"--exclude=/{layout.CONFIG}")
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
