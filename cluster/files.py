"""Writing files so that a reader never sees half of one: a temporary name, then ``os.replace``.

atomic_write_text(run.config_file, text)                      # fsynced: a run's record
atomic_write(path, lambda fh: np.save(fh, arr), fsync=False)  # a cache entry: recomputable
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(
    path: Path, write: Callable[[BinaryIO], object], fsync: bool = True, mode: int = 0o644
) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    ``fsync`` makes the bytes durable before the rename, and the rename itself after it
    (the folder is fsynced: else a power cut can bring back the old file, or none);
    caches whose entries can be recomputed skip both. The file is created with ``mode`` (before umask), so a secret is
    never readable by others, not even before a chmod. A failed write removes the
    temporary file and re-raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a killed writer with this pid
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()), fsync=fsync)
