"""Inference and evaluation commands with a small model trained inside the test on real speech."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cluster.config import load_config
from learner.checkpoint import CheckpointManager
from learner.commands.evaluate import main as evaluate_main
from learner.inference.speaker_model import SpeakerModel
from learner.learner import Learner

ROOT = Path(__file__).resolve().parents[2]


def files(root: Path, speaker: str, n: int = 2) -> list[str]:
    return [str(p) for p in sorted((root / speaker).glob("*.flac"))[:n]]


def read_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``enrol test score target|nontarget`` lines -> (labels, scores)."""
    rows = [line.split() for line in path.read_text().splitlines()]
    assert rows and all(len(r) == 4 and r[3] in ("target", "nontarget") for r in rows)
    return np.array([r[3] == "target" for r in rows], float), np.array([float(r[2]) for r in rows])


def run_cli(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_verify_decision_follows_score_and_threshold(trained, speech_subset):
    a, b = files(speech_subset, "libri_1081")
    c = files(speech_subset, "libri_2182", 1)[0]
    from learner.commands.verify import main

    for x, y in ((a, b), (a, c)):
        out = run_cli("learner.verify", x, y, "-c", str(trained), "--json")
        r = json.loads(out.stdout)
        assert r["same_speaker"] == (r["score"] >= r["threshold"])
        assert out.returncode == (0 if r["same_speaker"] else 1)
    model = SpeakerModel.load(trained)
    assert model.threshold is not None and -1 <= model.threshold <= 1
    assert model.score(a, a) == pytest.approx(1.0, abs=1e-5)
    assert main([a, a, "-c", str(trained)]) == 0
    assert main([a, c, "-c", str(trained), "--threshold", "0.99999"]) == 1


def test_a_command_on_a_cpu_machine_prints_no_native_start_up_noise(trained, speech_subset):
    """TensorFlow's C++ side wrote "Could not find cuda drivers" (twice), "failed call to
    cuInit" and absl's notice to stderr on every command; only the answer is printed now."""
    a, b = files(speech_subset, "libri_6019", 2)
    done = run_cli("learner.verify", a, b, "-c", str(trained))
    assert done.returncode in (0, 1), done.stderr[-2000:]
    for noise in ("cuInit", "cuda drivers", "absl::InitializeLog", "oneDNN"):
        assert noise not in done.stderr, done.stderr[-2000:]
    assert "speakers" in done.stdout


def test_bad_inputs_exit_2_with_a_clear_message(trained, tmp_path, capsys, speech_subset):
    from learner.commands.verify import main

    good = files(speech_subset, "libri_1081", 1)[0]
    (tmp_path / "text.wav").write_text("not audio at all")
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silence.wav", np.zeros(32000, "float32"), 16000)
    sf.write(
        tmp_path / "blip.wav",
        np.r_[np.zeros(16000), 0.3 * np.sin(np.arange(1600) / 3), np.zeros(16000)].astype(
            "float32"
        ),
        16000,
    )
    cases = {
        "text.wav": "cannot decode",
        "empty.wav": "cannot decode",
        "silence.wav": "no speech detected",
        "blip.wav": "no speech detected",
        "missing.wav": "no such file",  # not "cannot decode audio (System error.)"
    }
    for name, message in cases.items():
        assert main([good, str(tmp_path / name), "-c", str(trained)]) == 2, name
        assert message in capsys.readouterr().err, name
    broken = tmp_path / "broken-run"
    (broken / "checkpoints" / "ckpt-00000001").mkdir(parents=True)
    (broken / "checkpoints" / "ckpt-00000001" / "state.json").write_text("{oops")
    assert main([good, good, "-c", str(broken)]) == 2
    assert "unreadable state.json" in capsys.readouterr().err
    assert main([good, good, "-c", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_a_pipe_or_device_given_as_input_is_refused_not_read(trained, speech_subset, tmp_path):
    """A FIFO used to hang verify (reading waits for a writer forever); a device such as
    /dev/zero is no recording either. Both are refused at once, saying why."""
    good = files(speech_subset, "libri_1081", 1)[0]
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for bad in (fifo, Path("/dev/zero")):
        try:
            done = run_cli("learner.verify", good, str(bad), "-c", str(trained), timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"verify hung on {bad}")
        assert done.returncode == 2, done.stderr[-1000:]
        assert "not a regular file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prior", "1"], "--prior: 1 is not between 0 and 1"),
        (["--prior", "0"], "--prior: 0 is not between 0 and 1"),
        (["--prior", "nan"], "--prior: 'nan' is not a finite number"),
        (["--far", "1e-9"], "support rates from"),
        (["--far", "1.5"], "--far: 1.5 is not between 0 and 1"),
        (["--min-snr", "nan"], "--min-snr: 'nan' is not a finite number"),
        (["--min-speech", "-1"], "--min-speech: -1 is below 0"),
        (["--threshold", "inf"], "--threshold: 'inf' is not a finite number"),
    ],
)
def test_operating_points_and_limits_out_of_range_exit_2(
    trained, speech_subset, capsys, args, message
):
    """``--prior 1`` was a ZeroDivisionError traceback, 0 and nan a math domain error,
    ``--far 1e-9`` was accepted beyond what the calibration trials show, and
    ``--min-snr nan`` switched the check off."""
    from learner.commands.verify import main

    a, b = files(speech_subset, "libri_6019", 2)
    capsys.readouterr()
    try:
        code = main([a, b, "-c", str(trained), *args])
    except SystemExit as exc:  # argparse refuses a bad value with exit code 2
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_calibrate_refuses_a_prior_it_cannot_fit(trained, speech_subset, capsys):
    from learner.commands.calibrate import main

    for prior in ("1", "0", "nan"):
        with pytest.raises(SystemExit) as exc:
            main(["--data", str(speech_subset), "-c", str(trained), "--prior", prior])
        assert exc.value.code == 2
        assert "--prior" in capsys.readouterr().err


