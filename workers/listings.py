"""What a corpus root lists, before any header is read: audio files and their speakers.

A root is one of three things:

- a folder of audio in one of the layouts of :mod:`workers.layouts`;
- a Kaldi data folder: ``wav.scp`` (``<utt> <path>``) and ``utt2spk`` (``<utt> <spk>``).
  Relative paths are taken from the recipe folder (two levels above ``data/<set>``), then
  from the data folder itself. Piped commands (``<utt> sox ... - |``) are refused: they
  would run a shell command written in a file; convert them once (``wav-copy`` or
  ``python -m workers.transcode``) or list the files in a CSV manifest;
- a CSV or TSV manifest file: ``path,speaker[,seconds]`` with an optional header row,
  paths relative to the manifest's folder.

    listing = list_root(Path("~/LibriSpeech").expanduser(), layout="auto", mic="mic1")
    listing.items      # [Item(path, speaker, stat, utt)], paths relative to listing.base
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cluster.corpora import LAYOUTS
from workers.audio import AUDIO_EXTENSIONS
from workers.layouts import detect_layout, speaker_of, walk

log = logging.getLogger(__name__)

UNSUPPORTED_AUDIO = (".mid", ".midi")  # not recordings
MANIFEST_SUFFIXES = (".csv", ".tsv")


class ListingError(ValueError):
    """A root that lists no audio at all; the message says what was found instead."""


@dataclass(frozen=True)
class Item:
    path: str  # relative to the listing's base, or absolute (Kaldi, manifests)
    speaker: str | None  # None: outside the layout; "": a recording not chosen (VCTK mic)
    stat: os.stat_result | None  # None: the file is missing
    utt: str = ""  # utterance id given by the corpus (Kaldi), else derived from the path


@dataclass
class Listing:
    base: Path
    layout: str
    items: list[Item]
    skipped: dict[str, list[str]] = field(default_factory=dict)


def utterance_id(path: str) -> str:
    """A path's utterance id when the corpus gives none: its relative path without extension
    (``id10270/x6uYqmx31kE/00001``: the VoxCeleb trial lists' names without ``.wav``)."""
    return path.rsplit(".", 1)[0] if "." in Path(path).name else path


def list_root(root: Path, layout: str = "auto", mic: str = "both") -> Listing:
    if layout not in ("auto", *LAYOUTS):
        raise ListingError(f"unknown layout {layout!r}; one of auto, {', '.join(LAYOUTS)}")
    if root.is_file():
        if layout not in ("auto", "manifest") or root.suffix.lower() not in MANIFEST_SUFFIXES:
            raise ListingError(f"{root} is a file; a corpus is a folder or a .csv/.tsv manifest")
        return _manifest(root)
    if layout == "kaldi" or (layout == "auto" and (root / "wav.scp").is_file()):
        return _kaldi(root)
    return _folder(root, layout, mic)


def _folder(root: Path, layout: str, mic: str) -> Listing:
    files = walk(root)
    audio = [(p, st) for p, st in files if p.lower().endswith(AUDIO_EXTENSIONS)]
    if not audio:
        raise ListingError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}; "
            f"found {len(files)} other file(s)"
        )
    if layout == "auto":
        layout = detect_layout([p for p, _ in audio])
    listing = Listing(root, layout, [])
    for rel, st in files:
        lower = rel.lower()
        if lower.endswith(AUDIO_EXTENSIONS):
            listing.items.append(Item(rel, speaker_of(Path(rel).parts, layout, mic), st))
        elif len(Path(rel).parts) == 1:
            continue  # README.md, manifest.csv and the like beside the speaker folders
        elif lower.endswith(UNSUPPORTED_AUDIO):
            listing.skipped.setdefault("unsupported", []).append(rel)
        else:
            listing.skipped.setdefault("not_audio", []).append(rel)
    return listing


def _stat(path: Path) -> os.stat_result | None:
    """The listed path's status (links followed), or None when there is nothing there; the
    corpus scan says when it is there but no regular file (a device, a pipe, a folder)."""
    try:
        return path.stat()
    except OSError:
        return None


