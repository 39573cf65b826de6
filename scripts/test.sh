#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, unit, component (Redis),
# integration (local Ray) and browser (headless Chromium) layers.
# Extra arguments go to pytest, e.g. scripts/test.sh -k features -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# The dashboard's browser test needs Debian's chromium and chromium-driver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing chromium and chromium-driver"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "error: the browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
fi
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> pytest"
exec python -m pytest "$@"
