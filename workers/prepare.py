"""The former name of :mod:`workers.transcode`, kept so that ``python -m workers.prepare`` still runs.

python -m workers.prepare ~/VoxCeleb2 ~/VoxCeleb2-flac   # same as python -m workers.transcode
"""

from __future__ import annotations

import sys

from workers.transcode import main

if __name__ == "__main__":
    sys.exit(main())
