"""What each `plug` command does, in order: the orchestration above the transport.

Runs nothing itself: processes go through transport.py, argument lists come from
argv.py. Reads the project's files (to check what will be uploaded) and writes only
in a private temporary directory of its own. Progress goes to stderr; the functions
return what the command reports on stdout.

A deploy is one transaction on the host (see deploy()): one `plugbox --serve`
session holds the lock while rsync fills the new version and the switch runs.
"""

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from plugbox_client import argv as A
from plugbox_client import source, transport
from plugbox_client.config import RESERVED, Config
from plugbox_server.errors import USAGE, PlugboxError
from plugbox_server.names import new_version_name, validate_version


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- server commands

def server_command(config: Config, request: dict, version_args: list[str] = ()) -> int:
    """Run one command of plugbox on the host (on every host); print what it prints;
    return its exit status."""
    for name in version_args:
        _version_argument(name)
    if config.several:
        from plugbox_client import fleet

        return fleet.server_command(config, request)
    with transport.open_session(config) as session:
        answer = session.request(_request(config, request))
    sys.stdout.write(answer.get("out", ""))
    return _exit(answer)


def _request(config: Config, request: dict) -> dict:
    return {**request, "home": config.home}


def _exit(answer: dict) -> int:
    code = answer.get("exit")
    return code if isinstance(code, int) else 1


def _version_argument(name: str) -> str:
    try:
        return validate_version(name)
    except PlugboxError as error:
        raise PlugboxError(error.message, "see `plug status` for the versions", code=USAGE) from None


def rollback(config: Config, version: str | None, refresh: bool, wait_lock: float = 0) -> list[str]:
    """Switch live back on the host; returns the summary lines."""
    if version:
        _version_argument(version)
    began = time.monotonic()
    with transport.open_session(config) as session:
        answer = session.request(_request(config, {"command": "rollback", "version": version,
                                                   "refresh": refresh, "wait_lock": wait_lock}))
    code = _exit(answer)
    if code:
        raise Quiet(code)
    return [f"version {answer['name']} is live" + (f" (was {answer['was']})" if answer.get("was") else ""),
            f"seconds: total {time.monotonic() - began:.1f}"]


def remove(config: Config, versions: list[str]) -> int:
    return server_command(config, {"command": "remove", "versions": versions}, versions)


class Quiet(PlugboxError):
    """A failure the host has already explained on stderr: plug only exits with its code."""

    def __init__(self, code: int):
        super().__init__("", code=code)


# ---------------------------------------------------------------- the upload

def upload_sources(config: Config) -> list[str]:
    """rsync's sources for a version, checked now that prepare has run.

    The version's plugbox.toml is not among them: the host writes it from the
    project's file, whatever that file is named and whatever version_dir holds.
    """
    sources = []
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
           dry_run=False, progress: bool | None = None) -> Count:
    """rsync `sources` to `dest` (already host:path, or a local path), counting as it goes."""
    argv = A.rsync_upload(
        sources, dest, link_dest=link_dest, shared=config.shared,
        exclude=config.exclude + home_excludes(config), rsh=rsh, dry_run=dry_run,
    )
    count = Count(dry_run=dry_run, progress=sys.stderr.isatty() if progress is None else progress)
    code = transport.run(argv, out=count.line).code
    count.done()
    if code != 0:
        raise PlugboxError(f"rsync exited with {code} (see its messages above)")
    return count


# ---------------------------------------------------------------- deploy

