"""Train speaker embeddings: start Ray, the producers and the learner, show progress.

With no arguments: the ``demo`` preset on the embedded synthetic corpus, a local
Ray instance and an embedded Redis, 12 minutes on a 2-core CPU. With ``--data`` and no
``--preset``: the ``small`` preset (the same recipe, a wider model, 20 minutes).

Examples:
    python -m learner                                     # the demo
    python -m learner --data ~/my-speakers                # the small preset, 20 minutes
    python -m learner --data ~/LibriSpeech/train-clean-100 --preset base
    python -m learner --set learner.lr=3e-4 --set sampler.frames=200
    python -m learner --resume runs/20261124-073721-3f9a  # continue exactly
    python -m learner --init-from runs/20261124-073721-3f9a --data ~/my-speakers  # fine-tune
    python -m learner --address auto --data /shared/vox1  # on a Ray cluster (ray up)

Ctrl-C writes a checkpoint and shuts everything down.

The other commands (each with its own --help):
    python -m learner.verify a.wav b.wav -c RUN      same speaker? a decision and P(same)
    python -m learner.enroll NAME files... -c RUN --store team.json
    python -m learner.identify rec.wav -c RUN --store team.json
    python -m learner.embed DIR -c RUN -o emb/       embeddings (npy, Kaldi ark/scp)
    python -m learner.evaluate --data DIR -c RUN -o eval/   EER, minDCF, DET curve
    python -m learner.calibrate --data DIR -c RUN    fit decisions on your recordings
    python -m learner.adapt --data DIR -c RUN -o OUT adapt to a domain without labels
    python -m learner.average RUN                    average the last checkpoints
    python -m learner.export -c RUN -o OUT           Keras, SavedModel or ONNX
    python -m workers.precompute --data DIR          fill the feature cache once
    python -m workers.transcode SRC DST              decode AAC/MP3/48 kHz to FLAC once
    python -m workers --run ID --count 2             add producers to a running run
    python -m dashboard                              the live dashboard (127.0.0.1:8050)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

from cluster.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    replace,
)
from cluster.redaction import public_url
from cluster.runs import RunDir, UnsafeRunFolder, is_run_id
from learner.backend import VERBOSE_ENV

log = logging.getLogger("learner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m learner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        help="demo | small | smoke | base, or a YAML file (default: small with --data, the "
        "recipe measured on real speech for a CPU box, 20 minutes; demo without, on the "
        "synthetic corpus, 12 minutes)",
    )
    p.add_argument(
        "--data",
        action="append",
        help="corpus: a folder (LibriSpeech, VoxCeleb 1/2, CN-Celeb, VCTK, spk/utt), a Kaldi "
        "data folder or a .csv manifest; repeat for several corpora (default: synthetic)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. learner.lr=3e-4 (repeatable)",
    )
    p.add_argument("--steps", type=int, help="train until this step (learner.max_steps)")
    p.add_argument(
        "--resume", metavar="RUN", help="continue a run directory from its last checkpoint"
    )
    p.add_argument(
        "--init-from",
        metavar="RUN|CHECKPOINT",
        help="fine-tune: start the network from a trained run's checkpoint (the one -c RUN "
        "resolves to) with its feature and model settings, a new classifier head for --data's "
        "speakers, and the fine-tuning schedule (cluster/presets/overlays/finetune.yaml: lr "
        "1e-4, a tenth of the small preset's time); repeat --data to mix in the old corpus",
    )
    p.add_argument("--runs", default="runs", help="where run directories are created")
    p.add_argument("--run-id", help="name of the new run directory (default: time-based)")
    p.add_argument("--producers", type=int, help="producer actors (default: one per spare CPU)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], help="where the learner runs")
    p.add_argument("--address", help="Ray address; 'auto' joins the cluster of this machine")
    p.add_argument("--cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--redis", help="Redis URL for metrics (default: REDIS_URL or embedded)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a bar")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's native start-up messages and Ray's reports of tasks "
        "ended by the run's own shutdown",
    )
    return p.parse_args(argv)


def default_preset(data: list[str] | None) -> str:
    """``small`` for a corpus of the user's, ``demo`` for the synthetic one."""
    return "small" if data else "demo"


