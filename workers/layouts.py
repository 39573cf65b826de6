"""Corpus layouts: where a corpus keeps its audio, and whose voice each file is.

Layouts are recognised by the corpora's own file naming, wherever the files sit below
the root (a subset folder, a corpus root with several subsets, an archive unpacked
one folder higher):

============  ===================================================  ===========
layout        files (any folders above them)                       speaker
============  ===================================================  ===========
librispeech   ``<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``         ``<spk>``
voxceleb      ``id10001/<video>/00001.wav`` (1), ``.m4a`` (2)        ``id10001``
cnceleb       ``id00000/<genre>-<nn>-<nnn>.flac``                    ``id00000``
vctk          ``p225/p225_001_mic1.flac`` (0.92), ``p225_001.wav``   ``p225``
flat          ``<spk>/<utt>.<ext>``                                  ``<spk>``
============  ===================================================  ===========

Two more inputs are not folders of audio: a Kaldi data folder (``wav.scp`` +
``utt2spk``) and a CSV/TSV manifest (``path,speaker[,seconds]``); see
:mod:`workers.listings`.

    files = walk(root)                                   # [(relative path, stat)], sorted
    layout = detect_layout([rel for rel, _ in files])
    speaker = speaker_of(Path(rel).parts, layout)        # None: not where the layout keeps audio
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path

from cluster.corpora import NAMED_LAYOUTS

log = logging.getLogger(__name__)


_LIBRI = re.compile(r"^(\d+)-(\d+)-\d+$")
_CELEB_ID = re.compile(r"^id\d{5}$")
_VOX_UTT = re.compile(r"^\d{5}$")
_CNC_UTT = re.compile(r"^[a-z_]+-\d+-\d+$")
_VCTK = re.compile(r"^([ps]\d+)_\d+(?:_(mic[12]))?$")


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


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _named(parts: tuple[str, ...], layout: str, mic: str = "both") -> str | None:
    """The speaker when the path carries ``layout``'s own naming, else None."""
    stem = _stem(parts[-1])
    if layout == "librispeech":
        m = _LIBRI.match(stem)
        if len(parts) >= 3 and m and m.groups() == parts[-3:-1]:
            return parts[-3]
    elif layout == "voxceleb":
        if len(parts) >= 3 and _CELEB_ID.match(parts[-3]) and _VOX_UTT.match(stem):
            return parts[-3]
    elif layout == "cnceleb":
        if len(parts) >= 2 and _CELEB_ID.match(parts[-2]) and _CNC_UTT.match(stem):
            return parts[-2]
    elif layout == "vctk":
        m = _VCTK.match(stem)
        if len(parts) >= 2 and m and m.group(1) == parts[-2]:
            return parts[-2] if mic == "both" or m.group(2) in (None, mic) else ""
    return None


def detect_layout(paths: list[str]) -> str:
    """Layout of the audio files' relative paths: the corpus whose naming most files carry
    (at least half of them), else by folder depth (see the module docstring)."""
    if not paths:
        return "flat"
    split = [Path(p).parts for p in paths]
    named = Counter(
        layout for parts in split for layout in NAMED_LAYOUTS if _named(parts, layout) is not None
    )
    if named:
        layout, count = named.most_common(1)[0]
        if count * 2 >= len(paths):
            return layout
    depth = Counter(len(parts) for parts in split).most_common(1)[0][0]
    if depth == 2:
        return "flat"
    deep = [parts for parts in split if len(parts) == depth]
    if all(parts[0].lower().startswith("wav") for parts in deep):
        return "vctk"
    if depth == 3 and all(parts[1].isdigit() for parts in deep):
        return "librispeech"
    return "voxceleb"


def speaker_of(parts: tuple[str, ...], layout: str, mic: str = "both") -> str | None:
    """Whose voice the file at ``parts`` (relative to the root) is, by ``layout``'s naming,
    else by its folder depth; None when the file is not where the layout keeps audio, ""
    for a VCTK recording of the microphone not chosen."""
    found = _named(parts, layout, mic) if layout in NAMED_LAYOUTS else None
    if found is not None:
        return found
    if layout == "vctk":  # older releases: wav48/p225/p225_001.wav
        return parts[1] if len(parts) == 3 and parts[0].lower().startswith("wav") else None
    want = 3 if layout in ("librispeech", "voxceleb") else 2
    return parts[0] if len(parts) == want and layout != "cnceleb" else None
