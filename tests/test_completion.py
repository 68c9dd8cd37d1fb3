"""Shell completion: typer's own scripts for bash, zsh and fish, and what they offer.

The bash script is sourced by a real bash and asked as bash asks at a Tab; zsh and
fish are not assumed installed, so their side of typer's protocol (the environment
their scripts set) is driven directly. Stage names come from plugbox.toml; version
names from the home with host "local", else from the last `plug status`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import PLUG, TIMEOUT, Plug, write_app, write_config

STAGES = '\n[stages.staging]\nhost = "local"\nhome = "staging-home"\n\n[stages.production]\nhosts = ["web1", "web2"]\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    write_app(project, {"app/a.txt": "a\n"})
    path = write_config(project, tmp_path / "home", host="local")
    path.write_text(path.read_text() + STAGES)
    return project


def environ(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUG_", "PLUGBOX_", "_PLUG_"))}
    # Typer's switch for tests: --show-completion takes the shell's name instead of
    # finding the shell plug runs in (here, python).
    env["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"
    return {**env, "PATH": f"{PLUG.parent}:{env['PATH']}", **more}


def script(shell: str) -> str:
    done = subprocess.run([str(PLUG), "--show-completion", shell], env=environ(), capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_scripts_are_generated_for_bash_zsh_and_fish():
    assert "complete -o default -F _plug_completion plug" in script("bash")
    assert "compdef _plug_completion plug" in script("zsh")
    assert "complete --command plug" in script("fish") and "_PLUG_COMPLETE=complete_fish" in script("fish")


def bash_completes(project: Path, *words: str) -> list[str]:
    """What bash offers at a Tab after `words` (the last one being typed), through the script."""
    if shutil.which("bash") is None:
        pytest.fail("bash is not installed")
    program = (f'source <(plug --show-completion bash)\nCOMP_WORDS=({" ".join(words)})\n'
               f"COMP_CWORD={len(words) - 1}\n_plug_completion plug\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    done = subprocess.run(["bash", "-c", program], cwd=project, env=environ(), capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_a_stage_name(project):
    assert bash_completes(project, "plug", "ro") == ["rollback"]
    assert bash_completes(project, "plug", "-s", "st") == ["staging"]
    assert bash_completes(project, "plug", "deploy", "--stage", "pro") == ["production"]
    assert "--dry-run" in bash_completes(project, "plug", "prune", "--d")
    # An unreadable plugbox.toml offers nothing, and never a traceback.
    (project / "plugbox.toml").write_text("[stages\n")
    assert bash_completes(project, "plug", "-s", "") == []


def test_zsh_and_fish_get_the_stage_names(project):
    def ask(**protocol: str) -> str:
        done = subprocess.run([str(PLUG)], cwd=project, env=environ(**protocol), capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert '"staging"' in ask(_PLUG_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="plug -s st")
    assert ask(_PLUG_COMPLETE="complete_fish", _TYPER_COMPLETE_FISH_ACTION="get-args",
               _TYPER_COMPLETE_ARGS="plug status -s p").split() == ["production"]


def test_version_names_come_from_the_local_home(project, tmp_path):
    for _ in range(2):
        deployed = subprocess.run([str(PLUG), "deploy"], cwd=project, env=environ(), capture_output=True,
                                  text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        assert deployed.returncode == 0, deployed.stderr
    names = sorted(os.listdir(tmp_path / "home" / "deploy"))
    names = [name for name in names if name[:1].isdigit()]
    assert bash_completes(project, "plug", "rollback", "") == ["live", "previous", "live~2", "live~3",
                                                               *reversed(names)]
    assert bash_completes(project, "plug", "verify", "2") == list(reversed(names))
    assert bash_completes(project, "plug", "-s", "staging", "verify", "2") == []  # the stage's home has none


def test_version_names_of_a_host_come_from_the_last_status(tmp_path, ssh_config, service_home, sshd):
    project = tmp_path / "remote"
    write_app(project, {"app/a.txt": "a\n"})
    write_config(project, service_home)
    plug = Plug(project, ssh_config)
    plug.ok("deploy")
    name = os.readlink(service_home / "deploy" / "live")
    assert bash_completes(project, "plug", "rollback", "2") == []  # no status yet: nothing known
    plug.ok("status")
    assert bash_completes(project, "plug", "rollback", "2") == [name]
    assert bash_completes(project, "plug", "remove", "-c", str(project / "plugbox.toml"), "2") == [name]
