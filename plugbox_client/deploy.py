"""What each `plug` command does, in order: the orchestration above the transport.

Runs nothing itself: processes go through transport.py, argument lists come from
argv.py. Reads the project's files (to check what will be uploaded) and writes only
in a private temporary directory of its own. Progress goes to stderr; the functions
return what the command reports on stdout.

A deploy changes the host in three steps: `plugbox next-version` makes an empty
version, rsync fills it, `plugbox upgrade-to` switches live. A failure before
upgrade-to removes the new version again, so the host is left as it was.
"""

import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from plugbox_client import argv as A
from plugbox_client import transport
from plugbox_client.config import FILENAME, RESERVED, Config
from plugbox_server.errors import PlugboxError
from plugbox_server.names import new_version_name, validate_version


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- server commands

def server_command(config: Config, args: list[str], version_args: list[str] = ()) -> int:
    """Run `plugbox ARGS` on the host, output passed through; return its exit status."""
    for name in version_args:
        _version_argument(name)
    with transport.connect(config) as host:
        return host.plugbox(args).code


def _version_argument(name: str) -> str:
    try:
        return validate_version(name)
    except PlugboxError as error:
        raise PlugboxError(error.message, "see `plug status` for the versions", code=2) from None


def rollback(config: Config, version: str | None, refresh: bool) -> int:
    args = ["rollback-to", *([version] if version else []), *(["--refresh"] if refresh else [])]
    return server_command(config, args, [version] if version else [])


def remove(config: Config, versions: list[str]) -> int:
    return server_command(config, ["remove", *[a for v in versions for a in ("-v", v)]], versions)


# ---------------------------------------------------------------- the upload

def upload_sources(config: Config, staged_config: Path) -> list[str]:
    """rsync's sources for a version, checked now that prepare has run.

    The project's plugbox.toml comes first: rsync keeps the first of two sources
    with the same name, so it wins over one that version_dir may hold.
    """
    sources = [str(staged_config)]
    project = config.project
    if config.version_dir is not None:
        directory = project / config.version_dir
        if not directory.is_dir():
            raise PlugboxError(
                f"[build] version_dir: {directory} is not a directory",
                "does prepare make it? nothing was sent",
            )
        for name in RESERVED:
            if (directory / name).exists() or (directory / name).is_symlink():
                raise PlugboxError(
                    f"{directory / name}: the version would have its own top-level {name!r}, which plugbox owns",
                    "rename it or leave it out; nothing was sent",
                )
        sources.append(str(directory) + "/")
    else:
        for path in config.upload:
            source = project / path
            if not (source.exists() or source.is_symlink()):
                raise PlugboxError(
                    f"[build] upload: {source}: no such file or directory",
                    "does prepare make it? nothing was sent",
                )
            sources.append(str(source))
    return sources


def home_excludes(config: Config) -> tuple[str, ...]:
    """With host "local", a home inside what is uploaded would be uploaded into itself:
    rsync patterns, anchored at the transfer's root, that leave it out."""
    if not config.local or config.home is None:
        return ()
    home = Path(config.home).resolve()
    if config.version_dir is not None:
        roots = [(config.project / config.version_dir, None)]
    else:
        roots = [(config.project / path, Path(path).name) for path in config.upload]
    patterns = []
    for root, name in roots:  # the home being a root itself is refused by config.py
        root = root.resolve()
        if root in home.parents:
            inside = home.relative_to(root).as_posix()
            patterns.append(f"/{name}/{inside}" if name else f"/{inside}")
    return tuple(patterns)


def stage_config(config: Config, scratch: Path) -> Path:
    """A copy of the config named plugbox.toml, mtime kept so an unchanged one is hard-linked."""
    staged = scratch / "stage" / FILENAME
    staged.parent.mkdir()
    shutil.copy2(config.path, staged)
    return staged


_ITEM = re.compile(r"([<>ch.*])([fdLDS])(.{9}) (\d+) (.*)")
_STAT = re.compile(r"(Total bytes sent|Total transferred file size): ([\d,]+)")


