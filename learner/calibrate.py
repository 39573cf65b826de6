"""``python -m learner.calibrate``: kept as a thin entry point; the command is
:mod:`learner.commands.calibrate` (``python -m learner.calibrate --help``)."""

import sys

from learner.commands.calibrate import main

if __name__ == "__main__":
    sys.exit(main())