RESUME_FIXED = ("features", "model")  # what a resumed run cannot change


def without_secret(cfg: RunConfig) -> tuple[RunConfig, str]:
    """The config with ``metrics.redis_url``'s password removed, and the URL as given: the
    password is used, never written (config.yaml, checkpoints, the metrics store)."""
    url = cfg.metrics.redis_url
    public = public_url(url)
    return (cfg if public == url else replace(cfg, metrics={"redis_url": public})), url


def resolve_config(a: argparse.Namespace):
    """(config without secrets, run directory, checkpoint to resume or None, Redis URL)."""
    overrides = list(a.set)
    if a.data:
        overrides.append(f"data.path={os.pathsep.join(a.data)}")
    if a.steps:
        overrides.append(f"learner.max_steps={a.steps}")
    if a.device:
        overrides.append(f"learner.device={a.device}")
    if a.producers is not None:
        overrides.append(f"producer.count={a.producers}")
    if a.resume and a.init_from:
        raise ConfigError("--resume continues a run (a fine-tuning run too): drop --init-from")
    if a.resume:
        from learner.checkpoint import CheckpointManager

        run = RunDir.open(a.resume)
        try:
            run.check_writable()
        except OSError as exc:
            raise ConfigError(f"--resume: {exc.strerror}; a resumed run writes there") from None
        old = run.read_config()
        cfg, url = without_secret(apply_overrides(old, overrides) if overrides else old)
        ckpt = CheckpointManager(run.checkpoints).latest()
        if ckpt is None:
            raise ConfigError(f"{run.path} has no checkpoint to resume from")
        check_config_matches_checkpoint(old, ckpt, run)
        for section in RESUME_FIXED:  # checked before config.yaml is rewritten
            if getattr(cfg, section) != getattr(old, section):
                raise ConfigError(
                    f"--resume cannot change {section}.* (the checkpoint's weights and features "
                    f"were made with the run's own); start a new run for other {section} settings"
                )
        if cfg.learner.loss != old.learner.loss:  # the classifier's weights come or go
            raise ConfigError(
                f"--resume cannot change learner.loss ({old.learner.loss} -> "
                f"{cfg.learner.loss}); start a new run for another loss"
            )
        if overrides:
            run.write_config(cfg)
        return cfg, run, ckpt, url
    if a.run_id is not None and not is_run_id(a.run_id):
        raise ConfigError(
            f"--run-id {a.run_id!r}: a run id is a plain name (letters, digits, '.', '_', '-'), "
            "not a path; use --runs for where runs go"
        )
    if a.init_from:
        cfg = fine_tuning_config(a.init_from, a.preset or default_preset(a.data), overrides)
    else:
        cfg = load_config(a.preset or default_preset(a.data), overrides)
    cfg, url = without_secret(cfg)
    return cfg, None, None, url  # the run folder is made once the corpus is known usable


def check_config_matches_checkpoint(cfg: RunConfig, ckpt, run: RunDir) -> None:
    """The run's ``config.yaml`` builds the network its checkpoint holds: a hand edit of the
    model or features is found here, before Ray starts (it failed inside the learner)."""
    from learner.checkpoint import CheckpointError

    try:
        made = config_from_dict(ckpt.state()["config"])
    except (CheckpointError, KeyError, ValueError) as exc:
        raise ConfigError(f"{ckpt.path}: no usable config in its state.json ({exc})") from None
    for section in RESUME_FIXED:
        mine, theirs = getattr(cfg, section), getattr(made, section)
        for key in mine.__dict__:
            if getattr(mine, key) != getattr(theirs, key):
                raise ConfigError(
                    f"{run.config_file} says {section}.{key}={getattr(mine, key)}, but "
                    f"{ckpt.path.name} was trained with {section}.{key}={getattr(theirs, key)}: "
                    "the file was edited after the run started; put the value back to resume, "
                    "or start a new run (--init-from RUN to fine-tune from it)"
                )


