"""``python -m learner.export``: kept as a thin entry point; the command is
:mod:`learner.commands.export` (``python -m learner.export --help``)."""

import sys

from learner.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
