"""Your own recordings, leave one domain out: five ways to a model that decides well on a
domain the run never saw, side by side on the same test speakers and trials.

For each domain (``asc``: the 24 Arabic keyword speakers, each on their own device;
``eng``: the English speakers with several recordings, ``vcc_``, ``arctic_``, ``fsdd_``)
its speakers are split in two by sorted name (alternately): adaptation speakers and test
speakers. Then, with the real driver and commands:

- (a) ``base``: a run trained without the domain at all (``python -m learner``, the small
  preset, ``--steps``);
- (b) ``adapt``: (a) + ``python -m learner.adapt`` on the adaptation speakers' recordings,
  given as one flat folder (no labels, no folders);
- (c) ``calibrate``: (a) + ``python -m learner.calibrate`` on them, with their labels;
- (d) ``finetune``: ``python -m learner --init-from`` (a) on them, ``--ft-steps`` steps;
- (e) ``joint``: a run from scratch on everything but the test speakers, ``--steps``.

Each model is scored on the test speakers (full-length enrolment, test sides at full
length and cut to 2 s, 1 s and 0.5 s in turn, as calibrations are fitted) with its own
stored calibration and rule: EER with its 95% interval (bootstrap over speakers), Cllr and
minCllr, false accepts at ``--far`` 0.01 and 0.05 per duration bin of the shorter input
(< 1.5 s, 1.5-3 s, > 3 s), misses and false accepts of the default decision (the Bayes
decision at prior 0.5, so also its error), the decisions that contradict their printed
probability, and the wall time each way took. For (b) also: how its errors grow with fewer
adaptation recordings (``--sizes``), which sets ``learner.adapt``'s minimum.

Runs are kept in ``--work`` and reused when present (a second call only scores).

python bench/adapt.py [--domains asc,eng] [--steps 1000] [--ft-steps 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, SHARED_SPEECH, quiet_ray_env, report  # noqa: E402

DOMAINS = {"asc": ("asc_",), "eng": ("vcc_", "arctic_", "fsdd_")}
BINS = (("<1.5s", 0.0, 1.5), ("1.5-3s", 1.5, 3.0), (">3s", 3.0, math.inf))
FARS = (0.01, 0.05)


def split_domain(speech: Path, prefixes: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """(speakers outside the domain, adaptation speakers, test speakers): the domain's
    speakers by sorted name, alternately."""
    names = sorted(p.name for p in speech.iterdir() if p.is_dir())
    inside = [n for n in names if n.startswith(prefixes)]
    return [n for n in names if n not in inside], inside[0::2], inside[1::2]


def link_folder(speech: Path, speakers: list[str], into: Path, flat: bool = False) -> Path:
    """A corpus of links: one folder per speaker, or (``flat``) every file in one folder
    under a name that keeps no speaker folder (the recordings as an unlabelled domain)."""
    if into.exists():
        return into
    staging = into.with_name(into.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for k, s in enumerate(speakers):
        if not flat:
            (staging / s).symlink_to(speech / s, target_is_directory=True)
            continue
        for f in sorted((speech / s).iterdir()):
            if f.is_file():
                (staging / f"r{k:03d}-{f.name}").symlink_to(f)
    staging.rename(into)
    return into


def run_cli(args: list[str], log: Path) -> float:
    """A command of ours in a fresh process; its output to ``log``; the wall seconds."""
    t0 = time.time()
    with open(log, "w") as fh:
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])}: exit {done.returncode}; see {log}")
    return time.time() - t0


def train(work: Path, name: str, data: list[Path], steps: int, extra: list[str]) -> dict:
    """A run of ``python -m learner`` (reused when it finished before)."""
    run = work / "runs" / name
    if (run / "averaged").is_dir() or (run / "done.json").is_file():
        return json.loads((run / "done.json").read_text()) if (run / "done.json").is_file() else {}
    shutil.rmtree(run, ignore_errors=True)
    args = ["-m", "learner", "--runs", str(work / "runs"), "--run-id", name, "--no-progress"]
    for d in data:
        args += ["--data", str(d)]
    args += ["--set", f"learner.max_steps={steps}", "--set", "learner.max_minutes=0", *extra]
    log = work / f"{name}.log"
    seconds = run_cli(args, log)
    steps_done = re.findall(r"trained to step (\d+)", log.read_text())
    out = {"wall_s": round(seconds, 1), "steps": int(steps_done[-1]) if steps_done else None}
    (run / "done.json").write_text(json.dumps(out))
    return out


def score_model(checkpoint: Path, test: Path, trials: int, seed: int = 0) -> dict:
    """The model's own decisions on the test speakers (see the module docstring)."""
    from learner.inference.recordings import cut_recordings
    from learner.inference.speaker_model import SpeakerModel
    from learner.scoring.calibration import cllr, min_cllr
    from learner.scoring.scores import bootstrap_eer, summarize
    from learner.scoring.trials import generate_trials
    from workers.corpus import SpeakerDatabase

    model = SpeakerModel.load(checkpoint)
    cal = model.calibration()
    db = SpeakerDatabase.scan(test)
    cuts, ok = cut_recordings(model, [db.abspath(i) for i in range(len(db.utterances))], False)
    row = np.cumsum(ok) - 1
    listed = [t for t in generate_trials(db, trials, seed) if ok[t[1]] and ok[t[2]]]
    speakers = np.array([db.utterances[t[1]].speaker for t in listed])
    cut, s, y, q = cuts.trials([(t[0], row[t[1]], row[t[2]]) for t in listed])
    y = y.astype(bool)
    eer = summarize(s, y)
    low, high = bootstrap_eer(s, y, speakers, 500, seed)
    llr = cal.llr(s, q)
    secs = np.exp(q)
    out: dict = {
        "calibration": cal.fitted_on,
        "trials": int(len(y)),
        "targets": int(y.sum()),
        "eer": round(eer.eer, 4),
        "eer_interval": [round(low, 4), round(high, 4)],
        "cllr": round(cllr(llr, y), 4),
        "min_cllr": round(min_cllr(s, y), 4),
    }
    accept = llr >= 0  # the default rule: the Bayes decision at prior 0.5
    miss, fa = float(np.mean(~accept[y])), float(np.mean(accept[~y]))
    out["default_rule"] = {"miss": round(miss, 4), "false_accept": round(fa, 4)}
    out["bayes_error_05"] = round((miss + fa) / 2, 4)
    out["bayes_error_over_eer"] = round((miss + fa) / 2 / max(eer.eer, 1e-9), 2)
    out["miss_fa_ratio"] = round(max(miss, fa) / max(min(miss, fa), 1e-9), 2)
    out["false_accepts_at_far"] = {}
    for far in FARS:
        thr = np.array([cal.threshold("far", far, x) for x in q])
        by_bin = {}
        for name, lo, hi in BINS:
            non = ~y & (secs >= lo) & (secs < hi)
            if non.sum():
                by_bin[name] = {
                    "fa": round(float(np.mean(s[non] >= thr[non])), 4),
                    "nontargets": int(non.sum()),
                }
        out["false_accepts_at_far"][f"{far:g}"] = by_bin
    contradictions = 0
    for rule, value in (("prior", 0.5), ("eer", 0.0), ("far", 0.01)):
        for k in range(0, len(s), 7):  # every 7th trial: all durations, all rules
            d = cal.decide(float(s[k]), float(q[k]), rule, value)
            contradictions += d["same_speaker"] != (d["p_same"] >= 0.5)
    out["contradictions"] = contradictions
    return out


