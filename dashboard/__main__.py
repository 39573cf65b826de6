"""The live dashboard: loss, similarities, EER, timing and producer throughput of every run.

Examples:
    python -m dashboard                         # runs/ of this folder, http://127.0.0.1:8050
    python -m dashboard --runs /data/runs --port 8060
    REDIS_URL=redis://:pw@metrics-host:6379/0 python -m dashboard
    python -m dashboard --host 0.0.0.0          # expose it deliberately (no authentication!)

Without a Redis URL it reads the embedded store of each run directory under
--runs, starting that store's server on its persisted data when none is running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from dashboard.app import Dashboard, allowed_hosts
from dashboard.store import RunsDirSource, UrlSource


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", default="runs", help="folder of run directories (default: runs)")
    p.add_argument(
        "--redis",
        default=os.environ.get("REDIS_URL"),
        help="Redis URL shared by a cluster (default: REDIS_URL)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (a name that points at this machine); "
        "others get 403, so a site rebound to this address cannot read the dashboard",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = UrlSource(a.redis) if a.redis else RunsDirSource(a.runs)
    board = Dashboard(source, allowed_hosts=allowed_hosts(a.host, tuple(a.allow_host)))
    print(f"dashboard for {source.describe()} on http://{a.host}:{a.port}", file=sys.stderr)
    board.app.run(host=a.host, port=a.port, debug=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
