"""plugbox verify: every file changed, added or removed since the upload, by name.

Real files: versions share unchanged files as hard links, as rsync --link-dest
leaves them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import ok, plugbox


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "srv" / "svc"
    home.mkdir(parents=True)
    return home


def upload(home: Path, files: dict[str, str], link_from: str | None = None) -> str:
    """next-version, then an upload: files unchanged since `link_from` become hard links."""
    name = ok(home, "next-version").strip()
    for relative, text in files.items():
        path = home / "deploy" / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        old = home / "deploy" / link_from / relative if link_from else None
        if old is not None and old.is_file() and old.read_text() == text:
            os.link(old, path)
        else:
            path.write_text(text)
    return name


def deployed(home: Path, files: dict[str, str], link_from: str | None = None) -> str:
    name = upload(home, files, link_from)
    ok(home, "upgrade-to", name)
    return name


FILES = {"app/main.py": "print('hello')\n", "app/data.txt": "data\n", "README": "read me\n"}


def verify(home: Path, *args: str):
    ran = plugbox(home, "verify", *args)
    assert ran.exception is None and "Traceback" not in ran.stderr
    return ran


def test_an_untouched_version_verifies(home):
    name = deployed(home, FILES)
    ran = verify(home)
    assert (ran.exit_code, ran.stderr) == (0, "")
    digest = ok(home, "status", "--json")
    assert ran.stdout.startswith(f"{name}: as uploaded (sha256:") and ran.stdout.split("(")[1][:-2] in digest


def test_an_in_place_write_to_a_shared_hard_link_shows_in_every_version_sharing_it(home):
    first = deployed(home, FILES)
    second = deployed(home, {**FILES, "app/main.py": "print('two')\n"}, link_from=first)
    shared = home / "deploy" / second / "app" / "data.txt"
    assert shared.stat().st_nlink == 2
    with open(shared, "r+") as f:  # in place: the inode both versions share
        f.write("DATA")
    for name in (first, second):
        ran = verify(home, name)
        assert ran.exit_code == 1
        assert ran.stdout == "changed: app/data.txt\n"
        assert ran.stderr.startswith(f"plugbox: {name} differs from its upload in 1 path (digest sha256:")
        assert ran.stderr.endswith("; deploy again to get a clean version\n")


def test_an_added_and_a_removed_file_are_named(home):
    name = deployed(home, FILES)
    (home / "deploy" / name / "app" / "data.txt").unlink()
    (home / "deploy" / name / "app" / "extra.py").write_text("x = 1\n")
    (home / "deploy" / name / "new-dir").mkdir()
    ran = verify(home, name)
    assert ran.exit_code == 1
    assert ran.stdout.splitlines() == ["added: app/extra.py", "added: new-dir", "removed: app/data.txt"]
    assert "differs from its upload in 3 paths" in ran.stderr


def test_a_changed_mode_and_a_replaced_link_are_changes(home):
    name = upload(home, FILES)
    os.symlink("main.py", home / "deploy" / name / "app" / "entry")
    ok(home, "upgrade-to", name)
    (home / "deploy" / name / "README").chmod(0o755)
    (home / "deploy" / name / "app" / "entry").unlink()
    os.symlink("data.txt", home / "deploy" / name / "app" / "entry")
    assert verify(home).stdout.splitlines() == ["changed: README", "changed: app/entry"]


def test_what_post_upload_made_is_no_difference_and_is_watched_apart(home):
    files = {**FILES, "plugbox.toml": '[service]\nshared = ["log"]\n[hooks]\n'
                                      'post_upload = ["mkdir env && echo built > env/python", '
                                      '"echo more >> README"]\n'}
    name = deployed(home, files)
    ran = verify(home)
    assert ran.exit_code == 0, ran   # env/, the log link and the README it changed
    (home / "deploy" / name / "env" / "python").write_text("tampered, and longer\n")
    (home / "deploy" / name / "log").unlink()
    ran = verify(home)
    assert ran.exit_code == 1
    assert ran.stdout.splitlines() == ["changed since post_upload: env/python",
                                       "removed since post_upload: log"]


def test_plugbox_links_and_the_record_are_not_part_of_the_tree(home):
    first = deployed(home, FILES)
    deployed(home, FILES, link_from=first)   # first gets a next link, second a previous
    assert verify(home, first).exit_code == 0
    assert verify(home).exit_code == 0


def test_verify_refusals(home):
    ran = verify(home)
    assert (ran.exit_code, ran.stderr) == (1, f"plugbox: no deploy/ in {home}; deploy a first "
                                              "version with `plug deploy`\n")
    name = upload(home, FILES)
    ran = verify(home)
    assert ran.stderr == ("plugbox: there is no live version to verify; "
                          "name one: `plugbox verify VERSION`\n")
    ran = verify(home, name)   # made, never upgraded to: nothing to compare with
    assert ran.exit_code == 1 and f"{name} has no sealed record to verify against" in ran.stderr
    assert verify(home, "../etc").stderr.startswith("plugbox: '../etc' is not a version name")
