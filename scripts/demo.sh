#!/usr/bin/env bash
# Set everything up, then train the demo preset on the embedded synthetic corpus (12 minutes
# of training on a 2-core CPU; with --data PATH, the small preset on your corpus for 20).
# Extra arguments go to `python -m learner` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m learner "$@"
