"""Storage of per-utterance arrays: what an extractor (:mod:`workers.extract`) made of each
file, kept on disk and in memory, so each file is decoded once.

Cache layout: ``<cache_root>/<kind>/<corpus-key>/<spec>/<hash>.npy`` (``features`` for
log-mel, ``waves`` for int16 speech), the hash of the file's relative path and the hash of
its whole content (the manifest's), so a file whose bytes changed anywhere is extracted
again, and one only touched or copied is not. A file
that cannot be used leaves ``<hash>.rej`` holding the reason, so the next pass skips it
without decoding it again. Every write goes to a temporary name first and is renamed
into place, so a killed writer leaves no half-written entry and a restarted one simply
carries on.

    extractor = LogMelExtractor(cfg)
    source = CachedSource(db, extractor, FeatureStore.of(db.root, extractor))
    feats = source.get(i)       # from memory, else disk, else extracted (and written)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from cluster.files import atomic_write, atomic_write_text
from workers.audio import AudioError
from workers.cache_root import default_cache_root
from workers.corpus import SpeakerDatabase, Utterance, corpus_key
from workers.extract import Extractor
from workers.shards import ShardIndex

log = logging.getLogger(__name__)

# The in-memory LRU of computed features (or speech) per source, in bytes.
MEMORY_BYTES = 256 << 20


class RejectedAudio(AudioError):
    """An utterance a previous pass already found unusable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, f"{reason} (recorded in the feature cache)")
        self.reason = reason


class Quarantined(AudioError):
    """An utterance whose decoding killed a producer ``QUARANTINE_STRIKES`` times (out of
    memory, a crashing decoder): skipped for the rest of the run and counted."""

    reason = "quarantined"


class FeatureStore:
    """Read and write one corpus's cached arrays of one extractor and spec."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._shards: ShardIndex | None | bool = False  # False: not read yet

    @property
    def shards(self) -> ShardIndex | None:
        """Shards written by ``workers.precompute --shards N`` (read before a file each),
        their index read when first asked: a store that is only written never reads it."""
        if self._shards is False:
            self._shards = ShardIndex.open(self.root)
        return self._shards

    @classmethod
    def of(cls, corpus: Path, extractor: Extractor, cache_dir: str = "") -> FeatureStore:
        """The store of what ``extractor`` makes of ``corpus``'s files."""
        key = corpus_key(Path(corpus))
        return cls(default_cache_root(cache_dir) / extractor.kind / key / extractor.spec)

    def key(self, utt: Utterance) -> str:
        """The entry of one version of a file: its path and content hash, as in the manifest
        (its size and mtime where the hash could not be read). A file whose bytes changed
        anywhere (even with its size and mtime restored), or a rejected file repaired, gets
        a fresh entry; a file only touched keeps its features."""
        version = utt.content or f"{utt.size}\0{utt.mtime_ns}"
        ident = f"{utt.path}\0{version}"
        return hashlib.sha1(ident.encode()).hexdigest()[:20]

    def npy(self, utt: Utterance) -> Path:
        return self.root / f"{self.key(utt)}.npy"

    def rej(self, utt: Utterance) -> Path:
        return self.root / f"{self.key(utt)}.rej"

    def exists(self) -> bool:
        return self.root.is_dir() and (self.shards is not None or any(self.root.glob("*.npy")))

    def status(self, utt: Utterance) -> str | None:
        """``"done"``, ``"rejected"`` or ``None`` (not yet extracted)."""
        if self.shards is not None:
            found = self.shards.status(self.key(utt))
            if found is not None:
                return found
        if self.npy(utt).exists():
            return "done"
        if self.rej(utt).exists():
            return "rejected"
        return None

    def save(self, utt: Utterance, feats: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.npy(utt), lambda fh: np.save(fh, feats), fsync=False)

    def reject(self, utt: Utterance, reason: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.rej(utt), json.dumps({"path": utt.path, "reason": reason}), fsync=False
        )

    def rejection(self, utt: Utterance) -> str:
        if self.shards is not None and self.shards.status(self.key(utt)) == "rejected":
            return self.shards.rejection(self.key(utt))
        try:
            return json.loads(self.rej(utt).read_text())["reason"]
        except (OSError, ValueError, KeyError):
            return "rejected"

    def load(self, utt: Utterance) -> np.ndarray:
        if self.shards is not None:
            found = self.shards.get(self.key(utt))
            if found is not None:
                return found
        return np.load(self.npy(utt), mmap_mode="r")


