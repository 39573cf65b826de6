#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded synthetic corpus.
# Until the learner lands this runs the producer pipeline and prints its throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python bench/producers.py --seconds 5 "$@"