def fine_tuning_config(parent: str, preset: str, overrides: list[str]) -> RunConfig:
    """The config of a run that starts from ``parent``'s network: ``preset`` with the
    fine-tuning overlay and ``overrides``, its features and model the parent's. An override
    of either, to another value, is refused and named; the lineage is recorded."""
    from learner.checkpoint import CheckpointError, resolve

    try:
        ckpt = resolve(parent)
        old = config_from_dict(ckpt.state()["config"])
    except (CheckpointError, KeyError, ValueError) as exc:
        raise ConfigError(f"--init-from {parent}: not a usable checkpoint ({exc})") from None
    cfg = load_config(preset, overrides, overlay="finetune")
    for section in RESUME_FIXED:
        mine, theirs = getattr(cfg, section), getattr(old, section)
        for key in mine.__dict__:
            given = any(o.split("=", 1)[0].strip() == f"{section}.{key}" for o in overrides)
            if given and getattr(mine, key) != getattr(theirs, key):
                raise ConfigError(
                    f"--set {section}.{key}={getattr(mine, key)}: --init-from keeps the parent's "
                    f"network and features ({section}.{key}={getattr(theirs, key)} in {ckpt.path})"
                )
    return replace(
        cfg,
        features=old.features.__dict__,
        model=old.model.__dict__,
        learner={"init_from": str(ckpt.path.resolve()), "init_fingerprint": ckpt.fingerprint()},
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, ``ray stop``): stopped as for Ctrl-C, exit code 143."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def stop_on_sigterm() -> None:
    """SIGTERM raises :class:`Terminated` in the driver's main thread. Called again after
    ``ray.init``, which installs a handler of its own."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.verbose:
        os.environ[VERBOSE_ENV] = "1"
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg, run, resume, config_url = resolve_config(a)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import ray

    from learner.launch import Launch, LearnerNotStarted
    from learner.learner import ConstantFeatures
    from workers.corpus import CorpusError
    from workers.rundata import RunData
    from workers.sampler import TripletSampler
    from workers.watch import ProducersFailed

    cfg = replace(cfg, data={"snapshot": ""})  # the driver scans the corpus as it is now
    try:  # fail fast, in the driver, on a bad corpus (and generate the synthetic one once)
        data = RunData.open(cfg.data, cfg.synthetic)
        TripletSampler(data.db, data.train, cfg.sampler.triplets)  # can triplets be drawn?
        data.check_speech(cfg.features)  # is there speech at all? (a few files, cached)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if run is None:
        try:
            run = RunDir.create(a.runs, cfg, a.run_id)
        except OSError as exc:  # a read-only or full disk, a file in the way
            print(
                f"error: cannot create the run folder under {a.runs}: {exc.strerror or exc} "
                f"({exc.filename or a.runs}); give --runs a folder you can write",
                file=sys.stderr,
            )
            return 2
    if run.read_speakers() is None:  # a new run, or one from before the file
        run.write_speakers(cfg.data.path or "synthetic", list(data.train), list(data.held))
    try:  # producers and the learner load this scan instead of scanning again
        data.db.save(run.corpus_snapshot)
        cfg = replace(cfg, data={"snapshot": str(run.corpus_snapshot)})
    except OSError as exc:  # they scan, as before
        log.warning(
            "cannot write %s (%s): each producer scans the corpus", run.corpus_snapshot, exc
        )
    if cfg.learner.init_from:
        log.info(
            "fine-tuning from %s (weights %s)", cfg.learner.init_from, cfg.learner.init_fingerprint
        )
    log.info(
        "run %s: %s; %d training and %d held-out speakers",
        run.run_id,
        data.db.summary(),
        len(data.train),
        len(data.held),
    )
    # The metrics store, chosen here only: --redis, REDIS_URL, metrics.redis_url, else embedded.
    launch = Launch(cfg, run, resume, a.redis or os.environ.get("REDIS_URL") or config_url)
    code, error = 0, None
    stop_on_sigterm()
    try:
        launch.open_metrics()
        info = launch.start(a.address, a.cpus)
        stop_on_sigterm()
        code = train_loop(cfg, launch, info["step"], a.no_progress, resume is None)
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the shutdown
        why = " (SIGTERM)" if isinstance(exc, Terminated) else ""
        print(f"\ninterrupted: writing a checkpoint and shutting down{why}", file=sys.stderr)
        code = 143 if isinstance(exc, Terminated) else 130
    except UnsafeRunFolder as exc:  # a planted link in the run folder
        error, code = str(exc), 2
    except ProducersFailed as exc:  # the producers' error, not a hang
        error, code = str(exc), 2 if exc.bad_input else 1
    except LearnerNotStarted as exc:  # not placed or not built in time: said, not a hang
        error, code = str(exc), 1
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        cause = getattr(exc, "cause", None)
        error = str(cause if cause is not None else exc)
        code = 2 if isinstance(cause, ConstantFeatures) else 1  # 2: bad input
    finally:
        if error:
            print(f"error: {error}", file=sys.stderr)
        saved = launch.close(code, error)
        if saved:
            print(f"checkpoint: {saved}", file=sys.stderr)
    print(f"run directory: {run.path}", file=sys.stderr)
    return code


def time_left(step: int, total: int, start: int, elapsed: float, limit: float) -> float | None:
    """Seconds until the run ends: at ``total`` steps at the rate so far, or at its time
    budget ``limit`` (seconds, 0 for none) if that comes first; None before any step."""
    done = step - start
    if done <= 0 or elapsed <= 0:
        return None if not limit else max(0.0, limit - elapsed)
    by_steps = (total - step) * elapsed / done
    return max(0.0, min(by_steps, limit - elapsed) if limit else by_steps)


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def train_loop(cfg: RunConfig, launch: Any, start: int, quiet: bool, evaluate_first: bool) -> int:
    """Drive the learner actor in ~2 s calls to ``max_steps``, drawing progress as it goes.
    Every call waits through ``launch.call``, which watches the producers meanwhile."""
    import ray
    from tqdm import tqdm

    actor, scaler = launch.actor, launch.scaler

    first_eer = None
    if evaluate_first:
        first = launch.call(actor.evaluate.remote())
        first_eer = first.get("eer")
    total = cfg.learner.max_steps
    chunk, t_start, step, summary = 2, time.time(), start, {}
    limit = 60 * cfg.learner.max_minutes
    # tqdm's own estimate assumes max_steps is reached; with a time budget it may not be,
    # so the bar shows the steps so far and the time left by whichever ends the run first.
    fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}, {postfix}]"
    with tqdm(
        total=total, initial=start, unit="step", disable=quiet, dynamic_ncols=True, bar_format=fmt
    ) as bar:
        while step < total:
            if limit and time.time() - t_start > limit:
                log.info("learner.max_minutes reached at step %d", step)
                # the end-of-run model, as at max_steps
                summary["averaged"] = launch.call(actor.finish.remote())
                break
            t0 = time.time()
            try:
                summary = launch.call(actor.train.remote(min(chunk, total - step)))
            except ray.exceptions.RayActorError as exc:  # died, not raised: start it again
                info = launch.restart_learner(str(exc).splitlines()[0][:200])
                if info is None:
                    raise
                actor, step = launch.actor, info["step"]
                bar.reset(total)
                bar.update(step)
                continue
            if summary["step"] == step:
                break  # no progress: the stream ended
            bar.update(summary["step"] - step)
            step = summary["step"]
            took = time.time() - t0
            chunk = max(1, min(200, int(chunk * 2.0 / max(took, 1e-3))))  # ~2 s per call
            r = summary["recent"]
            post = {
                "loss": f"{r['loss']:.4f}",
                "ap-an": f"{r['cos_ap'] - r['cos_an']:.3f}",
                "wait": f"{100 * summary['wait_share']:.0f}%",
            }
            if summary.get("best_eer") is not None:
                post["EER"] = f"{100 * summary['last_eval']['eer']:.1f}%"
            post["left"] = clock(time_left(step, total, start, time.time() - t_start, limit))
            bar.set_postfix(post)
            if scaler is not None:
                scaler.observe(summary["totals"])
            if quiet:
                log.info("step %d %s", step, post)
    elapsed = time.time() - t_start
    best = summary.get("best_eer")
    line = f"trained to step {step} in {elapsed / 60:.1f} min"
    if first_eer is not None:
        line += f"; held-out EER {100 * first_eer:.1f}% at the start"
    if best is not None:
        line += f", best {100 * best:.1f}%"
    averaged = summary.get("averaged") or {}
    if averaged.get("eer") is not None:
        line += f"; averaged model {100 * averaged['eer']:.1f}%"
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
