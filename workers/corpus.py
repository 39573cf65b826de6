"""Speaker corpus scanning: a header-only manifest with a cache, speaker splits.

``SpeakerDatabase.scan(root)`` walks a corpus in one of the layouts of
:mod:`workers.layouts` (found automatically from where the audio files sit).
Durations come from file headers (``soundfile.info``), never from decoding
audio bodies. The manifest is cached as JSON keyed by each file's inode status (size,
mtime, ctime, inode number), with a BLAKE2b hash of its whole content that is computed
again only when that status changed, so a rescan reads no audio and re-reads only the
headers of files whose bytes changed. Files that
cannot be used are skipped with one warning each and counted by reason in
``db.skipped``.

    db = SpeakerDatabase.scan("~/LibriSpeech/train-clean-100")
    db.speakers, db.by_speaker["103"], db.skipped      # names, utterance indices, reasons
    train, held = db.split(0.1, seed=0)                 # speakers held out for evaluation
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.files import atomic_write, atomic_write_text
from workers.audio import AudioError, audio_info
from workers.cache_root import default_cache_root
from workers.listings import ListingError, list_root, utterance_id

log = logging.getLogger(__name__)

# 3: entries carry the file's inode status (size, mtime, ctime, inode) and a hash of its whole
# content, computed again whenever that status changed (2: a hash of its first and last 4 KiB)
MANIFEST_VERSION = 3
HASH_CHUNK = 1 << 20  # bytes read at a time for the content hash
MIN_ANCHOR_UTTERANCES = 2  # a speaker with fewer can be a negative, never an anchor


class CorpusError(ValueError):
    """A corpus root that cannot be trained on; the message names the path and what was found."""


@dataclass(frozen=True, slots=True)  # slots: a million of them is a VoxCeleb2 (bench/scale.py)
class Utterance:
    path: str  # relative to the corpus root
    speaker: str
    seconds: float
    sample_rate: int
    size: int = 0  # bytes and mtime when scanned: which version of the file this is
    mtime_ns: int = 0
    utt: str = ""  # the corpus's utterance id (Kaldi); else derived from the path
    content: str = ""  # a hash of the file's whole content (content_hash)

    @property
    def utt_id(self) -> str:
        return self.utt or utterance_id(self.path)


class UtteranceTable(Sequence):
    """The utterances of a database as columns: NumPy arrays and two byte blobs (paths,
    utterance ids) instead of an object per utterance, so a VoxCeleb2-sized listing
    (a million utterances) takes about 110 bytes each, not 1.4 KB (``bench/scale.py``).
    ``table[i]`` gives an :class:`Utterance`; iteration and ``len`` work as on a list."""

    COLUMNS = ("speaker", "seconds", "sample_rate", "size", "mtime_ns", "content")

    def __init__(self, speakers: list[str], cols: dict[str, np.ndarray]) -> None:
        self.speakers = speakers  # speaker index -> name
        self.cols = cols  # speaker, seconds, ... and path/utt blobs with their offsets

    @classmethod
    def of(cls, utterances: list[Utterance]) -> UtteranceTable:
        speakers = sorted({u.speaker for u in utterances})
        index = {s: i for i, s in enumerate(speakers)}
        n = len(utterances)
        cols = {
            "speaker": np.fromiter((index[u.speaker] for u in utterances), np.int32, n),
            "seconds": np.fromiter((u.seconds for u in utterances), np.float64, n),
            "sample_rate": np.fromiter((u.sample_rate for u in utterances), np.int32, n),
            "size": np.fromiter((u.size for u in utterances), np.int64, n),
            "mtime_ns": np.fromiter((u.mtime_ns for u in utterances), np.int64, n),
            "content": np.array([u.content.encode() for u in utterances], dtype="S16")
            if n
            else np.zeros(0, "S16"),
        }
        for name in ("path", "utt"):
            parts = [getattr(u, name).encode() for u in utterances]
            cols[f"{name}_blob"] = np.frombuffer(b"".join(parts), np.uint8).copy()
            cols[f"{name}_offsets"] = np.cumsum([0, *map(len, parts)], dtype=np.int64)
        return cls(speakers, cols)

    def __len__(self) -> int:
        return len(self.cols["speaker"])

    def _text(self, name: str, i: int) -> str:
        off = self.cols[f"{name}_offsets"]
        return self.cols[f"{name}_blob"][off[i] : off[i + 1]].tobytes().decode()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        c = self.cols
        return Utterance(
            self._text("path", i),
            self.speakers[c["speaker"][i]],
            float(c["seconds"][i]),
            int(c["sample_rate"][i]),
            int(c["size"][i]),
            int(c["mtime_ns"][i]),
            self._text("utt", i),
            c["content"][i].decode(),
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        if isinstance(other, UtteranceTable):
            return self.speakers == other.speakers and all(
                np.array_equal(col, other.cols[k]) for k, col in self.cols.items()
            )
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # mutable columns, as a list


def corpus_key(root: Path) -> str:
    """Stable name for a corpus root in the cache."""
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:10]}"


def content_hash(path: Path) -> str:
    """Which audio a file holds: BLAKE2b of its whole content, streamed (bounded memory).
    The scan computes it when the file's inode status (:func:`status_key`) changed, so a
    warm scan reads no audio (``bench/corpus.py`` measures the cost per hour of audio)."""
    digest = hashlib.blake2b(digest_size=8)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def status_key(st: os.stat_result) -> list[int]:
    """What tells a scan that a file may hold other bytes: size, mtime, and the inode's
    change time and number. A tool can restore a file's mtime (``touch -d``, ``rsync -t``,
    ``tar``) but not its ctime, which any write (and the restore itself) moves on; a file
    copied or swapped into place is another inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def wav_is_truncated(path: Path, size: int) -> bool:
    """True when a RIFF/WAVE file's ``data`` chunk claims more bytes than the file holds.

    libsndfile silently shortens such files; we read only the first 4 KiB.
    """
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            return length != 0xFFFFFFFF and pos + 8 + length > size  # 0xFFFFFFFF: streamed
        pos += 8 + length + (length & 1)
    return False


