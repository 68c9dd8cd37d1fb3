"""plug's quick look at its arguments, which starts the sessions before the CLI loads.

It must agree with the CLI: -c and -s before the command or after it, the values
of every option that takes one, and nothing after `exec COMMAND`.
"""

import pytest

from plugbox_client.main import _parse, _value


@pytest.mark.parametrize("argv, expected", [
    (["deploy"], ("deploy", None, None, [], None)),
    (["-s", "staging", "deploy", "-m", "why"], ("deploy", None, "staging", [], None)),
    (["--stage", "prod", "rollback", "V"], ("rollback", None, "prod", ["V"], None)),
    (["--stage=prod", "-c", "x.toml", "status"], ("status", "x.toml", "prod", [], None)),
    (["deploy", "--batch", "2", "--keep-going"], ("deploy", None, None, [], None)),
    (["-s", "prod", "deploy", "--help"], (None, None, None, [], None)),
    # the global options after the command
    (["deploy", "-s", "staging", "-c", "x.toml"], ("deploy", "x.toml", "staging", [], None)),
    (["rollback", "--rev", "abc1234", "--stage=prod"], ("rollback", None, "prod", [], None)),
    (["rollback", "live~2", "-s", "prod"], ("rollback", None, "prod", ["live~2"], None)),
    # given twice, differently: the CLI refuses it, so nothing starts ahead
    (["-s", "staging", "status", "-s", "production"], (None, None, None, [], None)),
    (["-c", "a.toml", "status", "--config=b.toml"], (None, None, None, [], None)),
    (["-s", "staging", "status", "--stage", "staging"], ("status", None, "staging", [], None)),
    # log's -n takes a value; elsewhere -n is --dry-run, which skips the head start
    (["log", "-n", "5", "--since", "2h"], ("log", None, None, [], None)),
    (["prune", "-n"], (None, None, None, [], None)),
    (["status", "--host", "web2", "-s", "prod"], ("status", None, "prod", [], "web2")),
    # after `exec COMMAND`, every word is the command's
    (["exec", "-s", "prod", "ls", "-s", "x"], ("exec", None, "prod", ["ls", "-s", "x"], None)),
    (["exec", "--", "ls", "-c", "x"], ("exec", None, None, ["ls", "-c", "x"], None)),
])
def test_the_stage_and_the_command_are_found(argv, expected):
    assert _parse(argv) == expected


def test_the_artifact_is_found_in_either_spelling():
    assert _value(["deploy", "--artifact", "app.tgz", "-m", "x"], "--artifact") == "app.tgz"
    assert _value(["deploy", "--artifact=a b.tgz"], "--artifact") == "a b.tgz"
    assert _value(["deploy", "--artifact"], "--artifact") == ""
    assert _value(["deploy", "-m", "x"], "--artifact") is None
