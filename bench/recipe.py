"""Training recipes side by side on real speech, for the same steps (or wall time) each.

Each recipe trains with the real driver (``python -m learner``, Ray producers, same model
size: the demo preset's narrow ResCNN) on the shared speech set for ``--steps`` (or
``--minutes``); then the model each run ends with (its last checkpoint, or the average of
its last three) is scored by this script on the run's held-out speakers (the same speakers
and the same trials for every recipe), with the EER's 95% interval by bootstrap over
speakers. Held-out speakers are those with several recordings (``data.eval_min_utterances``
4: in the shared set ``asc_*``, ``vcc_*``, ``arctic_clb``/``slt``, ``fsdd_*``,
``remy_philippe``); same-speaker trials pair different files.

- constant: the first recipe: triplet loss, constant learning rate, no augmentation;
- schedule: triplet loss, warm-up + cosine decay, the average of the last three checkpoints;
- cmn: schedule, the model normalising each mel bin's mean only (``model.input_norm``): the
  default until the views recipe;
- channel: cmn + each view of a pair through its own random microphone and line;
- views: cmn + every augmentation stage, each view on its own (room, babble or coloured
  noise, channel, gain, SpecAugment);
- views-aam: views + the AAM-softmax classifier (softmax pre-training, weight decay);
- views-wide: views with twice the filters; views-noise: views with the shared set's real
  noise recordings (``../shared/data/noise``) in the noise stage;
- views-margin: views with the triplet margin 0.2; views-speed: views + speed perturbation;
  views-ms, views-ms3: both (margin 0.2 or 0.3); views-stats: statistics pooling;
  views-batch: a softmax over the batch beside the triplet loss; views-long: 2.4 s segments;
  views-strong: every augmentation stage stronger;
- views-gain: margin 0.2 with the segment's level removed instead of each bin's mean;
  views-gspeed: that + speed perturbation; views-gsaam: that + the AAM-softmax classifier
  (the demo preset); views-gswide: views-gsaam with twice the filters (the small preset,
  what ``--data`` trains; give it about 1.6x the demo's time);
- aam, augment, new, semihard, hard, speed, specaug: the ablations of earlier sessions.

Beside them, the same trials scored by the untrained baseline (``learner.scoring.baseline``:
mean and deviation of 20 MFCCs, cosine), as a floor every trained model should clear.

``--tune``: choose settings without looking at the held-out speakers. The run's held-out
speakers (of ``--split-seed``) are left out of the corpus altogether (a folder of links to
the training speakers only), and each run holds out a validation share of the training
speakers (again with several recordings) instead; the figures are on those.

``--cross asc_``: score on every speaker whose name starts with the prefix, left out of
training altogether (the 24 Arabic ``asc_*`` speakers: another language and another corpus
than everything the model trains on), as a model meets speakers after training. Held-out
speakers are not chosen among them, so this does not look at any split.

python bench/recipe.py [--steps 1800 | --minutes 15] [--data ../shared/data/speech]
                       [--split-seed 0] [--tune | --cross asc_] [--noise ../shared/data/noise]
                       [--recipes cmn,views | constant,schedule,cmn,channel,views,views-aam]
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

from bench.common import ROOT, SHARED_NOISE, SHARED_SPEECH, quiet_ray_env, report  # noqa: E402
from learner.scoring.trials import N_TRIALS  # noqa: E402
from workers.augment import EVERY_STAGE_OFF  # noqa: E402

EVAL_FRACTION = 0.2  # held-out share of speakers (and validation share with --tune)
EVAL_MIN_UTTERANCES = 4  # held-out (and validation) speakers have several recordings
COMMON = [
    "augment.enabled=false",  # the demo preset augments now: each recipe says what it turns on
    "learner.margin=0.1",  # the demo preset's margin is 0.2 now: views-margin turns it on
    # the demo preset speed-perturbs and trains a classifier now: the recipes that want them say so
    "augment.speed_prob=0",
    "learner.loss=triplet",
    "learner.pretrain_steps=0",
    "learner.weight_decay=0",
    "model.input_norm=cmvn",  # the first recipes' normalisation: CMN and GSPEED say otherwise
    "learner.eval_trials=3000",
    f"data.eval_fraction={EVAL_FRACTION}",
    f"data.eval_min_utterances={EVAL_MIN_UTTERANCES}",
]
CONSTANT = ["learner.schedule=constant", "learner.warmup_steps=0", "learner.average_last=0"]
SCHEDULE = ["learner.schedule=cosine", "learner.warmup_steps=150", "learner.average_last=3"]
AAM = ["learner.loss=aam+triplet", "learner.pretrain_steps=300", "learner.weight_decay=0.0001"]
AUGMENT = ["augment.enabled=true", "augment.speed_prob=0.3"]
# Augmentation with every stage off, for recipes that turn one on.
ONLY = list(EVERY_STAGE_OFF)
CMN = [*SCHEDULE, "model.input_norm=cmn"]
# Each view of a pair through its own random microphone and line (band-pass, tilt).
CHANNEL = [*ONLY, "augment.channel_prob=0.8"]
# The views differ in every way the producers can make: room, noise (babble of other
# training speakers or coloured noise; real noise files with --noise), channel, gain,
# SpecAugment.
VIEWS = ["augment.enabled=true", "augment.channel_prob=0.8"]
# views with the triplet margin 0.2: the default before views-gspeed
MARGIN = [*CMN, *VIEWS, "learner.margin=0.2"]
# the level only + speed perturbation (the default before the classifier)
GSPEED = [*MARGIN, "model.input_norm=gain", "augment.speed_prob=0.5"]
RECIPES = {
    "constant": CONSTANT,
    "schedule": SCHEDULE,
    "aam": AAM + SCHEDULE,
    "augment": CONSTANT + AUGMENT,
    "new": AAM + SCHEDULE + AUGMENT,
    "semihard": [*SCHEDULE, "learner.mining=semihard"],
    "hard": [*SCHEDULE, "learner.mining=hard"],
    "speed": [*SCHEDULE, *ONLY, "augment.speed_prob=0.5"],
    "specaug": [*SCHEDULE, *ONLY, "augment.time_masks=2", "augment.freq_masks=2"],
    "cmn": CMN,
    "channel": [*CMN, *CHANNEL],
    "views": [*CMN, *VIEWS],
    "views-aam": [*CMN, *VIEWS, *AAM],
    # views with twice the filters (model.width 0.25: about 3x the step time here)
    "views-wide": [*CMN, *VIEWS, "model.width=0.25"],
    # views + every other speaker of the batch as a negative (learner.batch_weight)
    "views-batch": [*CMN, *VIEWS, "learner.batch_weight=1"],
    # views + statistics pooling (mean and spread over time: model.pooling)
    "views-stats": [*CMN, *VIEWS, "model.pooling=stats"],
    # views + speed perturbation (0.9/1.1, each copy a new speaker: WeSpeaker's 3x speakers)
    "views-speed": [*CMN, *VIEWS, "augment.speed_prob=0.5"],
    # views with a wider triplet margin (0.2: more triplets stay active)
    "views-margin": MARGIN,
    # views on 2.4 s segments instead of 1.6 s
    "views-long": [*CMN, *VIEWS, "sampler.frames=240"],
    # views with every stage stronger and more often: room 0.6, noise 0.8 at 0-15 dB, a
    # channel on every view
    "views-strong": [
        *CMN,
        *VIEWS,
        "augment.reverb_prob=0.6",
        "augment.noise_prob=0.8",
        "augment.snr_low=0",
        "augment.snr_high=15",
        "augment.channel_prob=1.0",
    ],
    # views + speed perturbation + the wider triplet margin (0.2, or 0.3)
    "views-ms": [*MARGIN, "augment.speed_prob=0.5"],
    "views-ms3": [*CMN, *VIEWS, "augment.speed_prob=0.5", "learner.margin=0.3"],
    # views, margin 0.2 with the segment's level removed instead of each bin's mean
    # (model.input_norm gain: the long-term spectrum's shape is kept)
    "views-gain": [*MARGIN, "model.input_norm=gain"],
    # views, margin 0.2 with anchors drawn by the square root of their utterances, or by their
    # number (speakers with many recordings are anchors more often: sampler.weighting)
    "views-sqrt": [*MARGIN, "sampler.weighting=sqrt"],
    "views-utt": [*MARGIN, "sampler.weighting=utterance"],
    # both: the level only, anchors by the square root of their utterances
    "views-gs": [*MARGIN, "model.input_norm=gain", "sampler.weighting=sqrt"],
    # the level only + speed perturbation
    "views-gspeed": GSPEED,
    # that + the AAM classifier beside the triplet loss (speed copies are classes too): the
    # demo preset
    "views-gsaam": [*GSPEED, *AAM],
    # views-gspeed with two residual blocks per stage instead of one
    "views-gsdeep": [*GSPEED, "model.blocks=2"],
    # views-gspeed with anchors drawn by the square root of their utterances
    "views-gss": [*GSPEED, "sampler.weighting=sqrt"],
    # views-gsaam with twice the filters (model.width 0.25): the small preset, what --data
    # trains (a slower step: 20 minutes there)
    "views-gswide": [*GSPEED, *AAM, "model.width=0.25"],
    # views with the shared set's real noise recordings as a third of the noise stage
    "views-noise": [
        *CMN,
        *VIEWS,
        f"augment.noise_dir={SHARED_NOISE}",
        "augment.noise_dir_share=0.34",
    ],
}


def train(
    name: str, data: Path, runs: Path, budget: list[str], split_seed: int, extra: list[str]
) -> dict:
    sets = [*COMMON, f"data.split_seed={split_seed}", *budget, *RECIPES[name], *extra]
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


def scan(data: Path):
    from cluster.config import DataConfig
    from workers.corpus import SpeakerDatabase

    cfg = DataConfig(eval_fraction=EVAL_FRACTION, eval_min_utterances=EVAL_MIN_UTTERANCES)
    return cfg, SpeakerDatabase.scan(data.resolve(), cfg.layout, cfg.min_seconds, None)


def link_speakers(db, speakers: list[str], into: Path) -> Path:
    """A corpus at ``into`` of links to ``speakers``' folders in ``db``."""
    into.mkdir(parents=True)
    for speaker in speakers:
        (into / speaker).symlink_to(db.root / speaker, target_is_directory=True)
    return into


