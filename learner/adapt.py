"""``python -m learner.adapt``: kept as a thin entry point; the command is
:mod:`learner.commands.adapt` (``python -m learner.adapt --help``)."""

import sys

from learner.commands.adapt import main

if __name__ == "__main__":
    sys.exit(main())