@dataclass
class Count:
    """What rsync did, counted from its itemized lines and --stats."""

    sent: int = 0          # regular files whose data was transferred
    sent_size: int = 0     # their total size
    linked: int = 0        # regular files hard-linked from the live version
    copied: int = 0        # regular files copied locally (same data, other attributes)
    wire_bytes: int = 0    # bytes rsync sent, protocol included
    dry_run: bool = False
    progress: bool = False
    _shown: float = field(default=0.0, repr=False)

    def line(self, line: str) -> None:
        line = line.rstrip("\n")
        item = _ITEM.fullmatch(line)
        if item:
            kind, ftype, changes = item.group(1), item.group(2), item.group(3)
            if ftype == "f":
                if kind in "<>":
                    self.sent += 1
                    self.sent_size += int(item.group(4))
                elif kind == "h" or (kind == "." and self.dry_run and not changes.strip()):
                    self.linked += 1
                elif kind in ".c":
                    self.copied += 1
            self._progress()
            return
        stat = _STAT.match(line)
        if stat and stat.group(1) == "Total bytes sent":
            self.wire_bytes = int(stat.group(2).replace(",", ""))

    def _progress(self, final=False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if final or now - self._shown >= 0.1:
            self._shown = now
            sys.stderr.write(f"\r    {self.files()}\x1b[K" + ("\n" if final else ""))
            sys.stderr.flush()

    def done(self) -> None:
        self._progress(final=True)

    def files(self) -> str:
        files = "file" if self.sent == 1 else "files"
        text = f"{self.sent} {files} sent ({human(self.sent_size)}), {self.linked} hard-linked"
        if self.copied:
            text += f", {self.copied} copied"
        return text


def human(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _rsync(sources: list[str], dest: str, *, config: Config, rsh: str | None, link_dest: str | None = None,
           dry_run=False) -> Count:
    """rsync `sources` to `dest` (already host:path, or a local path), counting as it goes."""
    argv = A.rsync_upload(
        sources, dest, link_dest=link_dest, shared=config.shared,
        exclude=config.exclude + home_excludes(config), rsh=rsh, dry_run=dry_run,
    )
    count = Count(dry_run=dry_run, progress=sys.stderr.isatty())
    code = transport.run(argv, out=count.line).code
    count.done()
    if code != 0:
        raise PlugboxError(f"rsync exited with {code} (see its messages above)")
    return count


# ---------------------------------------------------------------- the host's state

def host_state(host) -> dict:
    result = host.plugbox(["status", "--json"], capture=True)
    if result.code != 0:
        raise PlugboxError(f"`plugbox status --json` failed on {host.label} (exit {result.code})",
                           "see its message above", code=result.code)
    try:
        state = json.loads(result.stdout)
        state["home"], state["live"], state["versions"]
    except (ValueError, KeyError, TypeError):
        raise PlugboxError(f"`plugbox status --json` on {host.label} printed no state plug understands",
                           "run `plug bootstrap` to install a matching plugbox") from None
    return state


def new_version(host, nothing: str) -> tuple[str, str | None, str]:
    """`plugbox next-version --json`: the new version, the live one it was made against, the home.

    One run of plugbox tells all the upload needs, so a deploy costs two runs of
    plugbox on the host (this and upgrade-to), each a fresh start of Python there.
    """
    made = host.plugbox(["next-version", "--json"], capture=True)
    if made.code != 0:
        hint = ("run `plug bootstrap` to install a matching plugbox" if made.code == 2
                else "see its message above")
        raise PlugboxError(f"`plugbox next-version` failed on {host.label} (exit {made.code})",
                           f"{nothing}; {hint}", code=made.code)
    try:
        answer = json.loads(made.stdout)
        version, live, home = answer["name"], answer["previous"], answer["home"]
        validate_version(version)
        if live is not None:
            validate_version(live)
        if not isinstance(home, str) or not home.startswith("/"):
            raise ValueError(home)
    except (ValueError, KeyError, TypeError, PlugboxError):
        raise PlugboxError(f"`plugbox next-version --json` on {host.label} printed {made.stdout.strip()[:200]!r}, "
                           "not what plug understands", "run `plug bootstrap` to install a matching plugbox") from None
    return version, live, home


# ---------------------------------------------------------------- deploy

def deploy(config: Config) -> list[str]:
    """prepare, next-version, rsync, upgrade-to; returns the summary lines."""
    steps: dict[str, float] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plug-") as scratch, transport.connect(config) as host:
        steps["connect"] = time.monotonic() - began
        nothing = f"nothing changed on {host.label}"

        with _step(steps, "prepare"):
            for line in config.prepare:
                say(f"prepare: {line}")
                code = transport.run(["sh", "-c", line], cwd=config.project).code
                if code != 0:
                    raise PlugboxError(f"prepare: `{line}` exited with {code}", f"{nothing}; fix the build and deploy again")
            sources = upload_sources(config, stage_config(config, Path(scratch)))

        with _step(steps, "next-version"):
            version, live, home = new_version(host, nothing)
        say(f"new version {version}")

        try:
            with _step(steps, "upload"):
                # `live` is the new version's previous: unchanged files are hard links to it.
                say(f"upload to {version}" + (f", unchanged files hard-linked from {live}" if live else ""))
                count = _rsync(sources, host.destination(A.version_path(home, version)),
                               config=config, rsh=host.rsh, link_dest=f"../{live}" if live else None)
        except BaseException as error:
            why = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
            raise PlugboxError(
                f"upload of {version} failed: {why}",
                "nothing changed: " + (f"live is still {live}" if live else "live is as it was")
                + f"; {_remove_half(host, version)}",
                code=130 if isinstance(error, KeyboardInterrupt) else None,
            ) from None

        with _step(steps, "upgrade-to"):
            say(f"upgrade-to {version}")
            code = host.plugbox(["upgrade-to", version]).code
        if code != 0:
            raise PlugboxError(
                f"`plugbox upgrade-to {version}` failed on {host.label} (exit {code})",
                f"see its messages above and `plug status`; {version} is kept: `plug remove {version}` deletes it",
                code=code,
            )

    steps["total"] = time.monotonic() - began
    return [
        f"version {version} is live" + (f" (was {live})" if live else " (first deploy)"),
        f"files: {count.files()}; {human(count.wire_bytes)} sent over the wire",
        "seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in steps.items()),
    ]


def _remove_half(host, version: str) -> str:
    try:
        code = host.plugbox(["remove", "-v", version]).code
    except PlugboxError as error:
        return f"removing {version} failed too ({error.message}): run `plug remove {version}`"
    if code != 0:
        return f"removing {version} failed too (exit {code}): run `plug remove {version}`"
    return f"{version} was removed"


class _step:
    """Times one step into `steps`."""

    def __init__(self, steps: dict[str, float], name: str):
        self.steps, self.name = steps, name

    def __enter__(self):
        self.began = time.monotonic()

    def __exit__(self, *exc):
        self.steps[self.name] = time.monotonic() - self.began
        return False


def dry_run(config: Config) -> list[str]:
    """What deploy would do, from the host's real state; changes nothing anywhere.

    Counts with `rsync --dry-run` against the live version itself (what --link-dest
    would compare with); on a first deploy, against an empty local directory.
    prepare is not run: the counts are for the project as it is now.
    """
    with tempfile.TemporaryDirectory(prefix="plug-") as scratch, transport.connect(config) as host:
        sources = upload_sources(config, stage_config(config, Path(scratch)))
        state = host_state(host)
        live = state["live"]
        names = [entry["name"] for entry in state["versions"]]
        if live:
            validate_version(live)
            count = _rsync(sources, host.destination(A.version_path(state["home"], live)),
                           config=config, rsh=host.rsh, dry_run=True)
        else:
            empty = Path(scratch, "empty")
            empty.mkdir()
            count = _rsync(sources, str(empty) + "/", config=config, rsh=None, dry_run=True)
    lines = [
        f"would make version {new_version_name(names)} (named by the host's clock when it happens)",
        f"it would replace live version {live}" if live else "no live version: it would be the first deploy",
        f"files: would send {count.sent} ({human(count.sent_size)}), hard-link {count.linked}"
        + (f", copy {count.copied}" if count.copied else ""),
        "dry run: nothing changed" + (", prepare not run" if config.prepare else ""),
    ]
    return lines
