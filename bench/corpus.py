"""Corpus indexing speed: a 10,000-file corpus scanned cold (headers read) and warm (cache hit).

python bench/corpus.py [--files 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import SHARED_SPEECH, report  # noqa: E402
from workers.corpus import SpeakerDatabase  # noqa: E402


def build(root: Path, n: int, per_speaker: int = 40) -> None:
    """LibriSpeech layout of hard links to real recordings: real headers, no disk cost."""
    sources = sorted(SHARED_SPEECH.glob("*/*.wav"))
    for i in range(n):
        spk, utt = divmod(i, per_speaker)
        d = root / str(1000 + spk) / str(10 * spk)
        d.mkdir(parents=True, exist_ok=True)
        dst = d / f"{1000 + spk}-{10 * spk}-{utt:04d}.wav"
        try:
            os.link(sources[i % len(sources)], dst)
        except OSError:  # another filesystem: copy instead
            shutil.copy(sources[i % len(sources)], dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=10_000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "corpus", Path(tmp) / "cache"
        build(root, a.files)
        t0 = time.perf_counter()
        db = SpeakerDatabase.scan(root, cache_dir=str(cache))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        SpeakerDatabase.scan(root, cache_dir=str(cache))
        warm = time.perf_counter() - t0
        report(
            {
                "bench": "corpus",
                "files": a.files,
                "speakers": len(db.speakers),
                "hours": round(sum(u.seconds for u in db.utterances) / 3600, 2),
                "cold_scan_s": round(cold, 3),
                "warm_scan_s": round(warm, 3),
                "files_per_s_cold": round(a.files / cold),
            }
        )


if __name__ == "__main__":
    main()
