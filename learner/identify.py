"""``python -m learner.identify``: kept as a thin entry point; the command is
:mod:`learner.commands.identify` (``python -m learner.identify --help``)."""

import sys

from learner.commands.identify import main

if __name__ == "__main__":
    sys.exit(main())