def _probe(path: Path, size: int) -> tuple[int, int] | str:
    """(frames, sample_rate) from the header, or the reason the file is unusable."""
    if size == 0:
        return "empty"
    if path.suffix.lower() == ".wav" and wav_is_truncated(path, size):
        return "truncated"
    try:
        return audio_info(path)
    except AudioError as exc:
        return exc.reason


@dataclass
class SpeakerDatabase:
    root: Path
    layout: str
    utterances: UtteranceTable  # a list of Utterance is turned into one
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.utterances, UtteranceTable):
            self.utterances = UtteranceTable.of(list(self.utterances))
        table = self.utterances
        self.speakers: list[str] = list(table.speakers)
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        codes = table.cols["speaker"]
        order = np.argsort(codes, kind="stable")  # each speaker's utterances in file order
        bounds = np.searchsorted(codes[order], np.arange(len(self.speakers) + 1))
        self.by_speaker: dict[str, list[int]] = {
            s: order[bounds[k] : bounds[k + 1]].tolist() for k, s in enumerate(self.speakers)
        }

    # -- scanning -------------------------------------------------------------------------
    @classmethod
    def scan(
        cls,
        root: str | Path,
        layout: str = "auto",
        min_seconds: float = 0.5,
        cache_dir: str = "",
        use_cache: bool = True,
        mic: str = "mic1",
    ) -> SpeakerDatabase:
        """Scan a corpus root (see :mod:`workers.listings`); several roots joined by
        ``os.pathsep`` (``a:b``) make one database whose speakers are kept apart by corpus."""
        roots = [r for r in str(root).split(os.pathsep) if r]
        if len(roots) > 1:
            return cls.merge(
                [cls.scan(r, layout, min_seconds, cache_dir, use_cache, mic) for r in roots]
            )
        root = Path(root).expanduser().resolve()
        if not root.exists():
            raise CorpusError(f"corpus root {root} does not exist")
        try:
            listing = list_root(root, layout, mic)
        except ListingError as exc:
            raise CorpusError(str(exc)) from None
        cache_file = default_cache_root(cache_dir) / "manifests" / f"{corpus_key(root)}.json"
        cached = _read_manifest_cache(cache_file) if use_cache else {}
        entries: dict[str, list] = {}
        skipped = {k: list(v) for k, v in listing.skipped.items()}
        utterances: list[Utterance] = []
        for item in listing.items:
            rel, st = item.path, item.stat
            if st is None:
                _skip(skipped, "missing", rel, "listed but not found")
                continue
            if not stat.S_ISREG(st.st_mode):  # /dev/zero never ends, a pipe blocks its reader
                _skip(
                    skipped,
                    "not_a_file",
                    rel,
                    "listed but not a regular file (device, pipe or folder)",
                )
                continue
            # The whole file is hashed again whenever its inode status changed: an edit
            # anywhere in it, with its mtime restored, still gets a new key.
            key, hit = status_key(st), cached.get(rel)
            if hit and hit[:4] == key:
                content, probe = hit[4], hit[5]
            else:
                content = content_hash(listing.base / rel)
                same = hit and hit[4] == content and content  # status moved, bytes did not
                probe = hit[5] if same else _probe(listing.base / rel, st.st_size)
            entries[rel] = [*key, content, probe]
            if item.speaker is None:
                _skip(skipped, "outside_layout", rel, f"not where {listing.layout} keeps audio")
            elif item.speaker == "":
                skipped.setdefault("other_mic", []).append(rel)
            elif isinstance(probe, str):
                _skip(skipped, probe, rel, f"{probe} audio file")
            else:
                frames, sr = probe
                seconds = frames / sr
                if seconds < min_seconds:
                    _skip(skipped, "too_short", rel, f"{seconds:.2f} s < {min_seconds} s")
                else:
                    utterances.append(
                        Utterance(
                            rel,
                            sys.intern(item.speaker),  # one string per speaker, not per file
                            seconds,
                            sr,
                            st.st_size,
                            st.st_mtime_ns,
                            item.utt,
                            content,
                        )
                    )
        _report(root, skipped)
        if use_cache and entries != cached:
            _write_manifest_cache(cache_file, entries)
        db = cls(listing.base, listing.layout, utterances, skipped)
        db.check()
        return db

    @classmethod
    def merge(cls, dbs: list[SpeakerDatabase]) -> SpeakerDatabase:
        """One database of several corpora: paths relative to their common folder, speakers
        named ``<corpus>/<speaker>`` (VoxCeleb2's id00012 is not CN-Celeb's id00012)."""
        base = Path(os.path.commonpath([str(db.root) for db in dbs]))
        names: list[str] = []
        for db in dbs:
            name = db.root.name or "root"
            names.append(name if name not in names else f"{name}{len(names)}")
        utterances, skipped = [], {}
        for name, db in zip(names, dbs, strict=True):
            prefix = os.path.relpath(db.root, base)
            for u in db.utterances:
                path = os.path.normpath(os.path.join(prefix, u.path))
                utt = f"{name}/{u.utt_id}"
                utterances.append(
                    dataclasses.replace(u, path=path, speaker=f"{name}/{u.speaker}", utt=utt)
                )
            for reason, files in db.skipped.items():
                skipped.setdefault(reason, []).extend(f"{name}/{f}" for f in files)
        return cls(base, "+".join(dict.fromkeys(db.layout for db in dbs)), utterances, skipped)

    def check(self) -> None:
        usable = [s for s in self.speakers if self.by_speaker[s]]
        if len(usable) < 2:
            found = ", ".join(f"{k}: {len(v)}" for k, v in sorted(self.skipped.items())) or "none"
            raise CorpusError(
                f"{self.root} ({self.layout} layout) has {len(usable)} usable speaker(s) with "
                f"{len(self.utterances)} utterance(s); at least 2 speakers are needed. "
                f"Skipped files by reason: {found}"
            )

    # -- a snapshot, for processes that would scan the same corpus again -------------------
    def save(self, path: str | Path) -> None:
        """The database as one ``.npz`` (no pickle): its columns and a JSON header."""
        t = self.utterances
        names = [s.encode() for s in t.speakers]
        header = {"version": MANIFEST_VERSION, "root": str(self.root), "layout": self.layout}
        header["skipped"] = self.skipped
        arrays = {
            **{f"col_{k}": v for k, v in t.cols.items()},
            "speaker_blob": np.frombuffer(b"".join(names), np.uint8),
            "speaker_offsets": np.cumsum([0, *map(len, names)], dtype=np.int64),
            "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        }
        atomic_write(Path(path), lambda fh: np.savez(fh, **arrays), fsync=False)

    @classmethod
    def load(cls, path: str | Path) -> SpeakerDatabase:
        """What :meth:`save` wrote; ValueError when it is not a snapshot of this version."""
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            if header.get("version") != MANIFEST_VERSION:
                raise ValueError(f"{path}: a snapshot of another version")
            blob, off = z["speaker_blob"], z["speaker_offsets"]
            speakers = [blob[off[k] : off[k + 1]].tobytes().decode() for k in range(len(off) - 1)]
            cols = {k[4:]: z[k] for k in z.files if k.startswith("col_")}
        table = UtteranceTable(speakers, cols)
        return cls(Path(header["root"]), header["layout"], table, header["skipped"])

    # -- views ------------------------------------------------------------------------------
    def anchor_speakers(self) -> list[str]:
        """Speakers with ``MIN_ANCHOR_UTTERANCES`` usable utterances: only these can be anchors."""
        return [s for s in self.speakers if len(self.by_speaker[s]) >= MIN_ANCHOR_UTTERANCES]

    def split(
        self, eval_fraction: float, seed: int = 0, min_eval: int = 2, min_utterances: int = 2
    ) -> tuple[list[str], list[str]]:
        """Deterministic speaker split (never utterances): ``(train, held_out)``.

        Held-out speakers are chosen by a seeded hash of the name (the split does not
        depend on file order and survives corpus growth) among :meth:`eval_candidates`;
        ``round(eval_fraction * speakers)`` of them, at least ``min_eval``. When the rule
        on ``min_utterances`` narrows the candidates, at most half of them are held out,
        so training keeps speakers with several recordings too.
        """
        if eval_fraction <= 0:
            return list(self.speakers), []

        def rank(s: str) -> str:
            return hashlib.sha1(f"{seed}:{s}".encode()).hexdigest()

        candidates = self.eval_candidates(min_utterances, min_eval)
        n = max(min_eval, round(eval_fraction * len(self.speakers)))
        if len(candidates) < len(self.anchor_speakers()):
            n = min(n, len(candidates) // 2)
        # Keep at least two anchor speakers for training.
        n = min(n, max(0, len(candidates) - 2))
        held = sorted(sorted(candidates, key=rank)[:n])
        train = [s for s in self.speakers if s not in set(held)]
        return train, held

    def eval_candidates(self, min_utterances: int = 2, min_eval: int = 2) -> list[str]:
        """The speakers that can be held out: those with ``min_utterances`` or more (several
        recordings: a speaker cut from one recording into 2-3 pieces would make target
        trials of one session). When fewer than ``2 * min_eval`` speakers qualify (a
        corpus without such speakers), every anchor speaker (:meth:`anchor_speakers`)."""
        many = [s for s in self.speakers if len(self.by_speaker[s]) >= min_utterances]
        if min_utterances > MIN_ANCHOR_UTTERANCES and len(many) < 2 * max(min_eval, 1):
            log.info(
                "%d speaker(s) have %d+ utterances (need %d): any anchor speaker can be held out",
                len(many),
                min_utterances,
                2 * max(min_eval, 1),
            )
            return self.anchor_speakers()
        return many

    def subset(self, speakers: list[str]) -> SpeakerDatabase:
        keep = sorted(i for s in set(speakers) if s in self.by_speaker for i in self.by_speaker[s])
        return SpeakerDatabase(
            self.root, self.layout, [self.utterances[i] for i in keep], self.skipped
        )

    def abspath(self, index: int) -> Path:
        return self.root / self.utterances[index].path

    def summary(self) -> str:
        skipped = sum(len(v) for k, v in self.skipped.items() if k != "not_audio")
        hours = float(self.utterances.cols["seconds"].sum()) / 3600
        return (
            f"{self.root}: {self.layout} layout, {len(self.speakers)} speakers, "
            f"{len(self.utterances)} utterances ({hours:.2f} h), {skipped} skipped"
        )


WARN_EACH = 20  # files named one by one per reason; the rest are counted in one line


def _skip(skipped: dict[str, list[str]], reason: str, rel: str, detail: str) -> None:
    skipped.setdefault(reason, []).append(rel)
    if len(skipped[reason]) <= WARN_EACH:
        log.warning("skipping %s: %s", rel, detail)


def _report(root: Path, skipped: dict[str, list[str]]) -> None:
    for reason, files in sorted(skipped.items()):
        if reason == "not_audio":
            log.info("ignored %d non-audio file(s) inside %s (e.g. %s)", len(files), root, files[0])
        elif reason in ("unsupported", "piped", "no_speaker") or len(files) > WARN_EACH:
            log.warning(
                "%s: %d file(s) skipped as %s (e.g. %s)", root, len(files), reason, files[0]
            )
        elif reason == "other_mic":
            log.info("%s: %d recording(s) of the other VCTK microphone left out", root, len(files))


def _read_manifest_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != MANIFEST_VERSION:
        return {}
    return {
        k: [*v[:5], v[5] if isinstance(v[5], str) else tuple(v[5])]
        for k, v in data.get("files", {}).items()
    }


def _write_manifest_cache(path: Path, entries: dict[str, list]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": MANIFEST_VERSION, "files": entries}))
    except OSError as exc:  # a read-only home must not stop training
        log.warning("cannot write the manifest cache %s: %s", path, exc)