def deploy(config: Config, message: str | None = None, wait_lock: float = 0) -> list[str]:
    """prepare (while ssh connects), then one transaction on the host; returns the summary lines.

    The host holds its lock from the making of the version to the end of the
    switch. Until plug says the upload is complete, the end of the session (a
    failure here, Ctrl-C, plug killed) makes the host remove the staging
    directory: nothing changed. After it, the host finishes or switches back on
    its own, whatever happens here.
    """
    steps: dict[str, float] = {}
    began = time.monotonic()
    session = transport.open_session(config)
    label = session.label
    uploaded = False
    version = live = None
    try:
        with _step(steps, "prepare"):
            for line in config.prepare:
                say(f"prepare: {line}")
                code = transport.run(["sh", "-c", line], cwd=config.project).code
                if code != 0:
                    raise PlugboxError(f"prepare: `{line}` exited with {code}",
                                       f"nothing changed on {label}; fix the build and deploy again")
            sources = upload_sources(config)
            text = config.path.read_text(encoding="utf-8")
            made_by = origin(config, message)  # while ssh is still connecting
        with _step(steps, "connect"):
            answer = session.request(_request(config, {
                "command": "deploy", "config": text, "origin": made_by, "wait_lock": wait_lock}))
        if "upload" not in answer:
            raise Quiet(_exit(answer))
        version, live, path = _staging(answer["upload"], label)
        say(f"new version {version}" + (f", unchanged files hard-linked from {live}" if live else ""))
        with _step(steps, "upload"):
            try:
                count = _rsync(sources, session.destination(path + "/"), config=config, rsh=session.rsh,
                               link_dest=f"../{live}" if live else None)
            except PlugboxError as error:
                if session.ended(1):  # rsync died of it, with one of several exit statuses
                    raise transport.HostGone(f"lost the connection ({error.message})") from None
                raise
        session.send({"uploaded": True})
        uploaded = True
        with _step(steps, "switch"):
            answer = session.receive()
        if _exit(answer):
            raise Quiet(_exit(answer))
    except KeyboardInterrupt:
        session.quiet = True
        raise PlugboxError(*_interrupted(label, version, uploaded), code=130) from None
    except transport.HostGone as error:
        if uploaded:
            raise transport.HostGone(f"{error.message} after the upload of {version}",
                                     "the host finishes the deploy by itself: see `plug status` and `plug log`"
                                     ) from None
        _nothing_changed(session, error, version, live, label, uploaded)
    except PlugboxError as error:
        _nothing_changed(session, error, version, live, label, uploaded)
    finally:
        session.close()

    steps["total"] = time.monotonic() - began
    return [
        f"version {version} is live" + (f" (was {live})" if live else " (first deploy)"),
        f"files: {count.files()}; {human(count.wire_bytes)} sent over the wire",
        "seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in steps.items()),
    ]


def _nothing_changed(session, error: PlugboxError, version: str | None, live: str | None, label: str,
                     uploaded: bool):
    """Re-raise a failure; one during the upload says that the host is as it was."""
    if not version or uploaded or isinstance(error, Quiet):
        raise error
    session.close()  # the host removes the staging directory when its input ends
    raise PlugboxError(f"upload of {version} failed: {error.message}",
                       f"nothing changed on {label}: " +
                       (f"live is still {live}" if live else "there is still no live version"),
                       code=error.code) from None


def origin(config: Config, message: str | None) -> dict:
    """Who deploys, from which machine and source, and why: the version's record keeps it."""
    return {"user": transport.local_user(), "machine": os.uname().nodename,
            **source.describe(config.project), "message": message}


def _staging(upload: dict, label: str) -> tuple[str, str | None, str]:
    """The new version, the live one it was made against, and where to upload it."""
    try:
        version, live, path = upload["name"], upload["live"], upload["path"]
        validate_version(version)
        if live is not None:
            validate_version(live)
        if not isinstance(path, str) or not path.startswith("/") or "\n" in path:
            raise ValueError(path)
    except (ValueError, KeyError, TypeError, PlugboxError):
        raise PlugboxError(f"plugbox on {label} answered {str(upload)[:200]!r}, not what plug understands",
                           "run `plug bootstrap` to install the plugbox that matches plug") from None
    return version, live, path


def _interrupted(label: str, version: str | None, uploaded: bool) -> tuple[str, str]:
    if uploaded:
        return (f"interrupted after the upload of {version}",
                f"{label} finishes the deploy by itself: follow it with `plug status` and `plug log --output`")
    return ("interrupted before the upload was complete", f"nothing changed on {label}")


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
    with tempfile.TemporaryDirectory(prefix="plug-") as scratch, transport.open_session(config) as session:
        sources = upload_sources(config)
        # "hold": the session, and so the connection rsync rides on, stays up until plug closes it.
        answer = session.request(_request(config, {"command": "status", "json": True, "hold": True}))
        if _exit(answer):
            raise Quiet(_exit(answer))
        try:
            state = json.loads(answer["out"])
            live, home = state["live"], state["home"]
            names = [entry["name"] for entry in state["versions"]]
        except (ValueError, KeyError, TypeError):
            raise PlugboxError(f"plugbox on {session.label} printed no state plug understands",
                               "run `plug bootstrap` to install the plugbox that matches plug") from None
        if live:
            validate_version(live)
            count = _rsync(sources, session.destination(A.version_path(home, live)),
                           config=config, rsh=session.rsh, dry_run=True)
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