def _read_table(path: Path) -> dict[str, str]:
    """``<key> <rest of line>`` per line (Kaldi tables)."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        if not rest.strip():
            raise ListingError(f"{path}:{n}: expected '<utterance-id> <value>', got {line!r}")
        out[key] = rest.strip()
    return out


def _kaldi(folder: Path) -> Listing:
    scp, u2s = folder / "wav.scp", folder / "utt2spk"
    for f in (scp, u2s):
        if not f.is_file():
            raise ListingError(f"{folder}: a Kaldi data folder needs {f.name}; it is missing")
    if (folder / "segments").exists():
        raise ListingError(
            f"{folder}/segments: utterances cut from longer recordings are not supported; "
            "extract them to files first (Kaldi's extract-segments) or give a CSV manifest"
        )
    wavs, speakers = _read_table(scp), _read_table(u2s)
    recipe = folder.parent.parent
    listing = Listing(folder, "kaldi", [])
    piped = []
    for utt, where in wavs.items():
        if where.endswith("|"):
            piped.append(utt)
            continue
        path = Path(where)
        if not path.is_absolute():
            path = next((b / path for b in (recipe, folder) if (b / path).exists()), recipe / path)
        if utt not in speakers:
            listing.skipped.setdefault("no_speaker", []).append(utt)
            continue
        listing.items.append(Item(str(path), speakers[utt], _stat(path), utt))
    if piped:
        listing.skipped["piped"] = piped
        if not listing.items:
            raise ListingError(
                f"{scp}: all {len(piped)} entries are piped commands (e.g. "
                f"{wavs[piped[0]]!r}); they are not run. Convert the audio to files once "
                "(wav-copy scp:wav.scp ark,scp:...) or list them in a CSV manifest"
            )
        log.warning("%s: %d piped command(s) not run (e.g. %s)", scp, len(piped), piped[0])
    return checked(listing, scp)


def _manifest(path: Path) -> Listing:
    text = path.read_text()
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" or "\t" in text[:4096] else "excel"
    rows = [r for r in csv.reader(text.splitlines(), dialect) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "speaker"]:
        rows = rows[1:]
    listing = Listing(path.parent, "manifest", [])
    for n, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ListingError(f"{path}: row {n} {row!r} is not 'path,speaker[,seconds]'")
        rel, speaker = row[0].strip(), row[1].strip()
        listing.items.append(Item(rel, speaker, _stat(path.parent / rel)))
    if not listing.items:
        raise ListingError(f"{path}: the manifest lists no files")
    return checked(listing, path)


def checked(listing: Listing, source: Path) -> Listing:
    """A list's entries looked over: paths outside the list's folder (``../x.wav``,
    absolute ones) are counted and said once (taken as listed: a manifest may name files
    anywhere); a file listed under two speakers keeps its first speaker, and the others
    are skipped as ``duplicate`` (one voice with two labels poisons training)."""
    base = os.path.normpath(listing.base.absolute())
    outside, first, keep = [], {}, []
    for item in listing.items:
        # By name, not by following links: a corpus of links into a store is not "outside".
        where = os.path.normpath(os.path.join(base, item.path))  # an absolute path stays
        if os.path.commonpath([base, where]) != base:
            outside.append(item.path)
        other = first.setdefault(where, item.speaker)
        if other != item.speaker:
            listing.skipped.setdefault("duplicate", []).append(item.path)
            continue
        keep.append(item)
    if outside:
        log.warning(
            "%s: %d listed file(s) lie outside %s (e.g. %s); they are used as listed",
            source,
            len(outside),
            base,
            outside[0],
        )
    dupes = listing.skipped.get("duplicate", [])
    if dupes:
        log.warning(
            "%s: %d file(s) listed under two speakers (e.g. %s); each keeps its first speaker",
            source,
            len(dupes),
            dupes[0],
        )
    listing.items = keep
    return listing
