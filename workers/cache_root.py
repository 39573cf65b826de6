"""Where every cache of the project lives: manifests, features, speech, the synthetic corpus
and simulated rooms, each in its own sub-folder.

    default_cache_root()            # $VE_CACHE_DIR, else $XDG_CACHE_HOME/voice-embeddings
    default_cache_root("/fast/ssd") # a config's data.cache_dir wins
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_root(cache_dir: str = "") -> Path:
    """``cache_dir`` when given, else ``$VE_CACHE_DIR``, else ``~/.cache/voice-embeddings``
    (under ``$XDG_CACHE_HOME`` when set)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("VE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg) / "voice-embeddings"
