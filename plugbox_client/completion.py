"""What shell completion offers beyond commands and options: stage names and version names.

Typer's completion (bash, zsh, fish: `plug --show-completion SHELL`) runs plug
at every Tab, so the answers here must be cheap and never fail: no connection
is made. Stages come from the [stages] table of plugbox.toml (the one -c names,
else the nearest upward). Versions come, with host "local", from the home's
deploy/ itself; otherwise from the last `plug status` for the same plugbox.toml
and stage, which remembers the names it saw in plug's cache directory
($XDG_CACHE_HOME/plug, else ~/.cache/plug), one small file per plugbox.toml and
stage: before any status, only live, previous and live~N are offered.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from plugbox_client.config import Config
from plugbox_server.layout import DEPLOY
from plugbox_server.names import is_version_name

RELATIVE = ("live", "previous", "live~2", "live~3")
_KEPT = 200  # names remembered per plugbox.toml and stage, newest first


def _cache(config_path: Path, stage: str | None) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(f"{config_path}\n{stage or ''}".encode()).hexdigest()[:16]
    return Path(base, "plug", f"versions-{key}")


def remember(config: Config, names: list[str]) -> None:
    """Keep the version names `plug status` saw, for completion; never fails."""
    kept = sorted({name for name in names if is_version_name(name)}, reverse=True)[:_KEPT]
    path = _cache(config.path, config.stage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text("".join(f"{name}\n" for name in kept))
        os.replace(temporary, path)
    except OSError:
        pass


def _given(ctx, key: str):
    """An option's value, given after the command or before it."""
    while ctx is not None:
        value = ctx.params.get(key)
        if value is not None:
            return value
        ctx = ctx.parent
    return None


def _config(ctx) -> Config | None:
    from plugbox_client import config as cfg

    try:
        given = _given(ctx, "config")
        return cfg.load_config(Path(given) if given else None, stage=_given(ctx, "stage"))
    except Exception:  # noqa: BLE001 - a completion offers nothing rather than fail
        return None


def stages(ctx, incomplete: str) -> list[str]:
    """The stage names of plugbox.toml that start with `incomplete`."""
    import tomllib

    from plugbox_client import config as cfg

    try:
        given = _given(ctx, "config")
        path = Path(given) if given else cfg.find_config(Path.cwd())
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("stages", {})
        return [name for name in table if isinstance(name, str) and name.startswith(incomplete)]
    except Exception:  # noqa: BLE001
        return []


def versions(ctx, incomplete: str) -> list[str]:
    """Version names that start with `incomplete`: live, previous, live~N, and the names known."""
    config = _config(ctx)
    names: list[str] = []
    if config is not None:
        try:
            if config.local and config.home:
                names = sorted((entry for entry in os.listdir(Path(config.home, DEPLOY)) if is_version_name(entry)),
                               reverse=True)
            else:
                names = _cache(config.path, config.stage).read_text().split()
        except OSError:
            pass
    return [name for name in [*RELATIVE, *names] if name.startswith(incomplete)]
