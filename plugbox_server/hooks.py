"""A version's plugbox.toml as the host reads it, and the running of its hooks.

Reads `[hooks]` and `[service] shared` of a version's own plugbox.toml; runs hook
lines with /bin/sh -c, their output going straight to ours as it happens.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from plugbox_server.errors import HookFailed, PlugboxError
from plugbox_server.output import hook_output, say

HOOKS = ("post_upload", "stop", "start", "refresh", "check")
CONFIG = "plugbox.toml"
# Names plugbox itself owns inside a version: never shared.
RESERVED = {"previous", "next", CONFIG}


@dataclass(frozen=True)
class VersionConfig:
    hooks: dict[str, list[str]] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)

    def has(self, hook: str) -> bool:
        return bool(self.hooks.get(hook))


def load(version_dir: Path, shown: str) -> VersionConfig:
    """Read the version's plugbox.toml; `shown` is how errors name the file."""
    path = version_dir / CONFIG
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return VersionConfig()
    except tomllib.TOMLDecodeError as error:
        raise PlugboxError(f"{shown}: not valid TOML: {error}", "fix it and deploy again")
    except OSError as error:
        raise PlugboxError(f"{shown}: {error.strerror}")

    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise PlugboxError(f"{shown}: [hooks] must be a table")
    for key, lines in hooks.items():
        if key not in HOOKS:
            raise PlugboxError(f"{shown}: [hooks] has an unknown key {key!r}",
                               f"the keys are {', '.join(HOOKS)}")
        if not _is_list_of_str(lines):
            raise PlugboxError(f"{shown}: hooks.{key} must be a list of command lines")

    service = data.get("service", {})
    shared = service.get("shared", []) if isinstance(service, dict) else []
    if not _is_list_of_str(shared):
        raise PlugboxError(f"{shown}: service.shared must be a list of paths")
    for path_text in shared:
        normal = posixpath.normpath(path_text)
        if (path_text.startswith("/") or normal.startswith("..") or normal == "."
                or normal.split("/")[0] in RESERVED or "\n" in path_text):
            raise PlugboxError(f"{shown}: service.shared has {path_text!r}",
                               "each entry is a relative path inside the version, "
                               "not previous, next or plugbox.toml")
    return VersionConfig(hooks, [posixpath.normpath(p) for p in shared])


def _is_list_of_str(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def link_shared(home: Path, version_dir: Path, config: VersionConfig, shown: str) -> None:
    """Link each shared path of the version into HOME/shared/, created empty on first use."""
    # Refuse before making anything, so that a refusal changes nothing.
    for path_text in config.shared:
        inside = version_dir / path_text
        if not inside.is_symlink() and inside.exists():
            raise PlugboxError(
                f"{shown}/{path_text}: uploaded, but listed in service.shared",
                "leave shared paths out of the upload")
    for path_text in config.shared:
        store = home / "shared" / path_text
        inside = version_dir / path_text
        try:
            store.mkdir(parents=True, exist_ok=True)
            if inside.is_symlink():
                inside.unlink()
            inside.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(store, inside.parent), inside)
        except OSError as error:
            raise PlugboxError(f"could not link {shown}/{path_text} -> shared/{path_text}: "
                               f"{error.strerror}")


def run(hook: str, lines: list[str], *, version: str, cwd: Path, env: dict[str, str]) -> None:
    """Run the hook's lines in order; the first that fails stops it and raises HookFailed."""
    for line in lines:
        say(f"{hook} of {version}: {line}")
        try:
            # No capture: the hook writes to our stdout and stderr directly, so its
            # output reaches the caller (over ssh, the terminal) as it happens.
            output = hook_output()
            result = subprocess.run(["/bin/sh", "-c", line], cwd=cwd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        except OSError as error:
            raise HookFailed(f"{hook} of {version} could not run {line!r}: {error.strerror}")
        if result.returncode != 0:
            how = (f"was killed by signal {-result.returncode}" if result.returncode < 0
                   else f"exited {result.returncode}")
            raise HookFailed(f"{hook} of {version} failed: {line!r} {how}")


def environment(home: Path, version: str, version_dir: Path, previous: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PLUGBOX_HOME=str(home), PLUGBOX_VERSION=version,
               PLUGBOX_VERSION_DIR=str(version_dir), PLUGBOX_PREVIOUS=previous or "")
    return env