def training_speakers_only(data: Path, split_seed: int, into: Path) -> Path:
    """A corpus of links to the training speakers of ``data``'s split: the held-out
    speakers are not in it at all (for ``--tune``)."""
    cfg, db = scan(data)
    train, _ = db.split(
        cfg.eval_fraction, split_seed, cfg.min_eval_speakers, cfg.eval_min_utterances
    )
    return link_speakers(db, train, into)


def split_by_prefix(data: Path, prefix: str, into: Path) -> tuple[Path, list[str]]:
    """A corpus of links to the speakers of ``data`` whose names do not start with
    ``prefix`` (for ``--cross``), and the names of those that do."""
    _, db = scan(data)
    apart = [s for s in db.speakers if s.startswith(prefix)]
    if len(apart) < 2 or len(apart) == len(db.speakers):
        raise SystemExit(f"--cross {prefix}: {len(apart)} of {len(db.speakers)} speakers match")
    kept = [s for s in db.speakers if not s.startswith(prefix)]
    return link_speakers(db, kept, into), apart


def held_out(run: Path, trials: int, cross: tuple[Path, list[str]] | None = None):
    """The run's held-out speakers (the same speakers and trials for every recipe), or
    with ``cross`` (a corpus and speaker names in it) those speakers of that corpus."""
    from cluster.config import load_config
    from learner.heldout import HeldOutEval
    from workers.corpus import SpeakerDatabase
    from workers.rundata import RunData

    cfg = load_config(str(run / "config.yaml"))
    if cross is None:
        held_db, source = RunData.open(cfg.data, cfg.synthetic).held_out(cfg.features)
    else:
        corpus, speakers = cross
        db = SpeakerDatabase.scan(corpus.resolve(), cfg.data.layout, cfg.data.min_seconds, None)
        held_db = db.subset(speakers)
        source = RunData.of(db, cfg.data).source(cfg.features, held_db, memory_bytes=0)
    return cfg, HeldOutEval(held_db, source, cfg.sampler.frames, trials, seed=1, bootstrap=500)


