"""``python -m learner.verify``: kept as a thin entry point; the command is
:mod:`learner.commands.verify` (``python -m learner.verify --help``)."""

import sys

from learner.commands.verify import main

if __name__ == "__main__":
    sys.exit(main())