def test_embed_writes_rows_and_lists_skipped(trained, speech_subset, tmp_path):
    from learner.commands.embed_recordings import main

    src = tmp_path / "in"
    src.mkdir()
    for f in files(speech_subset, "libri_3259", 3):
        (src / Path(f).name).symlink_to(f)
    sf.write(src / "zz_silence.wav", np.zeros(16000, "float32"), 16000)
    assert main([str(src), "-c", str(trained), "-o", str(tmp_path / "out")]) == 0
    emb = np.load(tmp_path / "out" / "embeddings.npy")
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    index = (tmp_path / "out" / "index.tsv").read_text().splitlines()
    assert index[0].startswith("# voice-embeddings model=") and len(index) == 2 + 3
    assert "zz_silence.wav" in (tmp_path / "out" / "skipped.tsv").read_text()


def test_enroll_and_identify(trained, speech_subset, tmp_path, capsys):
    from learner.commands.enroll import main as enroll
    from learner.commands.identify import main as identify

    store = str(tmp_path / "team.json")
    probe = files(speech_subset, "libri_4406", 1)[0]
    assert (
        enroll(
            ["jackson", *files(speech_subset, "libri_1081"), "-c", str(trained), "--store", store]
        )
        == 0
    )
    assert (
        enroll(["remy", *files(speech_subset, "libri_3259"), "-c", str(trained), "--store", store])
        == 0
    )
    assert enroll(["axb", probe, "-c", str(trained), "--store", store]) == 0
    capsys.readouterr()
    assert identify([probe, "-c", str(trained), "--store", store, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    names = [x["speaker"] for x in r["ranking"]]
    scores = [x["score"] for x in r["ranking"]]
    assert sorted(names) == ["axb", "jackson", "remy"] and names[0] == "axb"
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-4)
    # a name holding a newline or ESC (a store from before names were checked, or edited)
    # is printed escaped: it cannot forge a ranking line or drive the terminal
    data = json.loads(Path(store).read_text())
    data["speakers"]["evil\n1. forged\t1.000\x1b[2J"] = data["speakers"].pop("axb")
    Path(store).write_text(json.dumps(data))
    capsys.readouterr()
    assert identify([probe, "-c", str(trained), "--store", store]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\n1. forged" not in out
    assert "1. evil\\n1. forged\\t1.000\\x1b[2J\t" in out
    with pytest.raises(SystemExit) as refused:  # and enroll no longer stores such a name
        enroll(["a\x1bb", probe, "-c", str(trained), "--store", store])
    assert refused.value.code == 2 and "control characters" in capsys.readouterr().err
    data["spec"] = "another-spec"
    Path(store).write_text(json.dumps(data))
    assert identify([probe, "-c", str(trained), "--store", store]) == 2
    assert "enrol again" in capsys.readouterr().err


def evaluate(checkpoint: Path, data: Path, out: Path, *extra: str) -> int:
    return evaluate_main(
        ["--data", str(data), "-c", str(checkpoint), "-o", str(out), "--n-trials", "400", *extra]
    )


def test_evaluate_matches_an_independent_eer(trained, speech_subset, tmp_path):
    from sklearn.metrics import roc_curve

    out = tmp_path / "eval"
    assert evaluate(trained, speech_subset, out, "--baseline", "mfcc") == 0
    summary = json.loads((out / "summary.json").read_text())
    labels, scores = read_scores(out / "scores.txt")
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    assert summary["model"]["eer"] == pytest.approx((fpr[i] + fnr[i]) / 2, abs=1.0 / labels.sum())
    assert 0 <= summary["mfcc"]["eer"] <= 0.6 and summary["mfcc"]["trials"] > 100
    assert (out / "det.png").stat().st_size > 5000 and (out / "scores.png").exists()
    # Decisions at the stored threshold, and the calibration's report, from the same scores.
    stored = SpeakerModel.load(trained).threshold
    m = summary["model"]
    # (scores.txt rounds to 5 decimals: a trial or two at the threshold may fall either way)
    n_non, n_tar = (labels == 0).sum(), (labels == 1).sum()
    fa, miss = np.mean(scores[labels == 0] >= stored), np.mean(scores[labels == 1] < stored)
    assert m["fa_at_stored_threshold"] == pytest.approx(fa, abs=2.5 / n_non)
    assert m["miss_at_stored_threshold"] == pytest.approx(miss, abs=2.5 / n_tar)
    from learner.scoring.calibration import min_cllr

    cal = m["calibration"]
    assert cal["kind"] == "cosine" and cal["cllr"] > 0 and cal["p_target"] == 0.01
    assert cal["min_cllr"] == pytest.approx(min_cllr(scores, labels), abs=1e-3)
    # AS-Norm with a cohort of other speakers' recordings changes the scores, not the trials.
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for f in files(speech_subset, "libri_103", 3) + files(speech_subset, "libri_1069", 3):
        (cohort / Path(f).name).symlink_to(f)
    normed = tmp_path / "eval-asnorm"
    assert evaluate(trained, speech_subset, normed, "--asnorm", str(cohort)) == 0
    s2 = json.loads((normed / "summary.json").read_text())
    assert s2["asnorm_cohort"] == len(list(cohort.iterdir()))
    assert s2["model"]["trials"] == summary["model"]["trials"]
    assert not np.allclose(read_scores(normed / "scores.txt")[1], scores)


def test_the_checkpoint_says_how_the_model_normalises_its_input(trained, tmp_path):
    """A checkpoint from before ``model.input_norm`` builds the model it was trained as (cmvn);
    one that says ``cmn`` builds the mean-only model with the same weights."""
    best = CheckpointManager(trained / "checkpoints").best().path
    x = np.random.default_rng(0).normal(-40, 10, size=(3, 100, 64)).astype("float32")
    loaded = {}
    for norm in ("absent", "cmn"):
        ckpt = shutil.copytree(best, tmp_path / norm / best.name)
        state = json.loads((ckpt / "state.json").read_text())
        for model in (state["model"], state["config"]["model"]):
            model.pop("input_norm")
            if norm == "cmn":
                model["input_norm"] = "cmn"
        (ckpt / "state.json").write_text(json.dumps(state))
        loaded[norm] = SpeakerModel.load(ckpt)
    original = SpeakerModel.load(best)
    assert original.cfg.model.input_norm == "cmvn"
    np.testing.assert_allclose(
        original.embed_features(list(x)), loaded["absent"].embed_features(list(x)), atol=1e-6
    )
    assert loaded["cmn"].model.get_layer("segment_mean") is not None
    assert (
        np.abs(loaded["cmn"].embed_features(list(x)) - original.embed_features(list(x))).max()
        > 1e-3
    )


def test_a_checkpoint_from_before_the_multi_recording_recipe_loads_and_evaluates(
    trained, speech_subset, tmp_path
):
    """A checkpoint whose config has none of the fields this recipe added (the held-out
    rule, the channel stage, the margin warm-up) loads as it was trained, embeds the same
    and evaluates; a resumed run would keep its old split (eval_min_utterances 2)."""
    best = CheckpointManager(trained / "checkpoints").best().path
    old = shutil.copytree(best, tmp_path / "old" / best.name)
    state = json.loads((old / "state.json").read_text())
    cfg = state["config"]
    for section, key in [
        ("data", "eval_min_utterances"),
        ("augment", "channel_prob"),
        ("learner", "aam_margin_start"),
        ("learner", "aam_margin_steps"),
    ]:
        assert key in cfg[section]
        del cfg[section][key]
    (old / "state.json").write_text(json.dumps(state))
    loaded = SpeakerModel.load(old)
    assert loaded.cfg.data.eval_min_utterances == 2 and loaded.cfg.augment.channel_prob == 0
    x = np.random.default_rng(1).normal(-40, 10, size=(2, 100, 64)).astype("float32")
    np.testing.assert_allclose(
        loaded.embed_features(list(x)), SpeakerModel.load(best).embed_features(list(x)), atol=1e-6
    )
    out = tmp_path / "eval"
    assert evaluate(old, speech_subset, out) == 0
    assert 0 <= json.loads((out / "summary.json").read_text())["model"]["eer"] <= 1


def test_export_loads_in_a_fresh_process(trained, speech_subset, tmp_path, capsys):
    from learner.commands.export import main

    assert main(["-c", str(trained), "-o", str(tmp_path / "exp")]) == 0
    model = SpeakerModel.load(trained)
    feats = model.features(files(speech_subset, "libri_6019", 1)[0])[:100][None]
    np.save(tmp_path / "x.npy", feats.astype("float32"))
    want = np.asarray(model.model(feats, training=False))
    code = f"""
import sys, numpy as np, keras, tensorflow as tf
x = np.load({str(tmp_path / "x.npy")!r})
k = keras.saving.load_model({str(tmp_path / "exp" / "model.keras")!r})
s = tf.saved_model.load({str(tmp_path / "exp" / "saved_model")!r})
assert 'learner' not in sys.modules and 'cluster' not in sys.modules
np.save({str(tmp_path / "k.npy")!r}, np.asarray(k(x)))
np.save({str(tmp_path / "s.npy")!r}, np.asarray(s.serve(x)))
"""
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), want, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, atol=1e-5)
    front = json.loads((tmp_path / "exp" / "frontend.json").read_text())
    assert front["feature_spec"] == model.spec and front["n_mels"] == 64
    # the commands read an ONNX export or the checkpoint; a default export says so (it was
    # "no checkpoint at exp", after the --help example told to run verify on it)
    from learner.commands.verify import main as verify

    a, b = files(speech_subset, "libri_6019", 2)
    capsys.readouterr()
    assert verify([a, b, "-c", str(tmp_path / "exp")]) == 2
    assert "is an export without model.onnx" in capsys.readouterr().err


