"""`ansible-test sanity` of the collection, as tests/ansible_sanity.sh runs it without docker.

Slow (about a minute and a quarter the first time, when ansible-test makes its
virtualenvs from PyPI; seconds after): left out of the default run, run by CI.
"""

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_collection_passes_ansible_test_sanity() -> None:
    done = subprocess.run(["sh", str(ROOT / "tests" / "ansible_sanity.sh")], capture_output=True, text=True,
                          timeout=1200, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "Running sanity test \"validate-modules\"" in done.stdout