def rounded(result) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.as_dict().items()}


def score(run: Path, checkpoint: Path, trials: int, cross=None) -> dict:
    """The end model on the run's held-out speakers, with a bootstrap interval; and, when
    the checkpoint stores a cohort of training speakers, the same trials after AS-norm
    (``asnorm``: what ``verify --asnorm`` scores)."""
    from learner.inference.speaker_model import SpeakerModel
    from learner.scoring.scores import as_norm, score_trials

    _, evaluator = held_out(run, trials, cross)
    model = SpeakerModel.load(checkpoint)
    emb = evaluator.embeddings(lambda x: model.model(x, training=False).numpy())
    scores, labels = score_trials(emb, evaluator.trials)
    result = rounded(evaluator.summary(scores, labels))
    if model.cohort is not None and len(model.cohort):
        normed = as_norm(scores, emb, evaluator.trials, model.cohort)
        result["asnorm"] = rounded(evaluator.summary(normed, labels))
    return result


def mfcc_baseline(run: Path, trials: int, cross=None) -> dict:
    """The same trials scored by the untrained baseline (MFCC mean and deviation, cosine)."""
    import numpy as np

    from learner.scoring.baseline import mfcc_embedding

    cfg, evaluator = held_out(run, trials, cross)
    db = evaluator.db
    emb = np.stack([mfcc_embedding(db.abspath(i), cfg.features) for i in range(len(db.utterances))])
    return rounded(evaluator.score(emb))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=15.0, help="training time per recipe")
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train each recipe this many steps instead of for --minutes (fair when the "
        "machine is busy with other work: wall time then varies, steps do not)",
    )
    p.add_argument(
        "--noise",
        default="",
        help="a folder of noise recordings for the augmenting recipes (augment.noise_dir)",
    )
    p.add_argument("--data", default=str(SHARED_SPEECH))
    p.add_argument("--trials", type=int, default=N_TRIALS)
    p.add_argument(
        "--split-seed", type=int, default=0, help="another seed: other held-out speakers"
    )
    p.add_argument(
        "--recipes",
        default="constant,schedule",
        help=f"comma-separated, the baseline first, of {', '.join(RECIPES)}",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="figures on validation speakers taken from the training speakers; "
        "the held-out speakers are left out of the corpus",
    )
    p.add_argument(
        "--cross",
        default="",
        metavar="PREFIX",
        help="score on every speaker whose name starts with PREFIX (asc_: the Arabic "
        "speakers), left out of training altogether: speakers of another language and "
        "corpus, as a model meets after training",
    )
    a = p.parse_args()
    if a.cross and a.tune:
        p.error("--cross and --tune: choose one")
    names = [n for n in a.recipes.split(",") if n]
    if not names or any(n not in RECIPES for n in names):
        p.error(f"--recipes: comma-separated names of {', '.join(RECIPES)}")
    quiet_ray_env()
    from learner.checkpoint import CheckpointManager

    budget = (
        [f"learner.max_steps={a.steps}", "learner.max_minutes=0"]
        if a.steps
        else ["learner.max_steps=6000", f"learner.max_minutes={a.minutes}"]
    )
    extra = [f"augment.noise_dir={Path(a.noise).resolve()}"] if a.noise else []
    figures: dict = {"bench": "recipe", "budget": budget, "data": a.data, "noise": a.noise}
    figures["split_seed"] = a.split_seed
    figures["scored_on"] = "validation speakers (--tune)" if a.tune else "held-out speakers"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VE_CACHE_DIR", str(Path(tmp) / "cache"))
        runs = Path(tmp) / "runs"
        data = Path(a.data)
        cross = None
        if a.tune:
            data = training_speakers_only(data, a.split_seed, Path(tmp) / "training-speakers")
        elif a.cross:
            data, apart = split_by_prefix(data, a.cross, Path(tmp) / f"without-{a.cross}")
            cross = (Path(a.data), apart)
            figures["scored_on"] = f"{len(apart)} speakers {a.cross}* left out of training"
        for name in names:
            print(f"training {name} ({' '.join(budget)}) ...", file=sys.stderr, flush=True)
            ran = train(name, data, runs, budget, a.split_seed, extra)
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
                "end": score(run, end.path, a.trials, cross),
                "run_best_eer_smoothed": best.state().get("best_eer") if best else None,
                "recipe": RECIPES[name],
                "train_seconds": round(state.get("totals", {}).get("step", 0.0), 1),
            }
            print(json.dumps(figures[name]), file=sys.stderr, flush=True)
        figures["mfcc_baseline"] = mfcc_baseline(runs / names[0], a.trials, cross)
    t = figures[names[0]]["end"]
    figures["eer"] = {name: figures[name]["end"]["eer"] for name in names}
    figures["asnorm_eer"] = {
        name: figures[name]["end"]["asnorm"]["eer"]
        for name in names
        if "asnorm" in figures[name]["end"]
    }
    figures[f"overlaps_{names[0]}"] = {
        name: not (n["eer_high"] < t["eer_low"] or t["eer_high"] < n["eer_low"])
        for name in names[1:]
        for n in [figures[name]["end"]]
    }
    report(figures)


if __name__ == "__main__":
    main()