def test_concurrent_enrols_all_land_and_other_models_are_refused(
    trained, speech_subset, tmp_path, capsys
):
    from learner.commands.identify import main as identify

    store = tmp_path / "team.json"
    people = {"jackson": "libri_1081", "remy": "libri_3259", "axb": "libri_4406"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "learner.enroll", name, *files(speech_subset, folder)]
            + ["-c", str(trained), "--store", str(store)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, folder in people.items()
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:]
    assert sorted(json.loads(store.read_text())["speakers"]) == sorted(people)

    # The same features, other weights: a checkpoint of another model is refused.
    other = tmp_path / "other" / "checkpoints"
    best = CheckpointManager(trained / "checkpoints").best()

    shutil.copytree(best.path, other / best.path.name)
    with np.load(other / best.path.name / "weights.npz") as w:
        changed = {k: w[k] + np.float32(0.01) for k in w.files}
    np.savez(other / best.path.name / "weights.npz", **changed)
    probe = files(speech_subset, "libri_4406", 1)[0]
    capsys.readouterr()
    assert identify([probe, "-c", str(other / best.path.name), "--store", str(store)]) == 2
    assert "enrolled with model" in capsys.readouterr().err

    with pytest.raises(SystemExit) as stop:
        identify([probe, "-c", str(trained), "--store", str(store), "--top", "0"])
    assert stop.value.code == 2 and "--top must be at least 1" in capsys.readouterr().err
    for text in ("[1, 2]", '{"speakers": {"x": 1}}', "\x00\x01binary"):
        bogus = tmp_path / "bogus.json"
        bogus.write_text(text)
        assert identify([probe, "-c", str(trained), "--store", str(bogus)]) == 2
        err = capsys.readouterr().err
        assert "is not a profile store" in err and len(err.strip().splitlines()) == 1


