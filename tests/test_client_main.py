"""plug's quick look at its arguments, which starts the sessions before the CLI loads."""

import pytest

from plugbox_client.main import _parse, _value


@pytest.mark.parametrize("argv, expected", [
    (["deploy"], ("deploy", None, None, [])),
    (["-s", "staging", "deploy", "-m", "why"], ("deploy", None, "staging", [])),
    (["--stage", "prod", "rollback", "V"], ("rollback", None, "prod", ["V"])),
    (["--stage=prod", "-c", "x.toml", "status"], ("status", "x.toml", "prod", [])),
    (["deploy", "--batch", "2", "--keep-going"], ("deploy", None, None, [])),
    (["-s", "prod", "deploy", "--help"], (None, None, None, [])),
])
def test_the_stage_and_the_command_are_found(argv, expected):
    assert _parse(argv) == expected


def test_the_artifact_is_found_in_either_spelling():
    assert _value(["deploy", "--artifact", "app.tgz", "-m", "x"], "--artifact") == "app.tgz"
    assert _value(["deploy", "--artifact=a b.tgz"], "--artifact") == "a b.tgz"
    assert _value(["deploy", "--artifact"], "--artifact") == ""
    assert _value(["deploy", "-m", "x"], "--artifact") is None
