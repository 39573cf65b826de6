"""Corpus layouts: where a corpus keeps its audio, and whose voice each file is.

=============  ===============================  =========
layout         files                            speaker
=============  ===============================  =========
librispeech    ``spk/chapter/utt.flac``          ``spk``
voxceleb       ``id10001/video/00001.wav``       ``id10001``
vctk           ``wav48/p225/p225_001.wav``       ``p225``
flat           ``spk/utt.wav``                   ``spk``
=============  ===============================  =========

    files = walk(root)                                   # [(relative path, stat)], sorted
    layout = detect_layout([rel for rel, _ in files])
    speaker = speaker_of(Path(rel).parts, layout)        # None: not where the layout keeps audio
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

LAYOUTS = ("librispeech", "voxceleb", "vctk", "flat")


def walk(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every file below ``root`` (following links) as ``(relative path, stat)``, sorted.

    A folder reached a second time through a link (a loop, or two links to one folder)
    is skipped with a warning; a link that cannot be followed is skipped too.
    """
    out = []
    stack = [root]
    seen: set[tuple[int, int]] = set()
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            entries = list(os.scandir(d))
        except OSError as exc:
            log.warning("cannot list %s: %s", d, exc)
            continue
        if (st.st_dev, st.st_ino) in seen:
            log.warning("skipping %s: a link back to a folder already scanned", d)
            continue
        seen.add((st.st_dev, st.st_ino))
        for e in entries:
            if e.name.startswith("."):
                continue  # caches, editor files, .DS_Store
            try:
                if e.is_dir(follow_symlinks=True):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=True):
                    out.append((os.path.relpath(e.path, root), e.stat()))
            except OSError as exc:  # a dangling or looping link, a file gone meanwhile
                log.warning("skipping %s: %s", e.path, exc)
    out.sort()
    return out


def detect_layout(paths: list[str]) -> str:
    """Layout of the audio files' relative paths (see the module docstring)."""
    depths = Counter(len(Path(p).parts) for p in paths)
    if not depths:
        return "flat"
    depth = depths.most_common(1)[0][0]
    if depth == 2:
        return "flat"
    deep = [Path(p).parts for p in paths if len(Path(p).parts) == depth]
    if all(parts[0].lower().startswith("wav") for parts in deep):
        return "vctk"
    if depth == 3 and all(parts[1].isdigit() for parts in deep):
        return "librispeech"
    return "voxceleb"


def speaker_of(parts: tuple[str, ...], layout: str) -> str | None:
    want = 3 if layout in ("librispeech", "voxceleb", "vctk") else 2
    if len(parts) != want:
        return None
    return parts[1] if layout == "vctk" else parts[0]
