"""plugbox.toml on the client: find it, parse it, validate every key before anything runs.

Reads the one file and nothing else (the paths it names are checked for existence
later, after `prepare` has had a chance to make them). Every problem is a
PlugboxError that names the file, the key and what is wrong with it; an unknown key
is an error too, so that a typo never passes silently.
"""

import contextlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from plugbox_server.errors import USAGE, PlugboxError
from plugbox_server.layout import CONFIG as FILENAME
from plugbox_server.layout import CONFIG, OWNED, Checker, ConfigError, settings

LOCAL = "local"
ENGINE = "inventory"   # Config.host when an engine's inventory says where

# An ssh destination as plug accepts it: [user@]host. Anything fancier (a port, an
# IPv6 address, options) belongs in ~/.ssh/config under a Host alias.
_HOST = re.compile(r"(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9._-]+")
# A jump host as `ssh -J` takes it: [user@]host[:port]; commas would split it.
_JUMP = re.compile(r"(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9._-]+(?::[0-9]+)?")


@dataclass(frozen=True)
class Config:
    path: Path                      # the plugbox.toml read, absolute
    host: str                       # ssh destination, or "local"; with hosts, the first
    jump: tuple[str, ...] = ()
    home: str | None = None         # absolute path on the host; None: the host's $HOME
    shared: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ()
    upload: tuple[str, ...] = ()
    version_dir: str | None = None
    artifact: str | None = None     # a file prepare makes, relative to the project
    exclude: tuple[str, ...] = ()
    hooks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()     # every host: (host,) for one
    stage: str | None = None        # the [stages.NAME] chosen, if any
    release_host: str | None = None  # where the release step runs: [release] host, else the first

    @property
    def several(self) -> bool:
        return len(self.hosts) > 1

    def for_host(self, host: str) -> "Config":
        """The same config for one of its hosts alone."""
        return replace(self, host=host, hosts=(host,))

    @property
    def project(self) -> Path:
        """The project directory: relative paths in the file are relative to it."""
        return self.path.parent

    @property
    def local(self) -> bool:
        return self.host == LOCAL


def find_config(start: Path) -> Path:
    """The nearest plugbox.toml in `start` or one of its parents."""
    start = start.absolute()
    for directory in (start, *start.parents):
        candidate = directory / FILENAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {FILENAME} in {start} or any directory above it",
        "write one with `plug init`, or name one with -c FILE", code=USAGE)


def load_config(path: Path | None = None, cwd: Path | None = None, stage: str | None = None,
                upload_required: bool = True, engine: bool = False) -> Config:
    """Read and validate `path`, or the plugbox.toml found upward from `cwd`;
    `stage`: the [stages.NAME] whose keys replace those of [service];
    `upload_required`: [build] must say what a version is made of (upload,
    version_dir or artifact); not for a command that uploads nothing, nor for
    `plug deploy --artifact FILE`, so that CI needs no more than hosts and hooks;
    `engine`: an engine's inventory says where (see parse_config)."""
    path = (path if path is not None else find_config(cwd or Path.cwd())).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", "write one with `plug init`", code=USAGE) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{path}: cannot read it: {reason}", "check the file", code=USAGE) from None
    return parse_config(text, path, stage, upload_required, engine)


