"""Average a run's last checkpoints into ``<run>/averaged/`` (WeSpeaker's ``average_model``).

Examples:
    python -m learner.average runs/20261124-073721-3f9a --last 3
    python -m learner.verify a.wav b.wav -c runs/20261124-073721-3f9a/averaged

The result is an ordinary checkpoint (no optimizer state), usable by every command. A run
with ``learner.average_last=N`` does this itself when it reaches ``learner.max_steps``
and evaluates the averaged model on its held-out speakers.
"""

from __future__ import annotations

import argparse
import sys

from learner.averaging import write_average
from learner.commands.cli import guarded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m learner.average",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a run folder (its checkpoints/ are averaged)")
    p.add_argument("--last", type=int, default=3, help="how many of the newest checkpoints")
    a = p.parse_args(argv)
    if a.last < 2:
        p.error("--last must be at least 2")

    def body() -> int:
        ckpt, used = write_average(a.run, a.last)
        print(f"averaged {', '.join(c.path.name for c in used)} into {ckpt.path}")
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
