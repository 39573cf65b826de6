#!/usr/bin/env bash
# Create .venv (if needed) and install voice-embeddings with its test extra into it, at the
# versions of requirements.lock.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.installed-$(cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "==> installing voice-embeddings and its dependencies (first time: a few minutes)"
    python -m pip install -q --upgrade pip
    # The tested versions (requirements.lock, refreshed by scripts/lock.sh): the same set on
    # every machine. The gpu extra installs on top: `pip install -c requirements.lock -e ".[gpu]"`.
    python -m pip install -q -c requirements.lock -e ".[test]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
