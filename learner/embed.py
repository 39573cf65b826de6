"""``python -m learner.embed``: kept as a thin entry point; the command is
:mod:`learner.commands.embed_recordings` (``python -m learner.embed --help``)."""

import sys

from learner.commands.embed_recordings import main

if __name__ == "__main__":
    sys.exit(main())
