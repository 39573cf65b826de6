#!/usr/bin/env bash
# Refresh requirements.lock: resolve pyproject.toml (with its test extra) afresh in a clean
# virtual environment and record every version installed. Run after changing dependencies;
# commit the lock with the change (tests/cluster/test_lock.py fails while they disagree).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q ".[test]"
{
    echo "# The tested set of every package voice-embeddings and its test extra install (Python 3.11,"
    echo "# Linux x86_64). scripts/setup.sh installs with it as constraints; refresh it with"
    echo "# scripts/lock.sh after changing pyproject.toml (tests/cluster/test_lock.py checks they agree)."
    "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^voice-embeddings'
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
