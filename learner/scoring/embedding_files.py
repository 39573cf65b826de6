"""Embeddings on disk, keyed by utterance id, in the field's formats.

A folder written by :func:`write_embeddings` holds

- ``embeddings.npy``: ``[N, D]`` float32 unit vectors, one row per utterance;
- ``index.tsv``: a header line ``# voice-embeddings model=<fingerprint> dim=<D>``, a column
  line, then ``row  utt  path  seconds  snr_db  clipping  dynamics_db`` per row: seconds of
  speech and the input's quality (``workers.quality``; folders written before the quality
  columns have the first four only and still read). Ids hold no whitespace; tab, newline,
  carriage return and backslash in a path are escaped (:func:`tsv_field`);
- ``embeddings.ark`` / ``embeddings.scp``: the same vectors as a Kaldi archive (kaldiio),
  for Kaldi, WeSpeaker and SpeechBrain back ends (PLDA, score normalisation).

:func:`read_embeddings` reads such a folder, or any Kaldi ``.scp`` / ``.ark`` of vectors.

    write_embeddings(out, ["id10270/x6uYqmx31kE/00001", ...], emb, fingerprint, paths, seconds)
    keys, emb, fingerprint = read_embeddings(out)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

HEADER = "# voice-embeddings"
QUALITY_COLUMNS = ("snr_db", "clipping", "dynamics_db")
COLUMNS = "\t".join(["row", "utt", "path", "seconds", *QUALITY_COLUMNS])
OLD_COLUMNS = "row\tutt\tpath\tseconds"  # before the quality columns


class EmbeddingsError(ValueError):
    """A folder or file that does not hold embeddings we can read."""


def kaldi_key(utt: str) -> str:
    """Kaldi archive keys cannot hold whitespace."""
    return re.sub(r"\s+", "_", utt)


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def tsv_field(text: str) -> str:
    r"""``text`` fit for one field of a line of ``index.tsv``: backslash, tab, newline and
        carriage return escaped as ``\``, ``	``, ``
    ``, ``
    `` (a file name may hold any)."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def colliding_ids(ids: dict[str, str]) -> list[list[str]]:
    """Groups of the given names (name -> utterance id) whose ids are one key once made fit
    for Kaldi (``a b`` and ``a_b``): each such group must be renamed apart."""
    by_key: dict[str, list[str]] = {}
    for name, utt in ids.items():
        by_key.setdefault(kaldi_key(utt), []).append(name)
    return [names for names in by_key.values() if len(names) > 1]


def write_embeddings(
    out: Path,
    keys: list[str],
    emb: np.ndarray,
    fingerprint: str,
    paths: list[str] | None = None,
    seconds: list[float] | None = None,
    quality: list[dict[str, float]] | None = None,
) -> None:
    """``quality``: per row, the ``QUALITY_COLUMNS`` (``Quality.as_dict()``); empty if None."""
    import kaldiio

    out.mkdir(parents=True, exist_ok=True)
    emb = np.asarray(emb, dtype=np.float32)
    keys = [kaldi_key(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise EmbeddingsError("utterance ids must be unique")
    np.save(out / "embeddings.npy", emb)
    paths = paths or [""] * len(keys)
    seconds = seconds or [0.0] * len(keys)
    quality = quality or [{}] * len(keys)
    lines = [f"{HEADER} model={fingerprint} dim={emb.shape[1] if emb.ndim == 2 else 0}", COLUMNS]
    lines += [
        "\t".join([str(i), k, tsv_field(p), str(s), *(str(q.get(c, "")) for c in QUALITY_COLUMNS)])
        for i, (k, p, s, q) in enumerate(zip(keys, paths, seconds, quality, strict=True))
    ]
    (out / "index.tsv").write_text("\n".join(lines) + "\n")
    with kaldiio.WriteHelper(f"ark,scp:{out / 'embeddings.ark'},{out / 'embeddings.scp'}") as w:
        for k, v in zip(keys, emb, strict=True):
            w(k, v)


def read_embeddings(where: str | Path) -> tuple[list[str], np.ndarray, str]:
    """``(utterance ids, [N, D] vectors, model fingerprint or "")`` from a folder written by
    :func:`write_embeddings` or from a Kaldi ``.scp``/``.ark`` of vectors."""
    where = Path(where)
    if where.is_dir() and (where / "index.tsv").is_file():
        return _read_folder(where)
    if where.suffix in (".scp", ".ark") and where.is_file():
        import kaldiio

        loader = kaldiio.load_scp if where.suffix == ".scp" else kaldiio.load_ark
        try:
            pairs = [(k, np.asarray(v, np.float32)) for k, v in dict(loader(str(where))).items()]
        except Exception as exc:  # kaldiio raises several types for bad files
            raise EmbeddingsError(f"{where}: not a Kaldi archive of vectors ({exc})") from None
        if not pairs or any(v.ndim != 1 for _, v in pairs):
            raise EmbeddingsError(f"{where}: expected one vector per utterance")
        return [k for k, _ in pairs], np.stack([v for _, v in pairs]), ""
    raise EmbeddingsError(f"{where}: neither an embeddings folder (index.tsv) nor a .scp/.ark")


def _read_folder(folder: Path) -> tuple[list[str], np.ndarray, str]:
    # "\n" only: other line breaks (\x1c, \u2028, ...) may stand in a path, never in a key.
    lines = (folder / "index.tsv").read_text().split("\n")
    if not lines or not lines[0].startswith(HEADER) or lines[1] not in (COLUMNS, OLD_COLUMNS):
        raise EmbeddingsError(f"{folder}/index.tsv: not written by python -m learner.embed")
    meta = dict(f.split("=", 1) for f in lines[0][len(HEADER) :].split() if "=" in f)
    keys = [line.split("\t")[1] for line in lines[2:] if line]
    emb = np.load(folder / "embeddings.npy", allow_pickle=False)
    if emb.shape[0] != len(keys):
        raise EmbeddingsError(f"{folder}: {emb.shape[0]} vectors for {len(keys)} index rows")
    return keys, emb.astype(np.float32), meta.get("model", "")
