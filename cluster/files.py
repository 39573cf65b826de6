"""Writing files so that a reader never sees half of one: a temporary name, then ``os.replace``.

atomic_write_text(run / "config.yaml", text)                  # fsynced: a run's record
atomic_write(path, lambda fh: np.save(fh, arr), fsync=False)  # a cache entry: recomputable
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object], fsync: bool = True) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    ``fsync`` makes the bytes durable before the rename; caches whose entries can be
    recomputed skip it. A failed write removes the temporary file and re-raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()), fsync=fsync)
