"""A service home on this machine and the real `plugbox` commands run against it.

Shared by the tests that need real files and real processes (hooks, the lock,
kills). $CTL is a directory the tests' hook lines read and write: flags that arm
a failure, a trace of which hook ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import TIMEOUT
from plugbox_server.names import is_version_name

PLUGBOX = shutil.which("plugbox", path=str(Path(sys.executable).parent)) or shutil.which("plugbox")


class Host:
    def __init__(self, home: Path, ctl: Path):
        self.home = home
        self.ctl = ctl
        self.ctl.mkdir(parents=True, exist_ok=True)
        self.deploy = home / "deploy"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PLUGBOX_HOME": str(self.home), "CTL": str(self.ctl), **extra}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PLUGBOX, *args], env=self.env(), capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def upload(self, toml: str | None = None, files: dict[str, str] | None = None) -> str:
        """next-version, then put the version's files in place as an upload would."""
        name = self.ok("next-version").stdout.strip()
        directory = self.deploy / name
        (directory / "MARKER").write_text(name)
        if toml is not None:
            (directory / "plugbox.toml").write_text(toml)
        for path, text in (files or {}).items():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_text(text)
        return name

    def deploy_version(self, toml: str | None = None) -> str:
        name = self.upload(toml)
        self.ok("upgrade-to", name)
        return name

    def live(self) -> str | None:
        try:
            return os.readlink(self.deploy / "live")
        except FileNotFoundError:
            return None

    def versions(self) -> set[str]:
        if not self.deploy.is_dir():
            return set()
        return {e for e in os.listdir(self.deploy) if is_version_name(e)}

    def trace(self) -> list[str]:
        """The hook lines traced into $CTL/trace since the last call."""
        path = self.ctl / "trace"
        lines = path.read_text().splitlines() if path.exists() else []
        path.unlink(missing_ok=True)
        return lines

    def arm(self, name: str) -> None:
        (self.ctl / name).touch()
