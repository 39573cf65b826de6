"""What the inference commands share: the --checkpoint argument and clear errors (exit 2)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from learner.checkpoint import CheckpointError  # noqa: E402
from workers.audio import AudioError  # noqa: E402

EXIT_ERROR = 2


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        help="checkpoint folder, or a run folder (its best checkpoint)",
    )
    return p


def guarded(body: Callable[[], int]) -> int:
    """Run a command body; bad input becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return body()
    except (AudioError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
