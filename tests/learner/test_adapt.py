"""``python -m learner.adapt``: a domain from unlabelled recordings, stored atomically and
applied the same way by every command and both runtimes (a smoke model on real speech)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from learner.commands.adapt import main as adapt
from learner.inference.speaker_model import SpeakerModel
from learner.scoring.calibration import log_duration


@pytest.fixture(scope="module")
def domain(tmp_path_factory, speech_subset) -> tuple[Path, list[str]]:
    """The fixture through one fixed channel (a telephone band and its own level), each
    2 s file cut in two halves: 60 recordings of 10 speakers in one flat folder, and the
    speaker of each (for scoring only: adapt never sees it)."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300, 3400], btype="band", fs=16000, output="sos")
    out = tmp_path_factory.mktemp("phone")
    speakers = []
    for k, f in enumerate(sorted(speech_subset.glob("*/*.flac"))):
        x, sr = sf.read(f)
        y = sosfilt(sos, x)
        y = 0.3 * y / np.abs(y).max()
        half = len(y) // 2
        for h, part in enumerate((y[:half], y[half:])):
            sf.write(out / f"r{k:02d}{h}.wav", part.astype(np.float32), sr)
            speakers.append(f.parent.name)
    return out, speakers


def test_too_few_recordings_are_refused_and_nothing_is_written(trained, domain, tmp_path, capsys):
    folder, _ = domain
    out = tmp_path / "adapted"
    assert adapt(["--data", str(folder), "-c", str(trained), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "60 audio files, need at least 100" in err and "docs/adaptation.md" in err
    assert not out.exists()
    with pytest.raises(SystemExit):  # below the floor: a usage error
        adapt(["--data", str(folder), "-c", str(trained), "-o", str(out), "--min-recordings", "5"])
    assert not out.exists()


def test_the_adapted_far_threshold_gives_the_asked_rate_on_the_domain(
    trained, domain, tmp_path, capsys
):
    folder, speakers = domain
    out = tmp_path / "adapted"
    args = ["--data", str(folder), "-c", str(trained), "-o", str(out), "--min-recordings", "40"]
    assert adapt([*args, "--name", "phone"]) == 0
    report = json.loads(capsys.readouterr().out)
    n_used = report["recordings"]  # halves with too little speech are refused, and said
    assert 50 <= n_used <= 60 and report["domain"] == "phone"
    model = SpeakerModel.load(out)  # OUT holds the adapted copy of the checkpoint
    assert model.domain is not None and model.domain.name == "phone"
    assert model.calibration().fitted_on.startswith(f"domain 'phone' ({n_used} recordings")
    assert len(model.scoring_cohort) == n_used // 2  # half the recordings; the rest gave pairs
    # The run's own checkpoint is untouched.
    assert SpeakerModel.load(trained).domain is None
    # On every different-speaker pair of the domain (with its labels, which adapt never saw),
    # the --far threshold accepts about the asked share. The threshold's quantile is read from
    # up to 435 pairs of 30 recordings (sd of a 10% quantile's rate: sqrt(.1 * .9 / 435) =
    # 1.4 points) and checked on ~1,400 non-target pairs (sd 0.75 points): 5 points is over
    # three of their combined sd.
    from workers.audio import AudioError

    files, emb, secs, who = [], [], [], []
    for f, speaker in zip(sorted(folder.iterdir()), speakers, strict=True):
        try:
            e, quality = model.embed(f)
        except AudioError:
            continue
        files.append(f)
        emb.append(e)
        secs.append(quality.speech_s)
        who.append(speaker)
    emb, secs, speakers = np.stack(emb), np.array(secs), who
    assert len(files) == n_used
    cal = model.calibration()
    fa, n = 0, 0
    for i in range(len(files)):
        for j in range(i + 1, len(files)):
            if speakers[i] == speakers[j]:
                continue
            q = float(log_duration(secs[i], secs[j]))
            fa += float(emb[i] @ emb[j]) >= cal.threshold("far", 0.1, q)
            n += 1
    assert n > 1300 and abs(fa / n - 0.1) < 0.05, fa / n
    # Every command applies the domain: verify says which domain decided.
    from learner.commands.verify import main as verify

    assert verify([str(files[0]), str(files[10]), "-c", str(out), "--json"]) in (0, 1)
    r = json.loads(capsys.readouterr().out)
    assert "domain 'phone'" in r["rule_text"] and r["same_speaker"] == (r["p_same"] >= 0.5)
    # The calibration pipeline's embeddings (calibrate, bench) go through the domain too.
    from learner.inference.recordings import cut_recordings

    cuts, _ = cut_recordings(model, files[:4], False)
    np.testing.assert_allclose(cuts.full, emb[:4], atol=1e-5)
    # embeddings of the adapted model are keyed by the weights and the domain
    assert model.fingerprint == f"{model.weights_id}+{model.domain.fingerprint}"
    # In place: the same files written into the checkpoint itself.
    again = tmp_path / "again"
    assert adapt([*args[:4], "--in-place", "--min-recordings", "40", "--name", "phone"]) == 0
    capsys.readouterr()
    assert not again.exists()
    in_place = SpeakerModel.load(trained)
    assert in_place.domain.fingerprint == model.domain.fingerprint
    (in_place.checkpoint.path / "domain.json").unlink()  # leave the shared fixture as it was
    (in_place.checkpoint.path / "domain.npz").unlink()
    assert SpeakerModel.load(trained).domain is None


def test_keras_and_onnx_give_equal_adapted_scores(trained, domain, tmp_path, capsys):
    from learner.commands.export import main as export

    folder, _ = domain
    out = tmp_path / "adapted"
    assert (
        adapt(["--data", str(folder), "-c", str(trained), "-o", str(out), "--min-recordings", "40"])
        == 0
    )
    assert export(["-c", str(out), "-o", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    capsys.readouterr()
    keras_model, onnx_model = SpeakerModel.load(out), SpeakerModel.load(tmp_path / "onnx")
    assert onnx_model.runtime == "onnx" and onnx_model.domain is not None
    assert onnx_model.fingerprint == keras_model.fingerprint
    files = sorted(folder.iterdir())[:8:2]  # first halves: enough speech
    k = np.stack([keras_model.embed_file(f) for f in files])
    o = np.stack([onnx_model.embed_file(f) for f in files])
    assert np.abs(k @ k.T - o @ o.T).max() < 1e-4
    ck, co = keras_model.calibration(), onnx_model.calibration()
    for s in (k[0] @ k[1], k[2] @ k[3]):
        q = math.log(1.0)
        assert float(ck.llr(s, q)) == pytest.approx(float(co.llr(s, q)), abs=1e-4)
