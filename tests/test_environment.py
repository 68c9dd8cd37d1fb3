"""Each version's environment: kept beside it, given to hooks and exec, restored by a
rollback, changed by `env set`/`env unset` as a new version, never shown.

The file format by hypothesis; plugbox by hand on real files; plug over the real
sshd, with a scan for a sentinel secret in every file plugbox keeps, every output
and every process's command line while a hook runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import PLUG, TIMEOUT, Plug, live, versions, wait_for, write_app, write_config
from plugbox_host import PLUGBOX, Host
from plugbox_server import environment

# --- the file, and the rules ----------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda name: not name.startswith("PLUGBOX_"))
VALUES = st.text(st.characters(blacklist_characters="\n\0", blacklist_categories=("Cs",)), max_size=60)


@given(st.dictionaries(NAMES, VALUES, max_size=8))
def test_any_value_without_a_newline_or_a_nul_round_trips_exactly(values):
    text = environment.render(values)
    assert environment.parse(text) == values
    assert text.count(b"\n") == len(values)


def test_equals_signs_quotes_and_spaces_are_kept_as_they_are():
    values = {"URL": "postgres://u:p@h/db?sslmode=require&x=a=b", "Q": "'\"both\"'", "S": "  spaced  ", "E": ""}
    assert environment.parse(environment.render(values)) == values


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "PLUGBOX_HOME", "Ä", "A=B"])
def test_a_name_outside_the_rule_is_refused(name):
    assert environment.check_name(name) is not None


@pytest.mark.parametrize("value", ["a\nb", "a\0b", "\n"])
def test_a_value_with_a_newline_or_nul_is_refused_without_being_shown(value):
    why = environment.check_value("KEY", value)
    assert why and "KEY" in why and value not in why


# --- plugbox by hand -------------------------------------------------------------------

SECRET = "s3nt1nel-7f1d9c2e"


def env_set(host: Host, name: str, value: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLUGBOX, "env", "set", name, *args], input=value + "\n", env=host.env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


TRACE_ENV = ('[hooks]\npost_upload = [\'echo "post_upload KEY=${KEY:-} MODE=${MODE:-}" >> "$CTL/trace"\']\n'
             'check = [\'test ! -e "$CTL/fail-check"\']\n')


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "home", tmp_path / "ctl")


def test_set_makes_a_version_whose_hooks_and_exec_see_it_and_a_rollback_restores_the_old(host: Host) -> None:
    first = host.deploy_version(TRACE_ENV + '[env]\nMODE = "prod"\n')
    assert host.trace() == ["post_upload KEY= MODE=prod"]

    done = env_set(host, "KEY", SECRET, "-m", "the key")

    assert done.returncode == 0, done.stderr
    second = host.live()
    assert second != first and sorted(host.versions()) == sorted([first, second])
    assert host.trace() == [f"post_upload KEY={SECRET} MODE=prod"]
    # Live's files as uploaded, hard-linked; nothing inside the version but what was uploaded.
    assert os.stat(host.deploy / second / "MARKER").st_ino == os.stat(host.deploy / first / "MARKER").st_ino
    own = host.deploy / ".plugbox" / second / "env"
    assert own.read_text() == f"KEY={SECRET}\nMODE=prod\n" and own.stat().st_mode & 0o777 == 0o600
    assert host.ok("exec", "--", "sh", "-c", 'echo "$KEY $MODE"').stdout == f"{SECRET} prod\n"
    listed = host.ok("env").stdout
    assert "KEY" in listed and "plug env set" in listed and environment.digest(SECRET) in listed
    assert SECRET not in listed
    assert host.ok("env", "diff").stdout == "added KEY\n"
    assert host.ok("env", "get", "KEY").stdout == f"{SECRET}\n"
    record = json.loads((host.deploy / ".plugbox" / second / "record.json").read_text())
    assert record["change"] == {"set": ["KEY"], "unset": []} and record["message"] == "the key"
    assert record["environment"]["KEY"] == {"source": "set", "since": second}

    host.ok("rollback-to")
    assert host.live() == first
    assert host.ok("exec", "--", "sh", "-c", 'echo "[${KEY:-}]"').stdout == "[]\n"


def test_a_deploy_carries_set_values_forward_and_adds_its_env(host: Host) -> None:
    host.deploy_version(TRACE_ENV + '[env]\nMODE = "prod"\n')
    assert env_set(host, "KEY", SECRET).returncode == 0
    set_in = host.live()
    host.trace()

    third = host.deploy_version(TRACE_ENV + '[env]\nMODE = "staging"\n')

    assert host.trace() == [f"post_upload KEY={SECRET} MODE=staging"]
    known = json.loads((host.deploy / ".plugbox" / third / "record.json").read_text())["environment"]
    assert known == {"KEY": {"source": "set", "since": set_in}, "MODE": {"source": "toml", "since": third}}


def test_bad_input_is_one_line_and_changes_nothing(host: Host) -> None:
    host.deploy_version(TRACE_ENV + '[env]\nMODE = "prod"\n')
    before = sorted(os.listdir(host.deploy))
    cases = [
        (["env", "set", "1BAD"], "x", "'1BAD' is not a name"),
        (["env", "set", "KEY"], "two\nlines-unseen", "the value of KEY has a newline or a NUL"),
        (["env", "set", "KEY"], "nul\0unseen", "the value of KEY has a newline or a NUL"),
        (["env", "unset", "NOPE"], "", "NOPE is not set"),
        (["env", "set", "MODE"], "dev", "MODE comes from [env] of plugbox.toml"),
        (["env", "unset", "MODE"], "", "MODE comes from [env] of plugbox.toml"),
    ]
    for args, given_value, why in cases:
        done = subprocess.run([PLUGBOX, *args], input=given_value + "\n", env=host.env(), capture_output=True,
                              text=True, timeout=TIMEOUT)
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and len(lines) == 1 and why in lines[0], (args, done.stderr)
        assert "unseen" not in done.stderr  # a value, even a bad one, is never shown
        assert sorted(os.listdir(host.deploy)) == before, args


def test_a_name_set_on_the_host_and_in_env_is_refused_at_deploy(host: Host) -> None:
    host.deploy_version(TRACE_ENV)
    assert env_set(host, "KEY", SECRET).returncode == 0
    name = host.upload(TRACE_ENV + '[env]\nKEY = "from the project"\n')

    done = host.run("upgrade-to", name)

    assert done.returncode == 1
    assert "KEY is set on the host (plug env set) and in [env] of plugbox.toml" in done.stderr
    assert host.live() != name


def test_a_failing_check_after_set_switches_back_to_the_old_environment(host: Host) -> None:
    first = host.deploy_version(TRACE_ENV)
    host.arm("fail-check")

    done = env_set(host, "KEY", SECRET)

    assert done.returncode == 4, done.stderr
    assert host.live() == first
    assert host.ok("exec", "--", "sh", "-c", 'echo "[${KEY:-}]"').stdout == "[]\n"


def test_a_file_post_upload_wrote_in_place_is_never_shared_by_the_new_version(host: Host) -> None:
    host.deploy_version('[hooks]\npost_upload = ["echo built >> MARKER"]\n')
    before = sorted(os.listdir(host.deploy))

    done = env_set(host, "KEY", SECRET)

    assert done.returncode == 1
    assert "MARKER changed since it was uploaded" in done.stderr and "deploy instead" in done.stderr
    assert sorted(os.listdir(host.deploy)) == before


# --- plug over ssh: nothing leaks ------------------------------------------------------


@pytest.fixture
def plug(project_dir: Path, service_home: Path, ssh_config: Path) -> Plug:
    write_app(project_dir, {"app/a.txt": "a\n"})
    return Plug(project_dir, ssh_config)


def hooks_with_gate(ctl: Path) -> dict[str, list[str]]:
    """post_upload that shows the environment to /proc (it waits while the test looks)."""
    wait = (f'touch "{ctl}/hook-running"; i=0; while [ ! -e "{ctl}/go" ] && [ $i -lt 600 ]; '
            'do sleep 0.1; i=$((i+1)); done; rm -f "' + str(ctl) + '/go"')
    return {"post_upload": [wait], "check": ['test "${KEY:-}" != broken']}


def scan_processes(sentinel: str) -> tuple[int, list[str]]:
    """(how many command lines were read, those that hold the sentinel)."""
    read, hits = 0, []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            read += 1
            if sentinel.encode() in cmdline:
                hits.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return read, hits


def test_a_secret_reaches_the_hooks_and_nothing_else(plug: Plug, service_home: Path, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    write_config(plug.project, service_home, hooks=hooks_with_gate(ctl))
    (ctl / "go").touch()
    plug.deploy()
    outputs: list[str] = []
    snapshots = processes = 0
    hits: list[str] = []

    # Set it from standard input, as the docs say for a secret; look at every process
    # (this machine is both the client and the host) while the hook runs with it.
    setting = subprocess.Popen([str(PLUG), "env", "set", "KEY", "-m", "k"],
                               cwd=plug.project, env=plug.environ(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    setting.stdin.write(SECRET + "\n")
    setting.stdin.close()
    setting.stdin = None  # given whole: communicate() below only reads
    wait_for(lambda: (ctl / "hook-running").exists(), "post_upload to run with the secret")
    for _ in range(5):
        read, found = scan_processes(SECRET)
        snapshots, processes, hits = snapshots + 1, processes + read, hits + found
    (ctl / "go").touch()
    out, err = setting.communicate(timeout=TIMEOUT)
    assert setting.returncode == 0, err
    outputs += [out, err]

    (plug.project / "app" / "a.txt").write_text("b\n")
    (ctl / "go").touch()
    for args in (["deploy"], ["status"], ["status", "--json"], ["log"], ["log", "--output"], ["env"],
                 ["env", "diff"], ["verify"], ["check"], ["rollback"], ["env", "set", "OTHER=plain"],
                 ["exec", "--", "sh", "-c", 'test "$KEY" = "' + "s3nt1nel-" + '7f1d9c2e"']):
        (ctl / "go").touch()
        run = plug(*args)
        assert run.code == 0, (args, run.err)
        outputs += [run.out, run.err]
    # The value itself, asked for on purpose, is the one output that holds it.
    assert plug.ok("env", "get", "KEY").out == f"{SECRET}\n"

    files = [path for path in service_home.rglob("*")
             if path.is_file() and not path.is_symlink() and not (path.name == "env" and path.parent.parent.name == ".plugbox")]
    in_files = [str(path) for path in files if SECRET.encode() in path.read_bytes()]
    in_outputs = [text for text in outputs if SECRET in text]
    print(f"leak scan: {len(files)} files, {len(outputs)} outputs, {snapshots} process snapshots "
          f"({processes} command lines): {len(in_files) + len(in_outputs) + len(hits)} hits")
    assert (in_files, in_outputs, hits) == ([], [], [])
    assert len(files) > 20 and len(outputs) >= 24 and processes > 50
    # It was there all along where it belongs.
    envs = list((service_home / "deploy" / ".plugbox").glob("*/env"))
    assert any(SECRET in path.read_text() for path in envs)


def test_rollback_over_ssh_restores_the_environment(plug: Plug, service_home: Path) -> None:
    write_config(plug.project, service_home)
    plug.deploy()
    first = live(service_home)
    set_run = subprocess.run([str(PLUG), "env", "set", "KEY"], input="one\n", cwd=plug.project,
                             env=plug.environ(), capture_output=True, text=True, timeout=TIMEOUT)
    assert set_run.returncode == 0, set_run.stderr
    assert "environment: set KEY" in set_run.stdout and "one" not in set_run.stdout + set_run.stderr
    assert plug.ok("exec", "--", "sh", "-c", 'echo "$KEY"').out == "one\n"

    plug.ok("rollback")

    assert live(service_home) == first
    assert plug.ok("exec", "--", "sh", "-c", 'echo "[${KEY:-}]"').out == "[]\n"
    plug.ok("rollback", versions(service_home)[-1])
    assert plug.ok("exec", "--", "sh", "-c", 'echo "$KEY"').out == "one\n"
