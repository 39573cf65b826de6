"""``python -m learner.enroll``: kept as a thin entry point; the command is
:mod:`learner.commands.enroll` (``python -m learner.enroll --help``)."""

import sys

from learner.commands.enroll import main

if __name__ == "__main__":
    sys.exit(main())
