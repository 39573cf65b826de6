"""Speaker corpus scanning: a header-only manifest with a cache, speaker splits.

``SpeakerDatabase.scan(root)`` walks a corpus in one of the layouts of
:mod:`workers.layouts` (found automatically from where the audio files sit).
Durations come from file headers (``soundfile.info``), never from decoding
audio bodies. The manifest is cached as JSON keyed by each file's size and
mtime, so a rescan re-reads only the headers of files that changed. Files that
cannot be used are skipped with one warning each and counted by reason in
``db.skipped``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from cluster.files import atomic_write_text
from workers.audio import AUDIO_EXTENSIONS
from workers.layouts import LAYOUTS, detect_layout, speaker_of, walk

log = logging.getLogger(__name__)

UNSUPPORTED_AUDIO = (".m4a", ".aac", ".wma", ".opus", ".amr", ".mp4", ".webm", ".aiff", ".au")
MANIFEST_VERSION = 1


class CorpusError(ValueError):
    """A corpus root that cannot be trained on; the message names the path and what was found."""


@dataclass(frozen=True)
class Utterance:
    path: str  # relative to the corpus root
    speaker: str
    seconds: float
    sample_rate: int
    size: int = 0  # bytes and mtime when scanned: which version of the file this is
    mtime_ns: int = 0


def default_cache_root(cache_dir: str = "") -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("VE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg) / "voice-embeddings"


def corpus_key(root: Path) -> str:
    """Stable name for a corpus root in the cache."""
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:10]}"


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
        info = sf.info(str(path))
    except Exception:
        return "unreadable"
    if info.frames <= 0 or info.samplerate <= 0:
        return "empty"
    return int(info.frames), int(info.samplerate)


@dataclass
class SpeakerDatabase:
    root: Path
    layout: str
    utterances: list[Utterance]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.speakers: list[str] = sorted({u.speaker for u in self.utterances})
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self.by_speaker: dict[str, list[int]] = {s: [] for s in self.speakers}
        for i, u in enumerate(self.utterances):
            self.by_speaker[u.speaker].append(i)

    # -- scanning -------------------------------------------------------------------------
    @classmethod
    def scan(
        cls,
        root: str | Path,
        layout: str = "auto",
        min_seconds: float = 0.5,
        cache_dir: str = "",
        use_cache: bool = True,
    ) -> SpeakerDatabase:
        root = Path(root).expanduser().resolve()
        if not root.exists():
            raise CorpusError(f"corpus root {root} does not exist")
        if not root.is_dir():
            raise CorpusError(f"corpus root {root} is not a directory")
        files = walk(root)
        audio = [(p, st) for p, st in files if p.lower().endswith(AUDIO_EXTENSIONS)]
        if not audio:
            raise CorpusError(
                f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}; "
                f"found {len(files)} other file(s)"
            )
        if layout == "auto":
            layout = detect_layout([p for p, _ in audio])
        elif layout not in LAYOUTS:
            raise CorpusError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")

        cache_file = default_cache_root(cache_dir) / "manifests" / f"{corpus_key(root)}.json"
        cached = _read_manifest_cache(cache_file) if use_cache else {}
        entries: dict[str, list] = {}
        skipped: dict[str, list[str]] = {}
        utterances: list[Utterance] = []
        other = 0
        for rel, st in files:
            lower = rel.lower()
            if len(Path(rel).parts) == 1 and not lower.endswith(AUDIO_EXTENSIONS):
                continue  # README.md, manifest.csv and the like beside the speaker folders
            if not lower.endswith(AUDIO_EXTENSIONS):
                if lower.endswith(UNSUPPORTED_AUDIO):
                    _skip(skipped, "unsupported", rel, "unsupported audio format")
                else:
                    other += 1
                    skipped.setdefault("not_audio", []).append(rel)
                continue
            key = [st.st_size, st.st_mtime_ns]
            hit = cached.get(rel)
            probe = hit[2] if hit and hit[:2] == key else _probe(root / rel, st.st_size)
            entries[rel] = key + [probe]
            speaker = speaker_of(Path(rel).parts, layout)
            if speaker is None:
                _skip(skipped, "outside_layout", rel, f"not where a {layout} corpus keeps audio")
            elif isinstance(probe, str):
                _skip(skipped, probe, rel, f"{probe} audio file")
            else:
                frames, sr = probe
                seconds = frames / sr
                if seconds < min_seconds:
                    _skip(skipped, "too_short", rel, f"{seconds:.2f} s < {min_seconds} s")
                else:
                    utterances.append(
                        Utterance(rel, speaker, seconds, sr, st.st_size, st.st_mtime_ns)
                    )
        if other:
            log.info(
                "ignored %d non-audio file(s) inside %s (e.g. %s)",
                other,
                root,
                skipped["not_audio"][0],
            )
        if use_cache and entries != cached:
            _write_manifest_cache(cache_file, entries)
        db = cls(root, layout, utterances, skipped)
        db.check()
        return db

    def check(self) -> None:
        usable = [s for s in self.speakers if self.by_speaker[s]]
        if len(usable) < 2:
            found = ", ".join(f"{k}: {len(v)}" for k, v in sorted(self.skipped.items())) or "none"
            raise CorpusError(
                f"{self.root} ({self.layout} layout) has {len(usable)} usable speaker(s) with "
                f"{len(self.utterances)} utterance(s); at least 2 speakers are needed. "
                f"Skipped files by reason: {found}"
            )

    # -- views ------------------------------------------------------------------------------
    def anchor_speakers(self) -> list[str]:
        """Speakers with at least two usable utterances: only these can be anchors."""
        return [s for s in self.speakers if len(self.by_speaker[s]) >= 2]

    def split(
        self, eval_fraction: float, seed: int = 0, min_eval: int = 2
    ) -> tuple[list[str], list[str]]:
        """Deterministic speaker split (never utterances): ``(train, held_out)``.

        Held-out speakers are chosen among those with two or more utterances
        (they make target trials), by a seeded hash of the name, so the split does
        not depend on file order and survives corpus growth.
        """
        if eval_fraction <= 0:
            return list(self.speakers), []

        def rank(s: str) -> str:
            return hashlib.sha1(f"{seed}:{s}".encode()).hexdigest()

        candidates = sorted(self.anchor_speakers(), key=rank)
        n = max(min_eval, round(eval_fraction * len(self.speakers)))
        # Keep at least two anchor speakers for training.
        n = min(n, max(0, len(candidates) - 2))
        held = sorted(candidates[:n])
        train = [s for s in self.speakers if s not in set(held)]
        return train, held

    def subset(self, speakers: list[str]) -> SpeakerDatabase:
        keep = set(speakers)
        return SpeakerDatabase(
            self.root, self.layout, [u for u in self.utterances if u.speaker in keep], self.skipped
        )

    def abspath(self, index: int) -> Path:
        return self.root / self.utterances[index].path

    def summary(self) -> str:
        skipped = sum(len(v) for k, v in self.skipped.items() if k != "not_audio")
        hours = sum(u.seconds for u in self.utterances) / 3600
        return (
            f"{self.root}: {self.layout} layout, {len(self.speakers)} speakers, "
            f"{len(self.utterances)} utterances ({hours:.2f} h), {skipped} skipped"
        )


def _skip(skipped: dict[str, list[str]], reason: str, rel: str, detail: str) -> None:
    skipped.setdefault(reason, []).append(rel)
    log.warning("skipping %s: %s", rel, detail)


def _read_manifest_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != MANIFEST_VERSION:
        return {}
    return {
        k: [v[0], v[1], v[2] if isinstance(v[2], str) else tuple(v[2])]
        for k, v in data.get("files", {}).items()
    }


def _write_manifest_cache(path: Path, entries: dict[str, list]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": MANIFEST_VERSION, "files": entries}))
    except OSError as exc:  # a read-only home must not stop training
        log.warning("cannot write the manifest cache %s: %s", path, exc)