def size_sweep(base: Path, flat: Path, test: Path, sizes: list[int], trials: int) -> dict:
    """``learner.adapt``'s fit on fewer adaptation recordings (random subsets, in process),
    scored as above: what the minimum number of recordings costs."""
    from learner.commands.adapt import fit_domain
    from learner.inference.recordings import cut_recordings
    from learner.inference.speaker_model import SpeakerModel, expand_inputs

    model = SpeakerModel.load(base)
    files = expand_inputs([str(flat)])
    cuts, _ = cut_recordings(model, files, False)
    out = {}
    work = Path(str(base)).parent / "sweep"
    for n in sizes:
        if n > cuts.n:
            continue
        pick = np.sort(np.random.default_rng(n).permutation(cuts.n)[:n])
        versions = len(cuts.emb) // cuts.n  # full + each cut
        rows = np.concatenate([pick + k * cuts.n for k in range(versions)])
        sub = type(cuts)(cuts.emb[rows], cuts.secs[rows], n)
        domain = fit_domain(model, sub, [-1] * n, f"{n} recordings", str(flat))
        ckpt = work / f"n{n}"
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(model.checkpoint.path, ckpt / model.checkpoint.path.name)
        domain.write(ckpt / model.checkpoint.path.name)
        r = score_model(ckpt / model.checkpoint.path.name, test, trials)
        out[str(n)] = {
            "far_0.01": r["false_accepts_at_far"]["0.01"],
            "default_rule": r["default_rule"],
            "bayes_error_over_eer": r["bayes_error_over_eer"],
            "same_speaker_share": domain.info["same_speaker_share"],
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--speech", default=str(SHARED_SPEECH))
    p.add_argument("--domains", default="asc,eng")
    p.add_argument("--steps", type=int, default=1000, help="steps of (a) and (e), small preset")
    p.add_argument("--ft-steps", type=int, default=100, help="steps of (d): a tenth of (e)'s")
    p.add_argument("--trials", type=int, default=6000)
    p.add_argument("--sizes", default="50,100,200,400", help="adaptation set sizes for (b)")
    p.add_argument("--work", default=str(ROOT / "artifacts" / "adapt"))
    a = p.parse_args()
    quiet_ray_env()
    speech, work = Path(a.speech).resolve(), Path(a.work).resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VE_CACHE_DIR", str(work / "cache"))
    figures: dict = {"bench": "adapt", "steps": a.steps, "ft_steps": a.ft_steps, "preset": "small"}
    for domain in a.domains.split(","):
        outside, adapt_spk, test_spk = split_domain(speech, DOMAINS[domain])
        corpora = work / "corpora"
        without = link_folder(speech, outside, corpora / f"without-{domain}")
        joint = link_folder(speech, outside + adapt_spk, corpora / f"joint-{domain}")
        labelled = link_folder(speech, adapt_spk, corpora / f"{domain}-adapt")
        flat = link_folder(speech, adapt_spk, corpora / f"{domain}-adapt-flat", flat=True)
        test = link_folder(speech, test_spk, corpora / f"{domain}-test")
        print(
            f"{domain}: training (a) and (e), {a.steps} steps each ...", file=sys.stderr, flush=True
        )
        time_a = train(work, f"base-{domain}", [without], a.steps, [])
        time_e = train(work, f"joint-{domain}", [joint], a.steps, [])
        base = work / "runs" / f"base-{domain}"
        run_d = work / "runs" / f"finetune-{domain}"
        time_d = train(work, run_d.name, [labelled], a.ft_steps, ["--init-from", str(base)])
        adapted, calibrated = work / f"adapted-{domain}", work / f"calibrated-{domain}"
        if not adapted.exists():
            t = run_cli(
                [
                    "-m",
                    "learner.adapt",
                    "--data",
                    str(flat),
                    "-c",
                    str(base),
                    "-o",
                    str(adapted),
                    "--no-progress",
                ],
                work / f"adapt-{domain}.log",
            )
            (work / f"adapt-{domain}.json").write_text(json.dumps({"wall_s": round(t, 1)}))
        if not calibrated.exists():
            from learner.checkpoint import resolve

            staging = work / f".calibrating-{domain}"
            shutil.rmtree(staging, ignore_errors=True)
            source = resolve(base).path
            shutil.copytree(source, staging / source.name)
            t = run_cli(
                [
                    "-m",
                    "learner.calibrate",
                    "--data",
                    str(labelled),
                    "-c",
                    str(staging),
                    "--no-progress",
                ],
                work / f"calibrate-{domain}.log",
            )
            (staging / "wall.json").write_text(json.dumps({"wall_s": round(t, 1)}))
            staging.rename(calibrated)
        models = {
            "a_base": (base, time_a),
            "b_adapt": (adapted, json.loads((work / f"adapt-{domain}.json").read_text())),
            "c_calibrate": (calibrated, json.loads((calibrated / "wall.json").read_text())),
            "d_finetune": (run_d, time_d),
            "e_joint": (work / "runs" / f"joint-{domain}", time_e),
        }
        rows = {}
        for name, (path, took) in models.items():
            print(f"{domain}: scoring {name} ...", file=sys.stderr, flush=True)
            rows[name] = {**score_model(path, test, a.trials), "wall_s": took.get("wall_s")}
            print(json.dumps({domain: {name: rows[name]}}), file=sys.stderr, flush=True)
        sizes = [int(x) for x in a.sizes.split(",") if x]
        rows["b_adapt_by_size"] = size_sweep(base, flat, test, sizes, a.trials)
        rows["speakers"] = {"adaptation": adapt_spk, "test": test_spk, "outside": len(outside)}
        figures[domain] = rows
    report(figures)


if __name__ == "__main__":
    main()
