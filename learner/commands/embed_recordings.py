"""Embed recordings: one unit-norm vector per file, written as .npy with an index.

Examples:
    python -m learner.embed ~/LibriSpeech/test-clean -c runs/20261124-073721-3f9a -o emb/
    python -m learner.embed a.wav b.wav -c runs/x -o emb/

Each embedding is keyed by an utterance id: a file's path below the folder given,
without its extension (``id10270/x6uYqmx31kE/00001``, the names VoxCeleb trial
lists use), or a file given by itself, its path as given without the extension.
Writes OUT/embeddings.npy ([N, D] float32 unit vectors), OUT/index.tsv (a header
with the model fingerprint, then row, utterance id, path, seconds of speech and the
input's quality: SNR estimate, clipped share, spectral dynamics) and
the same vectors as a Kaldi archive, OUT/embeddings.ark + .scp (see
learner/scoring/embedding_files.py). Files that cannot be embedded (unreadable, no speech,
noise or music below the --min-* limits) are
listed in OUT/skipped.tsv with the reason; the exit code is 2 only when nothing
could be embedded. ``python -m learner.evaluate --embeddings OUT`` scores them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from learner.commands.cli import EXIT_ERROR, add_progress, guarded, load_model, parser
from learner.inference.recordings import progress_bar
from learner.inference.speaker_model import SpeakerModel, expand_inputs
from learner.scoring.embedding_files import colliding_ids, write_embeddings
from workers.audio import AudioError
from workers.quality import Quality


def embed_paths(
    model: SpeakerModel, paths: list[Path], progress: bool | None = True
) -> tuple[np.ndarray, list[tuple[Path, Quality]], list[tuple[Path, str]]]:
    """Each file's embedding (rows of the usable ones, in order) with its quality, and the
    files that could not be used with the reason. ``progress``: a bar on stderr (None: only
    on a terminal)."""
    rows, kept, skipped = [], [], []
    with progress_bar(len(paths), "embedding", "file", progress) as bar:
        for path in paths:
            bar.update(1)
            try:
                vector, quality = model.embed(path)
            except AudioError as exc:
                skipped.append((path, str(exc)))
                continue
            rows.append(vector)
            kept.append((path, quality))
    emb = np.stack(rows) if rows else np.zeros((0, model.cfg.model.embedding_dim), np.float32)
    return emb, kept, skipped


def inputs_with_ids(items: list[str]) -> list[tuple[Path, str]]:
    """``(file, utterance id)`` for files and folders given on the command line."""
    out = []
    for item in items:
        p = Path(item)
        for f in expand_inputs([item]):
            rel = f.relative_to(p).as_posix() if p.is_dir() else item
            out.append((f, rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel))
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.embed", __doc__)
    p.add_argument("inputs", nargs="+", help="audio files and/or folders")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_progress(p)
    a = p.parse_args(argv)

    def body() -> int:
        model = load_model(a)
        found = inputs_with_ids(a.inputs)
        if not found:
            print("error: no audio files in the inputs", file=sys.stderr)
            return EXIT_ERROR
        ids = dict(found)
        if len(set(ids.values())) != len(ids):
            print("error: two inputs give the same utterance id", file=sys.stderr)
            return EXIT_ERROR
        clashes = colliding_ids({str(p): u for p, u in ids.items()})
        if clashes:  # before any work: say which files, and what to do
            names = "; ".join(" and ".join(repr(n) for n in group) for group in clashes)
            print(
                f"error: these files give one utterance id once whitespace becomes '_' (Kaldi "
                f"keys hold none): {names}. Rename one of each, or embed them in separate runs",
                file=sys.stderr,
            )
            return EXIT_ERROR
        emb, kept, skipped = embed_paths(model, list(ids), a.progress)
        out = Path(a.out)
        write_embeddings(
            out,
            [ids[p] for p, _ in kept],
            emb,
            model.fingerprint,
            [str(p) for p, _ in kept],
            [round(q.speech_s, 2) for _, q in kept],
            [q.as_dict() for _, q in kept],
        )
        (out / "skipped.tsv").write_text("".join(f"{p}\t{r}\n" for p, r in skipped))
        print(
            f"embedded {len(kept)} file(s) into {out}/embeddings.npy"
            + (f"; skipped {len(skipped)} (see skipped.tsv)" if skipped else "")
        )
        return 0 if kept else EXIT_ERROR

    return guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
