"""Today's recipe against the new one, side by side on real speech, for the same wall time.

Each recipe trains with the real driver (``python -m learner``, Ray producers, same model
size: the demo preset's narrow ResCNN) on the shared speech set for ``--minutes``; then
the model each run ends with (today: its last checkpoint; new: the average of its last
three) is scored by this script on the run's held-out speakers (the same speakers and
the same trials for both), with the EER's 95% interval by bootstrap over speakers.

- today: triplet loss, constant learning rate, no augmentation;
- new: AAM-softmax + triplet (softmax pre-training first), warm-up + cosine decay, weight
  decay, augmentation on the producers (noise, reverberation, speed, SpecAugment), the
  average of the last checkpoints.

python bench/recipe.py [--minutes 15] [--data ../shared/data/speech]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, SHARED_SPEECH, quiet_ray_env, report  # noqa: E402

COMMON = ["learner.max_steps=6000", "learner.eval_trials=3000", "data.eval_fraction=0.2"]
RECIPES = {
    "today": [],
    "new": [
        "learner.loss=aam+triplet",
        "learner.pretrain_steps=300",
        "learner.schedule=cosine",
        "learner.warmup_steps=150",
        "learner.weight_decay=0.0001",
        "learner.average_last=3",
        "augment.enabled=true",
        "augment.speed_prob=0.3",
    ],
}


def train(name: str, data: Path, runs: Path, minutes: float) -> dict:
    sets = [*COMMON, f"learner.max_minutes={minutes}", *RECIPES[name]]
    cmd = [sys.executable, "-m", "learner", "--preset", "demo", "--data", str(data)]
    cmd += ["--runs", str(runs), "--run-id", name, "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: exit {out.returncode}\n{out.stderr[-3000:]}")
    steps = re.findall(r"trained to step (\d+)", out.stderr)
    return {"steps": int(steps[-1]) if steps else None, "wall_min": (time.time() - t0) / 60}


def score(run: Path, checkpoint: Path, trials: int) -> dict:
    """The end model on the run's held-out speakers, with a bootstrap interval."""
    from cluster.config import load_config
    from learner.heldout import HeldOutEval
    from learner.inference import SpeakerModel
    from workers.rundata import RunData

    cfg = load_config(str(run / "config.yaml"))
    data = RunData.open(cfg.data, cfg.synthetic)
    held_db, source = data.held_out(cfg.features)
    evaluator = HeldOutEval(held_db, source, cfg.sampler.frames, trials, seed=1, bootstrap=500)
    model = SpeakerModel.load(checkpoint)
    result = evaluator(lambda x: model.model(x, training=False).numpy()).as_dict()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--data", default=str(SHARED_SPEECH))
    p.add_argument("--trials", type=int, default=6000)
    a = p.parse_args()
    quiet_ray_env()
    from learner.checkpoint import CheckpointManager

    figures: dict = {"bench": "recipe", "minutes_each": a.minutes, "data": a.data}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VE_CACHE_DIR", str(Path(tmp) / "cache"))
        runs = Path(tmp) / "runs"
        for name in RECIPES:
            print(f"training {name} for {a.minutes} min ...", file=sys.stderr, flush=True)
            ran = train(name, Path(a.data), runs, a.minutes)
            run = runs / name
            averaged = run / "averaged"
            end = (
                CheckpointManager(averaged).latest()
                if averaged.exists()
                else CheckpointManager(run / "checkpoints").latest()
            )
            best = CheckpointManager(run / "checkpoints").best()
            state = end.state()
            figures[name] = {
                **ran,
                "end_model": end.path.parent.name + "/" + end.path.name,
                "end": score(run, end.path, a.trials),
                "run_best_eer_smoothed": best.state().get("best_eer") if best else None,
                "recipe": RECIPES[name],
                "train_seconds": round(state.get("totals", {}).get("step", 0.0), 1),
            }
            print(json.dumps(figures[name]), file=sys.stderr, flush=True)
    t, n = figures["today"]["end"], figures["new"]["end"]
    figures["eer_today_to_new"] = [t["eer"], n["eer"]]
    figures["intervals_overlap"] = not (
        n["eer_high"] < t["eer_low"] or t["eer_high"] < n["eer_low"]
    )
    report(figures)


if __name__ == "__main__":
    main()
