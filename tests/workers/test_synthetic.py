import hashlib

import librosa
import numpy as np
import soundfile as sf

from cluster.config import SyntheticConfig
from workers.corpus import SpeakerDatabase
from workers.synthetic import generate


def digest(root):
    h = hashlib.sha1()
    for f in sorted(root.rglob("*.flac")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_deterministic_librispeech_layout(tmp_path):
    cfg = SyntheticConfig(speakers=3, utterances=2, seconds=1.0, seed=5)
    a, b = generate(tmp_path / "a", cfg), generate(tmp_path / "b", cfg)
    assert digest(a) == digest(b)
    assert digest(generate(tmp_path / "c", SyntheticConfig(3, 2, 1.0, seed=6))) != digest(a)
    db = SpeakerDatabase.scan(a)
    assert db.layout == "librispeech" and len(db.speakers) == 3 and len(db.utterances) == 6
    info = sf.info(next(a.rglob("*.flac")))
    assert info.samplerate == 16000 and info.channels == 1


def median_f0(x: np.ndarray, sr: int = 16000) -> float:
    return float(np.median(librosa.yin(x, fmin=60, fmax=400, sr=sr)))


def test_identity_is_in_the_voice_not_the_file(tmp_path):
    """Files of one speaker differ (new content, own channel) but keep the voice's pitch."""
    root = generate(tmp_path / "s", SyntheticConfig(speakers=6, utterances=4, seconds=1.5, seed=1))
    db = SpeakerDatabase.scan(root)
    f0 = {s: [] for s in db.speakers}
    raw = set()
    for u in db.utterances:
        x, _ = sf.read(db.root / u.path, dtype="float32")
        raw.add(x[:4000].tobytes())
        f0[u.speaker].append(np.log(median_f0(x)))
    assert len(raw) == len(db.utterances)  # no two files alike
    within = np.mean([np.std(v) for v in f0.values()])
    between = np.std([np.mean(v) for v in f0.values()])
    assert within < 0.3 * between
