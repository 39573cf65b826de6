"""TensorFlow imported without its native start-up chatter on stderr.

On a machine without a GPU, TensorFlow's C++ side writes to stderr before any Python
logging exists: "Could not find cuda drivers", "failed call to cuInit: ... (303)", the
oneDNN notice and absl's "All log messages before absl::InitializeLog()". No environment
variable silences all of them, so the import (and the first device query, where cuInit
runs) happens with file descriptor 2 pointed at a temporary file. What was written is
shown with ``VE_VERBOSE=1`` (``--verbose``), and always when the import fails.

    from learner.backend import tensorflow_quietly
    tensorflow_quietly()          # before `import keras` / `import tensorflow`
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

VERBOSE_ENV = "VE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Point fd 2 at a temporary file for the block; replay it on error or when verbose."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def tensorflow_quietly() -> None:
    """Import TensorFlow and let it look for GPUs once, its native messages captured."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # its later C++ messages: warnings up
    with native_stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # cuInit: where "failed call to cuInit" is said