def parse_config(text: str, path: Path, stage: str | None = None, upload_required: bool = True,
                 engine: bool = False) -> Config:
    """Validate the text of a plugbox.toml; `path` is where it lives (for messages, project dir).

    Every stage is validated, whichever is chosen, so that a typo in one shows at once.
    With `engine` (Ansible: its inventory says where), [service] needs no host:
    `hosts` is empty and `host` says "inventory"; a home given is still the default."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}", "fix the syntax", code=USAGE) from None
    check = Checker(path, code=USAGE)
    version = settings(data, check)  # the rules the host checks too
    service, build, stages = (check.table(data, name) for name in ("service", "build", "stages"))

    if stage is not None and stage not in stages:
        known = f"the stages are {_names(stages)}" if stages else f"{path} has no [stages.NAME] table"
        raise ConfigError(f"{path}: no stage {stage!r}", f"{known}; nothing was done", code=USAGE)
    places = {name: _place(check, f"stages.{name}", {**service, **_hosts_of(table), **table})
              for name, table in stages.items()}
    if engine and "host" not in service and "hosts" not in service:
        places[None] = ((), (), _home(check, "service", service, local=False))
    elif stage is None or "host" in service or "hosts" in service:
        places[None] = _place(check, "service", service)
    hosts, jump, home = places[stage]
    host = hosts[0] if hosts else ENGINE
    # With an engine, the inventory's hosts are not known here: Ansible checks the name.
    if version.release_host is not None and hosts and version.release_host not in hosts:
        where = f"the hosts of stage {stage}" if stage else "the hosts"
        raise check.error("release", "host", f"{version.release_host!r} is not one of {where}",
                          f"name one of {', '.join(hosts)}")

    prepare = check.strings("build", "prepare", build.get("prepare", []))
    exclude = check.strings("build", "exclude", build.get("exclude", []))
    for pattern in exclude:
        check.plain("build", "exclude", pattern)

    sources = [key for key in ("upload", "version_dir", "artifact") if key in build]
    if len(sources) > 1 or not (sources or not upload_required):
        problem = (f"both {sources[0]} and {sources[1]} are set" if len(sources) == 2 else
                   "upload, version_dir and artifact are all set" if sources else
                   "none of upload, version_dir and artifact is set")
        raise check.error(
            "build", "upload", problem,
            'set exactly one: upload = ["paths", ...], version_dir = "dir" or artifact = "file"',
        )
    upload: tuple[str, ...] = ()
    version_dir = artifact = None
    if "upload" in build:
        upload = tuple(check.relative("build", "upload", p) for p in check.strings("build", "upload", build["upload"]))
        if not upload:
            raise check.error("build", "upload", "is empty", "list the paths to upload")
        names = [PurePosixPath(p).name for p in upload]
        for p, name in zip(upload, names):
            if name in OWNED and name != CONFIG:
                raise check.error("build", "upload", f"{p!r} would land as the version's own {name!r}, which plugbox owns", "rename it")
        check.unique("build", "upload", names, what="names")
    elif "version_dir" in build:
        version_dir = check.relative("build", "version_dir", check.string("build", "version_dir", build["version_dir"]), allow_dot=True)
    elif "artifact" in build:
        artifact = check.relative("build", "artifact", check.string("build", "artifact", build["artifact"]))
        if exclude:
            raise check.error("build", "exclude", "applies to upload and version_dir, not to an artifact, "
                              "which is deployed whole", "leave those files out when the artifact is built")


    if host == LOCAL:
        uploaded = [version_dir] if version_dir is not None else list(upload)
        for source in uploaded:
            if os.path.normpath(path.parent / source) == home:
                raise check.error("service", "home", f"{home} is itself uploaded by [build]",
                                  "put the home outside what is uploaded")

    return Config(
        path=path, host=host, jump=jump, home=home, shared=version.shared, prepare=prepare,
        upload=upload, version_dir=version_dir, artifact=artifact, exclude=exclude, hooks=version.hooks,
        hosts=hosts, stage=stage, release_host=version.release_host or (hosts[0] if hosts else None),
    )


def _hosts_of(table: dict) -> dict:
    """A stage that names its host(s) replaces both host and hosts of [service]."""
    if "host" in table or "hosts" in table:
        return {"host": None, "hosts": None}
    return {}


def _place(check: Checker, table: str, keys: dict) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(hosts, jump, home) of [service] or of a stage laid over it, validated."""
    keys = {k: v for k, v in keys.items() if v is not None}
    if ("host" in keys) == ("hosts" in keys):
        problem = "both host and hosts are set" if "host" in keys else "missing"
        raise check.error(table, "host", problem,
                          'set host to an ssh destination (or "local"), or hosts to a list of them')
    if "host" in keys:
        hosts = (check.string(table, "host", keys["host"]),)
    else:
        hosts = check.strings(table, "hosts", keys["hosts"])
        if not hosts:
            raise check.error(table, "hosts", "is empty", "list the hosts, or set host for one")
        check.unique(table, "hosts", hosts)
        if LOCAL in hosts and len(hosts) > 1:
            raise check.error(table, "hosts", f'"{LOCAL}" cannot be one of several hosts', "remove it")
    key = "host" if "host" in keys else "hosts"
    for host in hosts:
        if host.startswith("-"):
            raise check.error(table, key, f"{host!r} starts with '-'", "give a host name")
        if host != LOCAL and not _HOST.fullmatch(host):
            raise check.error(
                table, key, f"{host!r} is not [user@]host",
                "put ports and other ssh settings in ~/.ssh/config under a Host alias",
            )
    local = hosts == (LOCAL,)

    jump = check.strings(table, "jump", keys.get("jump", []))
    for hop in jump:
        if hop.startswith("-") or not _JUMP.fullmatch(hop):
            raise check.error(table, "jump", f"{hop!r} is not [user@]host[:port]", "fix the jump host")
    if jump and local:
        raise check.error(table, "jump", 'makes no sense with host = "local"', "remove it")

    return hosts, jump, _home(check, table, keys, local)


