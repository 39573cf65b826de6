#!/usr/bin/env bash
# Set everything up, then train the demo preset on the embedded synthetic corpus
# (about ten minutes on a 2-core CPU). Extra arguments go to `python -m learner` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m learner "$@"
