"""``python -m learner.evaluate``: kept as a thin entry point; the command is
:mod:`learner.commands.evaluate` (``python -m learner.evaluate --help``)."""

import sys

from learner.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
