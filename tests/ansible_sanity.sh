#!/bin/sh
# ansible-test sanity for the collection, without docker: sh tests/ansible_sanity.sh [VENV]
#
# ansible-test wants a checkout-free ansible-core of its own (VENV, default
# ~/.cache/plugbox/ansible-test) and makes a virtualenv per sanity test under
# ~/.ansible/test/venv, each bootstrapped with a get-pip script it downloads from
# ci-files.testing.ansible.com. Where only PyPI can be reached, a stand-in for
# that script is written to ansible-test's cache first: like get-pip.py, it runs
# `pip install ARGS` from a pip wheel (from PyPI) on sys.path. Only Python 3.11
# is tested (--python 3.11): other pythons must be on PATH to be tried.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$HOME/.cache/plugbox/ansible-test}
pip_version=24.2   # ansible-core 2.19's (ansible_test/_data/requirements/...)
cache=$HOME/.ansible/test/cache

if [ ! -x "$venv/bin/ansible-test" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'ansible-core>=2.19,<2.20'
fi
stand_in=$cache/get_pip_$(echo "$pip_version" | tr . _).py
if [ ! -f "$stand_in" ]; then
    mkdir -p "$cache"
    "$venv/bin/pip" download -q --no-deps "pip==$pip_version" -d "$cache"
    cat >"$stand_in.tmp" <<EOF
# Stand-in for ansible-test's get-pip-$pip_version.py (written by plugbox's tests/ansible_sanity.sh).
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$pip_version-py3-none-any.whl"))
from pip._internal.cli.main import main  # noqa: E402

sys.exit(main(["install", *[a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]]))
EOF
    mv "$stand_in.tmp" "$stand_in"
fi
cd "$here/ansible_collections/plugbox/deploy"
status=0
"$venv/bin/ansible-test" sanity --local --requirements --python 3.11 || status=$?
rm -rf tests/output
exit "$status"