class CachedSource:
    """What ``extractor`` makes of utterance ``i`` of a database: memory, else the store,
    else extracted.

    Extracted arrays are written to the store when ``write_cache`` is set, and kept in an
    in-memory LRU bounded by ``memory_bytes``. Open cache files are memory-mapped and
    kept in a bounded LRU as well, so the OS page cache is shared between producers on
    one machine.
    """

    def __init__(
        self,
        db: SpeakerDatabase,
        extractor: Extractor,
        store: FeatureStore | None = None,
        write_cache: bool = False,
        memory_bytes: int = MEMORY_BYTES,
        max_open: int = 4096,
        guard: Any = None,
    ) -> None:
        """``guard`` (a producer's :class:`DecodeGuard`) is told which file is being decoded,
        so a file that kills its producer is blamed and, the second time, quarantined."""
        self.db, self.extractor, self.store, self.write_cache = db, extractor, store, write_cache
        self.guard = guard
        self.memory_bytes = memory_bytes
        self.max_open = max_open
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lru_bytes = 0
        self.hits = self.computed = 0

    def get(self, index: int) -> np.ndarray:
        cached = self._lru.get(index)
        if cached is not None:
            self._lru.move_to_end(index)
            self.hits += 1
            return cached
        utt = self.db.utterances[index]
        feats = None
        if self.store is not None:
            status = self.store.status(utt)
            if status == "done":
                try:
                    feats = self.store.load(utt)
                except (OSError, ValueError) as exc:  # a damaged entry: recompute it
                    log.warning("cache entry for %s is unreadable (%s); recomputing", utt.path, exc)
            elif status == "rejected":
                raise RejectedAudio(utt.path, self.store.rejection(utt))
        if feats is None:
            try:
                feats = self._extract(index, utt)
            except Quarantined:
                raise
            except AudioError as exc:
                if self.store is not None and self.write_cache:
                    self._write(self.store.reject, utt, exc.reason)
                raise
            self.computed += 1
            if self.store is not None and self.write_cache:
                self._write(self.store.save, utt, feats)
        self._remember(index, feats)
        return feats

    def compute(self, index: int) -> np.ndarray:
        """What this source keeps of an utterance, computed from its audio."""
        return self.extractor(self.db.abspath(index), self.db.utterances[index].seconds)

    def _extract(self, index: int, utt: Utterance) -> np.ndarray:
        if self.guard is None:
            return self.compute(index)
        if not self.guard.begin(utt.path):
            raise Quarantined(utt.path, "its decoding killed a producer twice; skipped")
        try:
            return self.compute(index)
        finally:
            self.guard.end()

    def _write(self, write, utt: Utterance, value) -> None:
        """A cache that cannot be written (full disk, read-only) costs speed, never the run:
        say so once and go on computing features without writing them."""
        try:
            write(utt, value)
        except OSError as exc:
            self.write_cache = False
            log.warning(
                "cannot write the feature cache %s (%s): going on without writing to it",
                self.store.root,
                exc,
            )

    def _remember(self, index: int, feats: np.ndarray) -> None:
        # Memory-mapped arrays cost file handles, not memory: bound them by count.
        size = 0 if isinstance(feats, np.memmap) else feats.nbytes
        self._lru[index] = feats
        self._lru_bytes += size
        while self._lru and (self._lru_bytes > self.memory_bytes or len(self._lru) > self.max_open):
            _, old = self._lru.popitem(last=False)
            self._lru_bytes -= 0 if isinstance(old, np.memmap) else old.nbytes
