"""Decisions a user can trust, measured: false accepts across input durations, Cllr and
actual DCF before and after calibration, AS-norm, and the speech / not-speech reject.

A run trained on the shared speech set (``-c``; default ``runs/readme-real``, which
``python -m learner --data ../shared/data/speech --run-id readme-real`` makes) is
scored on its own held-out speakers (several recordings each). Those speakers are split
in two halves by name; calibrations are fitted on one half's trials and measured on the
other's, both ways round (so no figure is in-sample), with test sides cut to 0.5 s, 1 s,
2 s or kept whole:

- false-accept rate at a target rate (``--far``, 1% and 5%) for each test length, for
  the single cosine threshold of today (set at the target on full-length trials), the
  calibration without the duration measure and the duration-aware one; the stored EER
  threshold of the checkpoint beside them;
- Cllr and actual DCF(0.01) of the raw cosine (taken as an LLR) and of the calibrated
  LLR; minCllr and minDCF, which no calibration changes;
- EER and minDCF with and without AS-norm (the checkpoint's cohort of training
  speakers, or one made from its training speakers when it predates cohorts);
- decisions that agree with themselves: on the other half's trials, for every rule, the
  decisions that contradict their printed probability (none should), and the largest |LLR|
  on inputs far longer than any calibrated one against the bound and against what an
  unbounded map would say;
- ``verify --trials`` on ``--list-trials`` pairs with one model load (wall time, peak
  memory) against single ``verify`` calls, ten timed and extrapolated;
- what calibrating at every evaluation costs the learner: one held-out evaluation with and
  without it (``learner.calibrate``), interleaved, the same model and speakers;
- the quality-based reject (``workers.quality``): AUROC of its score over every speech
  file of the shared set against the shared noise recordings (3 s pieces) and synthetic
  non-speech (tones, chirps, note sequences, noise bursts, white noise), and how many
  genuine files the default minimums refuse.

python bench/calibration.py [-c runs/readme-real] [--trials 6000]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, SHARED_NOISE, SHARED_SPEECH, report  # noqa: E402
from learner.scoring.calibration import CUTS  # noqa: E402
from learner.scoring.trials import N_TRIALS  # noqa: E402

LENGTHS = ("full", *(f"{cut:g}s" for cut in CUTS))  # the versions the calibration fits on
TARGETS = (0.01, 0.05)


def synthetic_non_speech(rng: np.random.Generator, sr: int = 16000, seconds: float = 3.0):
    """Tones, chirps, note sequences, noise bursts and white noise, 20 of each."""
    n = int(sr * seconds)
    t = np.arange(n) / sr

    def tone():
        return 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)

    def chirp():
        f0, f1 = rng.uniform(100, 4000, 2)
        return 0.3 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))

    def notes():
        out, pos = np.zeros(n), 0
        while pos < n:
            d = int(sr * rng.uniform(0.12, 0.6))
            f, k = 220 * 2 ** (rng.integers(0, 24) / 12), np.arange(d) / sr
            note = sum(0.5**h * np.sin(2 * np.pi * f * (h + 1) * k) for h in range(6))
            seg = note * np.minimum(1, k / 0.01) * np.exp(-k * rng.uniform(1, 6))
            out[pos : pos + d] += seg[: n - pos]
            pos += d
        return 0.3 * out / np.abs(out).max()

    def bursts():
        on = np.sin(2 * np.pi * rng.uniform(1, 6) * t) > 0
        return 0.1 * rng.standard_normal(n) * on

    def white():
        return 0.1 * rng.standard_normal(n)

    for make in (tone, chirp, notes, bursts, white):
        for _ in range(20):
            yield make.__name__, make().astype(np.float32)


def speech_reject(speech_root: Path, noise_root: Path) -> dict:
    from sklearn.metrics import roc_auc_score
    from tqdm import tqdm

    from workers.audio import load_audio
    from workers.quality import QualityLimits, QualityMeter

    limits = QualityLimits()

    def quality(x: np.ndarray):
        meter = QualityMeter()
        meter.add(x)
        return meter.result(len(x) / 16000)  # speech_s is not part of the score

    files = sorted(
        f for f in speech_root.rglob("*") if f.suffix.lower() in (".wav", ".flac") and f.is_file()
    )
    speech = [limits.score(quality(load_audio(f))) for f in tqdm(files, desc="speech quality")]
    other, kinds = [], []
    for f in sorted(noise_root.glob("*.flac")):
        x = load_audio(f)
        for start in range(0, len(x) - 3 * 16000, 2 * 16000):
            other.append(limits.score(quality(x[start : start + 3 * 16000])))
            kinds.append("noise recordings")
    for kind, x in synthetic_non_speech(np.random.default_rng(0)):
        other.append(limits.score(quality(x)))
        kinds.append(kind)
    s, o = np.array(speech), np.array(other)
    refused = [str(f.relative_to(speech_root)) for f, v in zip(files, s, strict=True) if v < 1]
    return {
        "auroc": round(
            float(roc_auc_score(np.r_[np.ones(len(s)), np.zeros(len(o))], np.r_[s, o])), 5
        ),
        "speech_files": len(s),
        "speech_refused": len(refused),
        "speech_refused_files": refused[:10],
        "non_speech": {k: int(sum(1 for x in kinds if x == k)) for k in dict.fromkeys(kinds)},
        "non_speech_accepted": {
            k: int(sum(1 for x, v in zip(kinds, o, strict=True) if x == k and v >= 1))
            for k in dict.fromkeys(kinds)
        },
        "limits": limits.__dict__,
    }


def eval_cost(model, data, cfg, repeat: int = 3) -> dict:
    """Seconds of one held-out evaluation as the learner runs it, without and with the
    calibration (interleaved, median of ``repeat``)."""
    import time

    from learner.heldout import HeldOutEval

    held_db, source = data.held_out(cfg.features)
    evaluator = HeldOutEval(
        held_db, source, cfg.sampler.frames, cfg.learner.eval_trials, bootstrap=0
    )
    embed = model.embed_batch
    took: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeat):
        for name, calibrate in (("without", False), ("with", True)):
            t0 = time.perf_counter()
            evaluator.evaluate(embed, calibrate)
            took[name].append(time.perf_counter() - t0)
    out = {k: round(float(np.median(v)), 2) for k, v in took.items()}
    out["ratio"] = round(out["with"] / out["without"], 2)
    out["utterances"] = len(evaluator.features)
    return out


def decision_checks(fitted, trials, scored, mixed) -> dict:
    """On the other half's trials, every length: decisions that contradict their printed
    probability (per rule), and the largest |LLR| on inputs longer than the calibration saw
    against the largest of its own fitting trials (the bound)."""
    out: dict = {"contradictions": {}, "llr": {}}
    rules = (("prior", 0.5), ("prior", 0.05), ("eer", 0.0), ("far", 0.01), ("far", 0.05))
    for fit_half in (0, 1):
        cal = fitted[fit_half][1]
        s, _, q = mixed(trials[1 - fit_half])
        for rule, value in rules:
            key = rule if rule == "eer" else f"{rule}={value:g}"
            bad = sum(
                d["same_speaker"] != (d["p_same"] >= 0.5)
                for k in range(0, len(s), 5)
                for d in [cal.decide(float(s[k]), float(q[k]), rule, value)]
            )
            out["contradictions"][key] = out["contradictions"].get(key, 0) + int(bad)
        long_q = np.full(len(s), np.log(600.0))  # ten minutes of speech: far beyond any fit
        lo, hi = cal.llr_bounds()
        out["llr"][f"half {fit_half}"] = {
            "bound": [round(lo, 3), round(hi, 3)],
            "largest_abs_in_fitting": round(
                float(np.abs(cal.llr(*mixed(trials[fit_half])[::2])).max()), 3
            ),
            "largest_abs_long_inputs": round(float(np.abs(cal.llr(s, long_q)).max()), 3),
            "largest_abs_long_inputs_unbounded": round(
                float(np.abs(cal.raw_llr(s, long_q)).max()), 3
            ),
        }
    return out


def verify_trials_cost(checkpoint: str, held, usable: list[int], n_trials: int) -> dict:
    """``verify --trials`` on ``n_trials`` trials of the held-out files (one process, wall
    time and peak memory) against single ``verify`` calls, 10 timed and extrapolated."""
    import resource
    import subprocess
    import tempfile
    import time

    rng = np.random.default_rng(0)
    paths = [str(held.abspath(i)) for i in usable]
    pairs = [tuple(rng.choice(len(paths), 2, replace=False)) for _ in range(n_trials)]
    with tempfile.TemporaryDirectory() as tmp:
        listed = Path(tmp) / "pairs.txt"
        listed.write_text("".join(f"{paths[i]} {paths[j]}\n" for i, j in pairs))
        cmd = [sys.executable, "-m", "learner.verify", "-c", checkpoint, "--no-progress"]
        t0 = time.perf_counter()
        done = subprocess.run(
            [*cmd, "--trials", str(listed), "-o", str(Path(tmp) / "out")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        one_load = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        singles = []
        for i, j in pairs[:10]:
            t0 = time.perf_counter()
            subprocess.run([*cmd, paths[i], paths[j]], cwd=ROOT, capture_output=True)
            singles.append(time.perf_counter() - t0)
    return {
        "trials": n_trials,
        "files": len({k for p in pairs for k in p}),
        "one_load_s": round(one_load, 1),
        "one_load_peak_mb": round(peak_mb),
        "single_call_s": round(float(np.median(singles)), 2),
        "single_calls_extrapolated_s": round(float(np.median(singles)) * n_trials, 1),
        "speedup": round(float(np.median(singles)) * n_trials / one_load, 1),
    }


def embed_versions(model, db) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``[version, utterance, D]`` embeddings (full, then each cut: ``LENGTHS``) and their
    seconds, and the utterances usable at all: what ``learner.calibrate`` embeds."""
    from learner.inference.recordings import cut_recordings

    n, versions = len(db.utterances), len(LENGTHS)
    cuts, ok = cut_recordings(model, [db.abspath(i) for i in range(n)])
    rows = np.flatnonzero(ok)
    emb = np.zeros((versions, n, cuts.emb.shape[1]), np.float32)
    secs = np.zeros((versions, n))
    emb[:, rows] = cuts.emb.reshape(versions, cuts.n, -1)
    secs[:, rows] = cuts.secs.reshape(versions, cuts.n)
    return emb, secs, rows.tolist()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-c", "--checkpoint", default=str(ROOT / "runs" / "readme-real"))
    p.add_argument("--trials", type=int, default=N_TRIALS, help="trials per half")
    p.add_argument(
        "--list-trials", type=int, default=5000, help="trials for verify --trials (timed)"
    )
    p.add_argument("--noise", default=str(SHARED_NOISE))
    p.add_argument("--speech", default=str(SHARED_SPEECH))
    a = p.parse_args()
    if not Path(a.checkpoint).exists():
        p.error(
            f"{a.checkpoint} does not exist: train one with python -m learner --data "
            "../shared/data/speech --run-id readme-real"
        )
    from cluster.config import load_config
    from learner.checkpoint import resolve
    from learner.heldout import Cohort
    from learner.inference.speaker_model import SpeakerModel
    from learner.scoring.calibration import (
        act_dcf,
        cllr,
        fit_calibration,
        log_duration,
        min_cllr,
        rates_at,
    )
    from learner.scoring.scores import as_norm, min_dcf, score_trials, summarize
    from learner.scoring.trials import generate_trials
    from workers.corpus import SpeakerDatabase
    from workers.rundata import RunData

    model = SpeakerModel.load(a.checkpoint)
    ckpt = resolve(a.checkpoint)
    run = Path(a.checkpoint)
    cfg = load_config(str(run / "config.yaml")) if (run / "config.yaml").is_file() else model.cfg
    data = RunData.open(cfg.data, cfg.synthetic)
    held = data.db.subset(data.held)
    emb, secs, ok = embed_versions(model, held)
    usable = set(ok)
    names = sorted(held.speakers)
    halves = [names[::2], names[1::2]]
    figures: dict = {
        "bench": "calibration",
        "checkpoint": str(ckpt.path),
        "held_out_speakers": len(names),
        "stored_threshold": model.threshold,
    }

    # Trials within each half; test side at each length; enrolment side full.
    def half_trials(speakers: list[str], seed: int) -> np.ndarray:
        sub_idx = [
            i for i, u in enumerate(held.utterances) if u.speaker in speakers and i in usable
        ]
        sub = SpeakerDatabase(  # only the usable files
            held.root, held.layout, [held.utterances[i] for i in sub_idx], held.skipped
        )
        t = np.array(generate_trials(sub, a.trials, seed))
        t[:, 1] = np.array(sub_idx)[t[:, 1]]
        t[:, 2] = np.array(sub_idx)[t[:, 2]]
        return t

    trials = [half_trials(h, k) for k, h in enumerate(halves)]
    full = LENGTHS.index("full")

    def scored(t: np.ndarray, version: int):
        s = np.sum(emb[full, t[:, 1]] * emb[version, t[:, 2]], axis=1)
        q = log_duration(secs[full, t[:, 1]], secs[version, t[:, 2]])
        return s, t[:, 0].astype(bool), q

    def mixed(t: np.ndarray):
        """Every trial once at each length (what the learner fits on)."""
        parts = [scored(t, v) for v in range(len(LENGTHS))]
        return tuple(np.concatenate(x) for x in zip(*parts, strict=True))

    # Each half's calibrations, without and with the duration measure, fitted once.
    fitted = []
    for t in trials:
        s_mix, y_mix, q_mix = mixed(t)
        fitted.append((fit_calibration(s_mix, y_mix), fit_calibration(s_mix, y_mix, q_mix)))

    far: dict = {}
    for target in TARGETS:
        rows: dict = {
            "single cosine threshold": {},
            "calibrated, no duration": {},
            "calibrated with duration": {},
            "stored EER threshold": {},
        }
        for fit_half in (0, 1):
            t_fit, t_test = trials[fit_half], trials[1 - fit_half]
            s_full, y_full, _ = scored(t_fit, full)
            cosine_thr = float(np.quantile(s_full[~y_full], 1 - target))
            plain, with_q = fitted[fit_half]
            for v, length in enumerate(LENGTHS):
                s, y, q = scored(t_test, v)
                thr_q = np.array([with_q.threshold("far", target, x) for x in q])
                out = {
                    "single cosine threshold": rates_at(s, y, cosine_thr)[0],
                    "calibrated, no duration": rates_at(s, y, plain.threshold("far", target))[0],
                    "calibrated with duration": float(np.mean(s[~y] >= thr_q[~y])),
                    "stored EER threshold": rates_at(s, y, model.threshold)[0]
                    if model.threshold is not None
                    else None,
                }
                for name, value in out.items():
                    if value is not None:
                        rows[name].setdefault(length, []).append(value)
        far[f"target {100 * target:g}%"] = {
            name: {length: round(100 * float(np.mean(v)), 2) for length, v in by.items()}
            for name, by in rows.items()
            if by
        }
        for name, by in far[f"target {100 * target:g}%"].items():
            if name != "stored EER threshold":
                by["max_deviation_points"] = round(
                    max(abs(x - 100 * target) for x in by.values()), 2
                )
    figures["false_accept_percent"] = far

    # Cllr and DCF on the pooled held-out halves (cross-fitted), all lengths mixed.
    llr_raw, llr_plain, llr_q, s_all, y_all = [], [], [], [], []
    for fit_half in (0, 1):
        plain, with_q = fitted[fit_half]
        s, y, q = mixed(trials[1 - fit_half])
        llr_raw.append(s)
        llr_plain.append(plain.llr(s))
        llr_q.append(with_q.llr(s, q))
        s_all.append(s)
        y_all.append(y)
    y = np.concatenate(y_all)
    s_cat = np.concatenate(s_all)
    figures["calibration"] = {
        name: {
            "cllr": round(cllr(np.concatenate(v), y), 4),
            "act_dcf_01": round(act_dcf(np.concatenate(v), y, 0.01), 4),
        }
        for name, v in (
            ("raw cosine", llr_raw),
            ("calibrated, no duration", llr_plain),
            ("calibrated with duration", llr_q),
        )
    }
    figures["calibration"]["minimum"] = {
        "min_cllr": round(min_cllr(s_cat, y), 4),
        "min_dcf_01": round(min_dcf(s_cat, y, 0.01)[0], 4),
    }

    # AS-norm on full-length trials of both halves.
    cohort = ckpt.cohort()
    made = cohort is None
    if made:
        train_db = data.db.subset(data.train)
        maker = Cohort(
            train_db, data.source(cfg.features, train_db, memory_bytes=0), cfg.sampler.frames
        )
        cohort = maker(lambda x: model.embed_batch(x))
    t_all = np.concatenate(trials)
    s, y_full = score_trials(emb[full], t_all)
    normed = as_norm(s, emb[full], t_all, cohort)
    base, asn = summarize(s, y_full), summarize(normed, y_full)
    figures["asnorm"] = {
        "cohort_speakers": int(len(cohort)),
        "cohort_made_here": made,
        "trials": int(len(t_all)),
        "without": {
            "eer": round(base.eer, 4),
            "min_dcf_01": round(base.min_dcf_01, 4),
            "min_dcf_05": round(base.min_dcf_05, 4),
        },
        "with": {
            "eer": round(asn.eer, 4),
            "min_dcf_01": round(asn.min_dcf_01, 4),
            "min_dcf_05": round(asn.min_dcf_05, 4),
        },
    }
    figures["decisions"] = decision_checks(fitted, trials, scored, mixed)
    figures["verify_trials"] = verify_trials_cost(a.checkpoint, held, ok, a.list_trials)
    figures["eval_cost"] = eval_cost(model, data, cfg)
    figures["speech_reject"] = speech_reject(Path(a.speech), Path(a.noise))
    report(figures)


if __name__ == "__main__":
    main()