def _home(check: Checker, table: str, keys: dict, local: bool) -> str | None:
    """The home of [service] or a stage, validated: absolute, or beside the project when local."""
    if "home" not in keys:
        if local:
            raise check.error(table, "home", 'missing: host = "local" needs it',
                              "set home to a directory on this machine")
        return None
    home = check.string(table, "home", keys["home"])
    check.plain(table, "home", home)
    if local and not home.startswith("/"):
        # On this machine a relative home means one beside the project, like other paths here.
        return os.path.normpath(check.path.parent / home)
    if not home.startswith("/"):
        raise check.error(table, "home", f"{home!r} is not an absolute path", "start it with /")
    return home


def _names(keys) -> str:
    return ", ".join(keys)


def _toml(value) -> str:
    # A TOML basic string is a JSON string (json escapes what TOML requires).
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def render_config(
    host: str,
    *,
    jump: tuple[str, ...] = (),
    home: str | None = None,
    shared: tuple[str, ...] = (),
    prepare: tuple[str, ...] = (),
    upload: tuple[str, ...] = (),
    version_dir: str | None = None,
    exclude: tuple[str, ...] | None = None,
) -> str:
    """The text of a commented plugbox.toml; what is not given is shown commented out."""

    def line(key: str, value, example: str) -> str:
        return f"{key} = {_toml(value)}" if value else f"# {key} = {example}"

    if not upload and version_dir is None:
        version_dir = "."
    if exclude is None:
        exclude = (".git", "__pycache__", "*.pyc")
    return "\n".join([
        "# How `plug` deploys this project; every key is described in plugbox.toml(5).",
        "# This file travels with every version: the host reads [hooks] from it.",
        "",
        "[service]",
        '# Where to deploy: an ssh destination, [user@]host, or "local" for this machine.',
        f"host = {_toml(host)}",
        "# ssh jump hosts, in order.",
        line("jump", list(jump), '["bastion.example.org"]'),
        "# The service's home on the host, absolute (with host \"local\", may be relative to",
        "# this file); default: the ssh user's $HOME.",
        line("home", home, '"/home/hello"'),
        "# Paths that outlive versions: linked from each version into HOME/shared/.",
        line("shared", list(shared), '["media", "log"]'),
        "",
        "[build]",
        "# Shell lines run here, in the project directory, before the upload.",
        line("prepare", list(prepare), '["make dist"]'),
        "# Either the paths to upload, each landing in the version under its own name,",
        line("upload", list(upload), '["app", "requirements.txt"]'),
        "# or one directory whose contents become the version,",
        line("version_dir", version_dir, '"dist"'),
        "# or a file that prepare builds: an archive (.tar.gz, .zip ...) whose members become",
        "# the version, or any other file (a .pyz, a binary), which becomes its one file.",
        '# artifact = "dist/app.tar.gz"',
        "# rsync patterns left out of the upload (not of an artifact: it goes whole).",
        line("exclude", list(exclude), '["__pycache__", "*.pyc"]'),
        "",
        "[hooks]",
        "# Shell lines run on the host, one after another; the first that fails stops.",
        "# post_upload runs in the new version's directory, the others in HOME.",
        "# A virtualenv in the version itself (`uv venv env && uv pip install -p env -r",
        "# requirements.txt` makes this fast):",
        '# post_upload = ["python3 -m venv env", "env/bin/pip install -q -r requirements.txt"]',
        "# or one in shared/ per requirements.txt, linked as env, so that an unchanged",
        "# requirements.txt installs nothing:",
        '# post_upload = ["v=../../shared/venvs/$(sha256sum < requirements.txt | cut -c1-16) && '
        '{ test -x $v/bin/python || python3 -m venv $v; } && ln -sfn $v env",',
        '#                "env/bin/pip install -q -r requirements.txt"]',
        '# stop = ["systemctl --user stop hello"]',
        '# start = ["systemctl --user start hello"]',
        "# refresh, when present, replaces stop + start on upgrade.",
        '# refresh = ["systemctl --user reload hello"]',
        '# check = ["curl -fsS http://127.0.0.1:8000/"]',
        "",
    ])


def write_config(path: Path, text: str, *, force=False) -> Path:
    """Write a plugbox.toml after validating it; never over an existing file unless `force`."""
    path = path.absolute()
    parse_config(text, path)
    if path.exists() and not force:
        raise PlugboxError(f"{path} exists already", "pass --force to replace it")
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as e:
        # Not unlink(missing_ok=True): where the directory is not one, the cleanup
        # fails too (ENOTDIR), and would hide the error that matters.
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise PlugboxError(f"could not write {path}: {e.strerror}", "check the directory") from None
    return path
