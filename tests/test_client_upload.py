"""What a dry run against the live version says: whether the upload differs from it."""

import pytest

from plugbox_client.upload import Count, unchanged


def counted(*lines: str) -> Count:
    count = Count(dry_run=True)
    for line in lines:
        count.line(line)
    return count


SAME = (".d          0 ./", ".f          6 app.py", ".d          0 static/", ".f          9 static/a.css")


@pytest.mark.parametrize("extra, same", [
    ((), True),
    # post_upload's own, in live only: deleted there, and the root's time it touched
    (("*deleting   0 env/bin/python", ".d..t......  0 ./"), True),
    ((".L..t...... 0 current",), True),
    ((">f.st...... 7 app2.py",), False),          # a file sent
    ((".f...p..... 6 run.sh",), False),           # a mode changed
    (("cd+++++++++ 0 new/",), False),             # a directory made
    (("cL+++++++++ 0 link -> app.py",), False),   # a link made
    ((".d...p..... 0 static/",), False),          # a directory's mode
])
def test_a_dry_run_differs_by_what_it_would_change(extra, same):
    count = counted(*SAME, *extra)
    assert unchanged(count, live_files=3 + (">f" in "".join(extra))) is same


def test_a_file_removed_here_shows_in_the_count_of_live_files():
    """Its deletion looks like post_upload's: live, as uploaded, had one file more."""
    count = counted(*SAME, "*deleting   0 gone.py")
    assert unchanged(count, live_files=3)        # 2 files + the host's plugbox.toml
    assert not unchanged(count, live_files=4)
    assert not unchanged(count, live_files=None)  # a live version without a record
