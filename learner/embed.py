"""Embed recordings: one unit-norm vector per file, written as .npy with an index.

Examples:
    python -m learner.embed ~/LibriSpeech/test-clean -c runs/20261124-073721-3f9a -o emb/
    python -m learner.embed a.wav b.wav -c runs/x -o emb/

Writes OUT/embeddings.npy ([N, D] float32, one row per embedded file) and
OUT/index.tsv (row, path, seconds of speech). Files that cannot be embedded
(unreadable, no speech) are listed in OUT/skipped.tsv with the reason; the
exit code is 2 only when nothing could be embedded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from learner.cli import EXIT_ERROR, guarded, parser
from learner.inference import SpeakerModel, expand_inputs
from workers.audio import AudioError


def embed_paths(
    model: SpeakerModel, paths: list[Path], progress: bool = True
) -> tuple[np.ndarray, list[tuple[Path, float]], list[tuple[Path, str]]]:
    rows, kept, skipped = [], [], []
    hop = model.cfg.features.hop_ms / 1000
    for path in tqdm(paths, unit="file", desc="embedding", disable=not progress):
        try:
            feats = model.features(path)
        except AudioError as exc:
            skipped.append((path, str(exc)))
            continue
        rows.append(model.embed_features([feats])[0])
        kept.append((path, round(len(feats) * hop, 2)))
    emb = np.stack(rows) if rows else np.zeros((0, model.cfg.model.embedding_dim), np.float32)
    return emb, kept, skipped


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.embed", __doc__)
    p.add_argument("inputs", nargs="+", help="audio files and/or folders")
    p.add_argument("-o", "--out", required=True, help="output folder")
    a = p.parse_args(argv)

    def body() -> int:
        model = SpeakerModel.load(a.checkpoint)
        paths = expand_inputs(a.inputs)
        if not paths:
            print("error: no audio files in the inputs", file=sys.stderr)
            return EXIT_ERROR
        emb, kept, skipped = embed_paths(model, paths, progress=sys.stderr.isatty())
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "embeddings.npy", emb)
        (out / "index.tsv").write_text("".join(f"{i}\t{p}\t{s}\n" for i, (p, s) in enumerate(kept)))
        (out / "skipped.tsv").write_text("".join(f"{p}\t{r}\n" for p, r in skipped))
        print(
            f"embedded {len(kept)} file(s) into {out}/embeddings.npy"
            + (f"; skipped {len(skipped)} (see skipped.tsv)" if skipped else "")
        )
        return 0 if kept else EXIT_ERROR

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
