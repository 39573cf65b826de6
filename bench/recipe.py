"""Training recipes side by side on real speech, for the same wall time each.

Each recipe trains with the real driver (``python -m learner``, Ray producers, same model
size: the demo preset's narrow ResCNN) on the shared speech set for ``--minutes``; then
the model each run ends with (its last checkpoint, or the average of its last three) is
scored by this script on the run's held-out speakers (the same speakers and
the same trials for both), with the EER's 95% interval by bootstrap over speakers.

- constant: the first recipe: triplet loss, constant learning rate, no augmentation;
- schedule (the default since it measured better): triplet loss, warm-up + cosine decay,
  the average of the last three checkpoints;
- aam: schedule + the AAM-softmax classifier (softmax pre-training first, weight decay);
- augment: constant + augmentation on the producers (noise, reverberation, speed,
  SpecAugment);
- new: all of them together.

python bench/recipe.py [--minutes 15] [--data ../shared/data/speech] [--split-seed 0]
                       [--recipes constant,schedule | constant,schedule,aam,augment,new]
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
CONSTANT = ["learner.schedule=constant", "learner.warmup_steps=0", "learner.average_last=0"]
SCHEDULE = ["learner.schedule=cosine", "learner.warmup_steps=150", "learner.average_last=3"]
AAM = ["learner.loss=aam+triplet", "learner.pretrain_steps=300", "learner.weight_decay=0.0001"]
AUGMENT = ["augment.enabled=true", "augment.speed_prob=0.3"]
RECIPES = {
    "constant": CONSTANT,
    "schedule": SCHEDULE,
    "aam": AAM + SCHEDULE,
    "augment": CONSTANT + AUGMENT,
    "new": AAM + SCHEDULE + AUGMENT,
}


def train(name: str, data: Path, runs: Path, minutes: float, split_seed: int) -> dict:
    sets = [*COMMON, f"data.split_seed={split_seed}", f"learner.max_minutes={minutes}"]
    sets += RECIPES[name]
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
    p.add_argument(
        "--split-seed", type=int, default=0, help="another seed: other held-out speakers"
    )
    p.add_argument(
        "--recipes",
        default="constant,schedule",
        help=f"comma-separated, the baseline first, of {', '.join(RECIPES)}",
    )
    a = p.parse_args()
    names = [n for n in a.recipes.split(",") if n]
    if not names or any(n not in RECIPES for n in names):
        p.error(f"--recipes: comma-separated names of {', '.join(RECIPES)}")
    quiet_ray_env()
    from learner.checkpoint import CheckpointManager

    figures: dict = {"bench": "recipe", "minutes_each": a.minutes, "data": a.data}
    figures["split_seed"] = a.split_seed
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VE_CACHE_DIR", str(Path(tmp) / "cache"))
        runs = Path(tmp) / "runs"
        for name in names:
            print(f"training {name} for {a.minutes} min ...", file=sys.stderr, flush=True)
            ran = train(name, Path(a.data), runs, a.minutes, a.split_seed)
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
    t = figures[names[0]]["end"]
    figures["eer"] = {name: figures[name]["end"]["eer"] for name in names}
    figures[f"overlaps_{names[0]}"] = {
        name: not (n["eer_high"] < t["eer_low"] or t["eer_high"] < n["eer_low"])
        for name in names[1:]
        for n in [figures[name]["end"]]
    }
    report(figures)


if __name__ == "__main__":
    main()