def test_evaluate_with_every_trial_skipped_says_so(trained, tmp_path, capsys):
    data = tmp_path / "silent"
    for s in range(2):
        for u in range(2):
            (data / f"s{s}").mkdir(parents=True, exist_ok=True)
            sf.write(data / f"s{s}" / f"u{u}.wav", np.zeros(16000, "float32"), 16000)
    capsys.readouterr()
    assert evaluate(trained, data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "every one of the" in err and "trials was skipped" in err


def test_trial_lists_embeddings_by_utterance_id_and_scoring_saved_vectors(
    trained, speech_subset, tmp_path, capsys
):
    """VoxCeleb-style corpus and official-format trial lists (VoxCeleb and Kaldi), embeddings
    keyed by utterance id in .npy and Kaldi ark/scp, scored again without re-embedding."""
    import kaldiio

    from learner.commands.embed_recordings import main as embed

    vox = tmp_path / "VoxCeleb1" / "wav"
    speakers = ["libri_103", "libri_1069", "libri_1040"]
    for s, name in enumerate(speakers):
        for u, f in enumerate(files(speech_subset, name, 3)):
            link = vox / f"id1{s:04d}" / f"video{u % 2}" / f"{u + 1:05d}.flac"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
    vox_list = tmp_path / "veri_test.txt"
    vox_list.write_text(
        "1 id10000/video0/00001.flac id10000/video1/00002.flac\n"
        "0 id10000/video0/00001.flac id10001/video0/00001.flac\n"
        "1 id10001/video0/00001.flac id10001/video0/00003.flac\n"
        "0 id10002/video1/00002.flac id10001/video1/00002.flac\n"
        "1 id10009/video0/00001.flac id10009/video0/00002.flac\n"  # not in this corpus
    )
    out = tmp_path / "ev"
    # --root one level above the list's paths (the unpacked VoxCeleb1 folder): still resolved
    assert evaluate(trained, vox.parent, out, "--trials", str(vox_list)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 4 and summary["missing_trials"] == 1
    assert "skipped 1 trial(s)" in capsys.readouterr().out
    lines = (out / "scores.txt").read_text().splitlines()
    assert lines[0].split()[:2] == ["id10000/video0/00001.flac", "id10000/video1/00002.flac"]
    assert [line.split()[3] for line in lines] == ["target", "nontarget", "target", "nontarget"]

    emb_dir = tmp_path / "emb"
    assert embed([str(vox), "-c", str(trained), "-o", str(emb_dir)]) == 0
    ark = dict(kaldiio.load_scp(str(emb_dir / "embeddings.scp")))
    assert "id10000/video0/00001" in ark and len(ark) == 9
    npy = np.load(emb_dir / "embeddings.npy")
    rows = [r.split("\t") for r in (emb_dir / "index.tsv").read_text().splitlines()[2:]]
    np.testing.assert_allclose(ark[rows[0][1]], npy[0])

    kaldi_list = tmp_path / "trials"
    kaldi_list.write_text(
        "\n".join(
            f"{a.rsplit('.', 1)[0]} {b.rsplit('.', 1)[0]} {'target' if lab == '1' else 'nontarget'}"
            for lab, a, b in (line.split() for line in vox_list.read_text().splitlines())
        )
    )
    for source in (emb_dir, emb_dir / "embeddings.scp"):
        again = tmp_path / f"saved-{source.name}"
        assert evaluate_main(["--embeddings", str(source), "--trials", str(kaldi_list),
                              "-o", str(again)]) == 0  # fmt: skip
        saved = json.loads((again / "summary.json").read_text())
        assert saved["trials"] == 4 and saved["missing_trials"] == 1
        # the same vectors, the same scores as embedding the audio again
        np.testing.assert_allclose(
            read_scores(again / "scores.txt")[1], read_scores(out / "scores.txt")[1], atol=2e-4
        )
    # no --trials: the ids (speaker/utterance) give generated trials, as the corpus would
    generated = tmp_path / "generated"
    assert evaluate_main(["--embeddings", str(emb_dir), "-o", str(generated)]) == 0
    made = json.loads((generated / "summary.json").read_text())
    assert made["trials"] == 36 and made["targets"] == 9  # 3 speakers x 3: all pairs
    other = tmp_path / "other-model"
    shutil.copytree(emb_dir, other)
    index = other / "index.tsv"
    index.write_text(index.read_text().replace("model=", "model=0000", 1))
    capsys.readouterr()
    assert evaluate_main(["--embeddings", str(other), "--trials", str(kaldi_list),
                          "-c", str(trained), "-o", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "not comparable" in capsys.readouterr().err


def test_odd_file_names_keep_the_index_readable_and_clashing_ids_are_named(
    trained, speech_subset, tmp_path, capsys
):
    """Tab, newline and carriage return in file names: index.tsv stays one row per vector
    and ``evaluate --embeddings`` reads it. Two names that become one id (``a b``, ``a_b``)
    stop the job before any work, naming both."""
    from learner.commands.embed_recordings import main
    from learner.scoring.embedding_files import read_embeddings

    src = tmp_path / "in"
    src.mkdir()
    names = ["tab\there.flac", "new\nline.flac", "carriage\rreturn.flac", "back\\slash.flac"]
    for name, f in zip(names, files(speech_subset, "libri_3259", 3) * 2, strict=False):
        (src / name).symlink_to(f)
    assert main([str(src), "-c", str(trained), "-o", str(tmp_path / "out")]) == 0
    keys, emb, _ = read_embeddings(tmp_path / "out")
    assert len(keys) == len(emb) == len(names)
    rows = (tmp_path / "out" / "index.tsv").read_text().split("\n")[2:-1]
    assert [r.split("\t")[2].rsplit("/", 1)[-1] for r in sorted(rows)] == sorted(
        n.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        for n in names
    )

    clash = tmp_path / "clash"
    clash.mkdir()
    for name, f in zip(
        ["a b.flac", "a_b.flac"], files(speech_subset, "libri_3259", 2), strict=True
    ):
        (clash / name).symlink_to(f)
    capsys.readouterr()
    assert main([str(clash), "-c", str(trained), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "a b.flac" in err and "a_b.flac" in err and "Rename one" in err
    assert not (tmp_path / "out2").exists()


def test_a_long_input_is_embedded_in_bounded_memory(trained, tmp_path, monkeypatch):
    """A long 48 kHz stereo recording: the commands read it block by block and stop at
    --max-speech, so the peak allocation stays far below what decoding it whole takes
    (measured with tracemalloc, not time; "long" is scaled down here to keep it quick)."""
    import tracemalloc

    from learner.inference.speaker_model import SpeakerModel
    from tests.fakes import voice
    from workers import extract
    from workers.quality import QualityLimits

    x = np.concatenate([voice(3.0, 48000, f0) for f0 in (110, 150, 190, 230, 270, 130)] * 5)
    sf.write(tmp_path / "long.wav", np.stack([x, x], axis=1), 48000)  # 90 s, 33 MB
    model = SpeakerModel.load(trained)
    # The synthetic voice is a steady tone, which the speech check refuses: memory is the point.
    model.limits = QualityLimits(min_snr_db=0, min_dynamics_db=0)

    def peak(long_seconds: float, max_speech_s: float) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(extract, "LONG_SECONDS", long_seconds)
        model.max_speech_s = max_speech_s
        tracemalloc.start()
        feats = model.features(tmp_path / "long.wav")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return feats, top

    monkeypatch.setattr(extract, "BLOCK_SECONDS", 9.0)
    whole, whole_peak = peak(1e9, 1e9)  # what inference did before: the file at once
    bounded, bounded_peak = peak(10.0, 20.0)
    assert len(bounded) <= 20 * 100 + 1 < len(whole)  # 20 s of speech, 100 frames a second
    # The first frames come from the first block: the same speech as the whole-file path.
    assert np.abs(bounded[:50] - whole[:50]).mean() < 0.5
    assert bounded_peak < 0.3 * whole_peak, (bounded_peak, whole_peak)
    emb = model.embed_features([bounded])[0]
    assert emb.shape == (32,) and abs(np.linalg.norm(emb) - 1) < 1e-4


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory, speech_subset):
    """An untrained demo-size checkpoint (parity does not depend on training)."""

    # The triplet loss alone: the demo's classifier needs the corpus's classes and is never
    # part of what is exported.
    sets = [f"data.path={speech_subset}", "augment.enabled=false", "learner.loss=triplet"]
    learner = Learner(load_config("demo", sets), tmp_path_factory.mktemp("demo-run"))
    learner.threshold = 0.5
    return learner.save("test").path


@pytest.fixture(scope="module")
def lengths(tmp_path_factory, speech_subset) -> dict[str, Path]:
    """Real speech cut to 1 s and joined to 8 s."""
    out = tmp_path_factory.mktemp("lengths")
    speech = np.concatenate([sf.read(f)[0] for f in sorted(speech_subset.glob("*/*.flac"))[:6]])
    sf.write(out / "1s.wav", speech[:16000], 16000)
    sf.write(out / "8s.wav", speech[: 8 * 16000], 16000)
    return {"1s": out / "1s.wav", "8s": out / "8s.wav"}


@pytest.mark.parametrize("which", ["smoke", "demo"])
def test_onnx_runtime_embeddings_equal_keras(which, trained, demo_checkpoint, lengths, tmp_path):
    from learner.commands.export import main

    ckpt = trained if which == "smoke" else demo_checkpoint
    out = tmp_path / "onnx"
    assert main(["-c", str(ckpt), "-o", str(out), "--format", "onnx"]) == 0
    assert (out / "model.onnx").is_file() and not (out / "model.keras").exists()
    keras_model = SpeakerModel.load(ckpt)
    onnx_model = SpeakerModel.load(out)  # auto: an export folder runs on ONNX Runtime
    assert onnx_model.runtime == "onnx" and onnx_model.fingerprint == keras_model.fingerprint
    assert onnx_model.threshold == keras_model.threshold
    for name, path in lengths.items():
        k, o = keras_model.embed_file(path), onnx_model.embed_file(path)
        assert np.abs(k - o).max() < 1e-4, (which, name, np.abs(k - o).max())
    # Dynamic frames: one window of 8 s of features at once, not the training length.
    feats = keras_model.features(lengths["8s"])[None]
    want = np.asarray(keras_model.model(feats, training=False))
    got = onnx_model.embed_batch(feats)
    assert feats.shape[1] > 700 and np.abs(want - got).max() < 1e-4


def test_the_onnx_path_runs_verify_without_tensorflow(trained, lengths, tmp_path):
    from learner.commands.export import main

    assert main(["-c", str(trained), "-o", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None; sys.modules['keras'] = None  # as if not installed\n"
        "from learner.commands.verify import main\n"
        f"code = main([{str(lengths['8s'])!r}, {str(lengths['1s'])!r}, '-c', "
        f"{str(tmp_path / 'onnx')!r}, '--json'])\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    onnx = json.loads(done.stdout.strip().splitlines()[-1])
    # The same calibrated decision as the checkpoint itself (the export carries it).
    keras = run_cli(
        "learner.verify", str(lengths["8s"]), str(lengths["1s"]), "-c", str(trained), "--json"
    )
    keras = json.loads(keras.stdout)
    assert onnx["rule"] == keras["rule"] == "prior=0.5" and "llr" in onnx
    assert onnx["threshold"] == pytest.approx(keras["threshold"], abs=1e-3)
    assert onnx["llr"] == pytest.approx(keras["llr"], abs=1e-2)
    assert onnx["same_speaker"] == keras["same_speaker"]


@pytest.mark.parametrize(
    "forge, field",
    [
        (lambda f: f["calibration"]["cosine"].update(eer_z=-1e300), "calibration.cosine.eer_z"),
        (
            lambda f: f["calibration"]["cosine"].update(eer_z=float("nan")),
            "calibration.cosine.eer_z",
        ),
        (lambda f: f["calibration"]["cosine"].update(bias=float("inf")), "calibration.cosine.bias"),
        (
            lambda f: f["calibration"]["cosine"].update(weights=[-5.0, 0, 0]),
            "calibration.cosine.weights",
        ),
        (
            lambda f: f["calibration"]["cosine"].update(llr_range=[9, -9]),
            "calibration.cosine.llr_range",
        ),
        (
            lambda f: f["calibration"]["cosine"]["norm"][2].__setitem__(0, 1e9),
            "calibration.cosine.norm",
        ),
        (lambda f: f["calibration"]["cosine"].update(prior=1.5), "calibration.cosine.prior"),
        (lambda f: f.update(sample_rate=8000), "sample_rate"),
        (lambda f: f.update(threshold=float("nan")), "threshold"),
        (lambda f: f.update(threshold=-1e300), "threshold"),
        (lambda f: f.update(fingerprint=["not", "text"]), "fingerprint"),
        (lambda f: f.update(segment_frames=-3), "segment_frames"),
    ],
)
def test_a_forged_export_is_refused_with_the_field_named(
    trained, speech_subset, tmp_path_factory, capsys, forge, field
):
    """Every ``frontend.json`` field a decision depends on is checked: a forged calibration
    (``eer_z = -1e300`` made every pair SAME, exit 0; NaN gave "threshold nan") or a top-level
    field that disagrees with the config is refused with exit 2 and the field named."""
    from learner.commands.verify import main as verify

    exported = tmp_path_factory.getbasetemp() / "onnx-export"
    if not (exported / "model.onnx").exists():
        from learner.commands.export import main as export

        assert export(["-c", str(trained), "-o", str(exported), "--format", "onnx"]) == 0
    forged = tmp_path_factory.mktemp("forged")
    for f in exported.iterdir():
        (forged / f.name).write_bytes(f.read_bytes())
    front = json.loads((exported / "frontend.json").read_text())
    forge(front)
    (forged / "frontend.json").write_text(json.dumps(front))
    a, b = files(speech_subset, "libri_6019", 2)
    capsys.readouterr()
    assert verify([a, b, "-c", str(forged)]) == 2
    err = capsys.readouterr().err
    assert field in err and "frontend.json" in err, err


def non_speech(tmp_path: Path) -> dict[str, Path]:
    """Files that are not speech: steady noise (the shared set's recordings when beside us,
    else brown noise), a tone and a run of musical notes."""
    rng = np.random.default_rng(0)
    sr, n = 16000, 3 * 16000
    t = np.arange(n) / sr
    out = {}
    shared = ROOT.parent / "shared" / "data" / "noise" / "washing_machine.flac"
    if shared.is_file():
        noise, rate = sf.read(shared, frames=4 * 16000, dtype="float32")
        sf.write(tmp_path / "washing.wav", noise, rate)
        out["washing"] = tmp_path / "washing.wav"
    brown = np.cumsum(rng.standard_normal(n))
    brown = brown - np.convolve(brown, np.ones(400) / 400, mode="same")
    sf.write(tmp_path / "brown.wav", (0.3 * brown / np.abs(brown).max()).astype("float32"), sr)
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), sr)
    notes = np.zeros(n)
    for k, start in enumerate(range(0, n, 6000)):
        f, seg = 220 * 2 ** (k % 7 / 12), np.arange(min(6000, n - start)) / sr
        notes[start : start + len(seg)] = np.exp(-3 * seg) * sum(
            0.5**h * np.sin(2 * np.pi * f * (h + 1) * seg) for h in range(5)
        )
    sf.write(tmp_path / "notes.wav", (0.3 * notes / np.abs(notes).max()).astype("float32"), sr)
    out.update(
        brown=tmp_path / "brown.wav", tone=tmp_path / "tone.wav", notes=tmp_path / "notes.wav"
    )
    return out


def test_what_is_not_speech_is_refused_by_every_command(trained, speech_subset, tmp_path, capsys):
    from learner.commands.embed_recordings import main as embed
    from learner.commands.enroll import main as enroll
    from learner.commands.identify import main as identify
    from learner.commands.verify import main as verify

    good = files(speech_subset, "libri_1081", 2)
    assert enroll(["alice", good[0], "-c", str(trained), "--store", str(tmp_path / "s.json")]) == 0
    capsys.readouterr()
    for name, path in non_speech(tmp_path).items():
        p = str(path)
        assert verify([good[1], p, "-c", str(trained)]) == 2, name
        assert "refused as speech" in capsys.readouterr().err, name
        assert identify([p, "-c", str(trained), "--store", str(tmp_path / "s.json")]) == 2, name
        assert "refused as speech" in capsys.readouterr().err, name
        assert enroll(["bob", p, "-c", str(trained), "--store", str(tmp_path / "s.json")]) == 2
        assert "refused as speech" in capsys.readouterr().err, name
        assert embed([p, "-c", str(trained), "-o", str(tmp_path / f"e-{name}")]) == 2, name
        assert "refused as speech" in (tmp_path / f"e-{name}" / "skipped.tsv").read_text()
        # The limits are the user's: with the checks off the same file is embedded.
        off = ["--min-snr", "0", "--min-dynamics", "0"]
        assert embed([p, "-c", str(trained), "-o", str(tmp_path / f"o-{name}"), *off]) == 0, name
    # Speech passes, and index.tsv carries each file's quality.
    assert embed([*good, "-c", str(trained), "-o", str(tmp_path / "speech")]) == 0
    rows = (tmp_path / "speech" / "index.tsv").read_text().splitlines()
    assert rows[1].split("\t") == [
        "row",
        "utt",
        "path",
        "seconds",
        "snr_db",
        "clipping",
        "dynamics_db",
    ]
    for row in rows[2:]:
        cells = row.split("\t")
        assert float(cells[3]) > 0.5 and float(cells[4]) > 1.5 and float(cells[6]) > 2.8


def test_calibrated_decisions_at_the_chosen_operating_point(trained, speech_subset):
    from learner.checkpoint import resolve

    ckpt = resolve(trained)
    # The run's end wrote the calibrations and the cohort into the checkpoint users load.
    cals = ckpt.calibrations()
    assert set(cals) == {"cosine", "asnorm"} and ckpt.cohort().shape[1] == 32
    from workers.rundata import RunData

    run_cfg = SpeakerModel.load(trained).cfg
    assert len(ckpt.cohort()) == len(RunData.open(run_cfg.data, run_cfg.synthetic).train)
    a, b = files(speech_subset, "libri_1081")
    rules = {
        (): "prior=0.5",
        ("--rule", "eer"): "eer",
        ("--far", "0.05"): "far=0.05",  # the fixture's 27 non-target trials show >= 0.037
        ("--prior", "0.05"): "prior=0.05",
    }
    for extra, rule in rules.items():
        for asnorm in ((), ("--asnorm",)):
            out = run_cli("learner.verify", a, b, "-c", str(trained), "--json", *extra, *asnorm)
            r = json.loads(out.stdout)
            assert r["rule"] == rule and r["score_kind"] == ("asnorm" if asnorm else "cosine")
            assert out.returncode == (0 if r["same_speaker"] else 1)
            # No margin where no score reaches the threshold (a prior beyond the LLRs the
            # calibration supports: a 40-step model supports little).
            assert r["same_speaker"] == (r["margin"] is not None and r["margin"] >= 0)
            # One meaning: the probability is at the prior for which the rule's threshold
            # is the Bayes decision, so it points the way the decision (and exit code) does.
            assert r["same_speaker"] == (r["p_same"] >= 0.5)
            prior = r["at_prior"]
            if rule.startswith("prior"):
                assert prior == float(rule.split("=")[1])
            assert r["p_same"] == pytest.approx(
                1 / (1 + math.exp(-(r["llr"] + math.log(prior / (1 - prior))))), abs=2e-3
            )
    # --far 0.04 asks for fewer false accepts than --far 0.2: a higher threshold.
    hi = json.loads(
        run_cli("learner.verify", a, b, "-c", str(trained), "--json", "--far", "0.04").stdout
    )
    lo = json.loads(
        run_cli("learner.verify", a, b, "-c", str(trained), "--json", "--far", "0.2").stdout
    )
    assert hi["threshold"] > lo["threshold"]
    # a rate below one of its non-target trials is refused, naming the smallest it shows
    below = run_cli("learner.verify", a, b, "-c", str(trained), "--far", "0.01")
    assert below.returncode == 2 and "support rates from 0.037" in below.stderr


def test_a_checkpoint_from_before_calibration_verifies_as_before(
    trained, speech_subset, tmp_path, capsys
):
    from learner.checkpoint import resolve
    from learner.commands.calibrate import main as calibrate
    from learner.commands.verify import main as verify

    old = tmp_path / "ckpt-00000040"
    shutil.copytree(resolve(trained).path, old)
    for extra in ("calibration.json", "cohort.npz"):
        (old / extra).unlink()
    state = json.loads((old / "state.json").read_text())
    state.pop("calibration")
    (old / "state.json").write_text(json.dumps(state))
    model = SpeakerModel.load(old)
    assert model.calibrations == {} and model.cohort is None
    a, c = files(speech_subset, "libri_1081", 1)[0], files(speech_subset, "libri_2182", 1)[0]
    out = run_cli("learner.verify", a, c, "-c", str(old), "--json")
    r = json.loads(out.stdout)
    # As before: the cosine against the stored threshold, no LLR.
    assert "llr" not in r and r["threshold"] == pytest.approx(model.threshold, abs=1e-4)
    assert r["same_speaker"] == (model.score(a, c) >= model.threshold)
    assert out.returncode == (0 if r["same_speaker"] else 1)
    assert verify([a, c, "-c", str(old), "--far", "0.01"]) == 2
    assert "learner.calibrate" in capsys.readouterr().err
    assert verify([a, c, "-c", str(old), "--asnorm"]) == 2
    assert "stores no AS-norm cohort" in capsys.readouterr().err
    # Calibrating it on labelled recordings makes --far work.
    args = ["--data", str(speech_subset), "-c", str(old), "--n-trials", "400"]
    assert calibrate([*args, "--dry-run"]) == 0  # in words by default
    said = capsys.readouterr().out
    assert "Cllr" in said and "minCllr of the score alone" in said and "nothing written" in said
    assert calibrate([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cosine"]["cllr_before"] is None and report["cosine"]["cllr_after"] > 0
    assert (
        json.loads((old / "calibration.json").read_text())["cosine"]["trials"] == report["trials"]
    )
    assert verify([a, c, "-c", str(old), "--far", "0.01"]) in (0, 1)
    # ... and AS-norm: the cohort made from the run's own training speakers, stored.
    assert report["cohort_from"] == "run" and report["asnorm"]["cllr_after"] > 0
    assert SpeakerModel.load(old).cohort.shape == (report["cohort_speakers"], 32)
    assert verify([a, c, "-c", str(old), "--asnorm", "--prior", "0.05"]) in (0, 1)


def test_verify_trials_equals_single_verify_calls(trained, speech_subset, tmp_path, capsys):
    from learner.commands.verify import main as verify

    paths = sorted(str(p.relative_to(speech_subset)) for p in speech_subset.glob("*/*.flac"))
    rng = np.random.default_rng(0)
    pairs = [tuple(rng.choice(len(paths), 2, replace=False)) for _ in range(20)]
    lines = []
    for k, (i, j) in enumerate(pairs):
        label = int(paths[i].split("/")[0] == paths[j].split("/")[0])
        # the three formats in one list: VoxCeleb, Kaldi, a plain pair
        lines.append(
            [
                f"{label} {paths[i]} {paths[j]}",
                f"{paths[i]} {paths[j]} {'target' if label else 'nontarget'}",
                f"{paths[i]} {paths[j]}",
            ][k % 3]
        )
    listed = tmp_path / "trials.txt"
    listed.write_text("\n".join(lines) + "\n")
    code = verify(
        [
            "--trials",
            str(listed),
            "--root",
            str(speech_subset),
            "-c",
            str(trained),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    rows = (tmp_path / "out" / "decisions.tsv").read_text().splitlines()
    header, rows = rows[0].split("\t"), [r.split("\t") for r in rows[1:]]
    assert len(rows) == 20 and header[:6] == ["enrol", "test", "score", "llr", "p_same", "decision"]
    capsys.readouterr()
    for (i, j), row in zip(pairs, rows, strict=True):
        code = verify(
            [
                str(speech_subset / paths[i]),
                str(speech_subset / paths[j]),
                "-c",
                str(trained),
                "--json",
            ]
        )
        single = json.loads(capsys.readouterr().out)
        assert float(row[2]) == pytest.approx(single["score"], abs=1e-4)
        assert float(row[3]) == pytest.approx(single["llr"], abs=1e-3)
        assert row[5] == ("same" if single["same_speaker"] else "different")
        assert code == (0 if single["same_speaker"] else 1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trials"] == 20 and summary["files"] == len({p for ij in pairs for p in ij})


def test_an_input_shorter_than_the_calibration_is_said_and_strict_refuses_it(
    trained, speech_subset, tmp_path, capsys
):
    from learner.checkpoint import resolve
    from learner.commands.verify import main as verify

    # A checkpoint whose calibration was fitted down to 1 s (as before the 0.5 s cuts).
    ckpt = tmp_path / "ckpt-00000040"
    shutil.copytree(resolve(trained).path, ckpt)
    cals = json.loads((ckpt / "calibration.json").read_text())
    for cal in cals.values():
        cal["q_range"][0] = math.log(1.0)
    (ckpt / "calibration.json").write_text(json.dumps(cals))
    speech = sf.read(files(speech_subset, "libri_1081", 1)[0])[0]
    sf.write(tmp_path / "short.wav", speech[: int(0.7 * 16000)], 16000)
    b = files(speech_subset, "libri_1081", 2)[1]
    code = verify([str(tmp_path / "short.wav"), b, "-c", str(ckpt), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and r["outside_calibration"] == "shorter"
    assert r["calibrated_seconds"][0] == pytest.approx(1.0, abs=1e-3)
    verify([str(tmp_path / "short.wav"), b, "-c", str(ckpt)])
    assert "shorter than the calibration" in capsys.readouterr().out
    assert verify([str(tmp_path / "short.wav"), b, "-c", str(ckpt), "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err
    # The run's own calibration was fitted down to 0.5 s: the same input is inside it.
    assert verify([str(tmp_path / "short.wav"), b, "-c", str(trained), "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["outside_calibration"] is None


def test_evaluate_says_which_trials_involve_the_runs_training_speakers(
    trained, speech_subset, tmp_path, capsys
):
    from cluster.runs import RunDir
    from learner.commands.evaluate import main as evaluate

    model = SpeakerModel.load(trained)
    assert RunDir.of_checkpoint(model.source) is None  # the fixture's folder has no config
    RunDir(Path(trained)).write_config(model.cfg)  # as the driver writes it
    run = RunDir.of_checkpoint(model.source)
    assert run is not None and run.path == Path(trained).resolve()
    run.write_speakers(str(speech_subset), ["libri_1081", "libri_2182"], ["libri_103"])
    assert run.read_speakers()["training"] == ["libri_1081", "libri_2182"]
    out = tmp_path / "eval"
    assert (
        evaluate(
            ["--data", str(speech_subset), "-c", str(trained), "-o", str(out), "--n-trials", "200"]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_speakers_seen"] == 2 and summary["trials_with_training_speakers"] > 0
    assert "trained on" in capsys.readouterr().out
    run.speakers_file.unlink()  # leave the shared fixture as the other tests know it
    run.config_file.unlink()
