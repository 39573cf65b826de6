"""``python -m learner.average``: kept as a thin entry point; the command is
:mod:`learner.commands.average` (``python -m learner.average --help``)."""

import sys

from learner.commands.average import main

if __name__ == "__main__":
    sys.exit(main())
