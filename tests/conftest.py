"""Shared fixtures.

Real ssh servers on 127.0.0.1 (see tests/sshd.py): `sshd` (alias `plugbox-test`)
and `jump_sshd` (alias `plugbox-jump`) live for the whole session; `ssh_config` is
the client config naming both. `bare_host` is a fresh server per test whose
sessions see a python3 without any package and no `plugbox`, for bootstrap.
Every session's $HOME is a directory of the test run's own, never the real one.
These fixtures fail, never skip, when sshd or ssh-keygen is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import BARE_SYSTEM_PATH, INSTALLED_BIN, SYSTEM_PATH, TIMEOUT, start_or_fail
from sshd import Sshd, SshdError, make_key, write_client_config


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """plug's cache (the version names shell completion offers) in the test run's own
    directory, never the user's ~/.cache: every plug a test starts inherits it."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="session")
def ssh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssh")


@pytest.fixture(scope="session")
def user_key(ssh_dir: Path) -> Path:
    """The private key the client logs in with (its .pub is authorized)."""
    try:
        return make_key(ssh_dir / "id_ed25519", "plugbox-test-user")
    except SshdError as error:
        pytest.fail(f"test ssh key: {error}", pytrace=False)


@pytest.fixture(scope="session")
def sshd(ssh_dir: Path, user_key: Path):
    """The host the client deploys to, alias `plugbox-test`; `plugbox` is on its PATH."""
    login_home = ssh_dir / "sshd-login-home"
    login_home.mkdir()
    server = Sshd(
        ssh_dir / "sshd",
        Path(f"{user_key}.pub"),
        env={"HOME": str(login_home), "PATH": f"{INSTALLED_BIN}:{SYSTEM_PATH}"},
    )
    start_or_fail(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jump_sshd(ssh_dir: Path, user_key: Path):
    """A jump host, alias `plugbox-jump`: count its logins to see a jump was used."""
    login_home = ssh_dir / "jump-login-home"
    login_home.mkdir()
    server = Sshd(
        ssh_dir / "jump",
        Path(f"{user_key}.pub"),
        env={"HOME": str(login_home), "PATH": SYSTEM_PATH},
    )
    start_or_fail(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ssh_config(ssh_dir: Path, user_key: Path, sshd: Sshd, jump_sshd: Sshd) -> Path:
    """`ssh -F` config naming `plugbox-test` and `plugbox-jump`."""
    return write_client_config(
        ssh_dir / "ssh_config",
        {"plugbox-test": sshd, "plugbox-jump": jump_sshd},
        user_key,
        ssh_dir / "known_hosts",
    )


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a python3 with no packages at all, not even pip."""
    venv = tmp_path_factory.mktemp("barepy")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


@dataclass
class BareHost:
    """A host where only python3 (without packages) and rsync can be assumed."""

    sshd: Sshd
    ssh_config: Path  # names `plugbox-bare` as well as `plugbox-test`, `plugbox-jump`
    login_home: Path  # the sessions' $HOME
    path: str  # the sessions' $PATH


@pytest.fixture
def bare_host(
    tmp_path: Path,
    user_key: Path,
    sshd: Sshd,
    jump_sshd: Sshd,
    bare_python: Path,
) -> Iterator[BareHost]:
    """A fresh server per test, alias `plugbox-bare`; its sessions cannot find plugbox."""
    login_home = tmp_path / "bare-login-home"
    login_home.mkdir()
    path = f"{bare_python}:{BARE_SYSTEM_PATH}"
    if shutil.which("plugbox", path=path):
        pytest.fail(
            f"bare host: `plugbox` is already on {BARE_SYSTEM_PATH}; the bootstrap "
            "tests need a PATH without it: install plugbox in a virtualenv",
            pytrace=False,
        )
    server = Sshd(
        tmp_path / "bare-sshd",
        Path(f"{user_key}.pub"),
        env={"HOME": str(login_home), "PATH": path},
    )
    start_or_fail(server)
    config = write_client_config(
        tmp_path / "ssh_config",
        {"plugbox-bare": server, "plugbox-test": sshd, "plugbox-jump": jump_sshd},
        user_key,
        tmp_path / "known_hosts",
    )
    yield BareHost(server, config, login_home, path)
    server.stop()


@pytest.fixture
def service_home(tmp_path: Path) -> Path:
    """An empty home for the service on the host (`home = ...` in plugbox.toml)."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """An empty project directory on the client side."""
    project = tmp_path / "project"
    project.mkdir()
    return project


def ssh_argv(config: Path, *args: str) -> list[str]:
    return ["ssh", "-F", str(config), *args]


@pytest.fixture
def ssh_run(ssh_config: Path):
    """Run `ssh -F ssh_config ARGS...`; return the CompletedProcess (text)."""

    def run(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ssh_argv(config or ssh_config, *args),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    return run
