"""Train speaker embeddings: start Ray, the producers and the learner, show progress.

With no arguments: the ``demo`` preset on the embedded synthetic corpus, a local
Ray instance and an embedded Redis, about ten minutes on a 2-core CPU.

Examples:
    python -m learner                                     # the demo
    python -m learner --data ~/LibriSpeech/train-clean-100 --preset base
    python -m learner --set learner.lr=3e-4 --set sampler.frames=200
    python -m learner --resume runs/20261124-073721-3f9a  # continue exactly
    python -m learner --address auto --data /shared/vox1  # on a Ray cluster (ray up)

Ctrl-C writes a checkpoint and shuts everything down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from cluster.config import ConfigError, apply_overrides, load_config
from cluster.runs import RunDir

log = logging.getLogger("learner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m learner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="demo", help="demo | smoke | base, or a YAML file")
    p.add_argument("--data", help="corpus root (default: the embedded synthetic corpus)")
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
    p.add_argument("--runs", default="runs", help="where run directories are created")
    p.add_argument("--run-id", help="name of the new run directory (default: time-based)")
    p.add_argument("--producers", type=int, help="producer actors (default: one per spare CPU)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], help="where the learner runs")
    p.add_argument("--address", help="Ray address; 'auto' joins the cluster of this machine")
    p.add_argument("--cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--redis", help="Redis URL for metrics (default: REDIS_URL or embedded)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a bar")
    return p.parse_args(argv)


def resolve_config(a: argparse.Namespace):
    """(config, run directory, checkpoint to resume or None)."""
    overrides = list(a.set)
    if a.data:
        overrides.append(f"data.path={a.data}")
    if a.steps:
        overrides.append(f"learner.max_steps={a.steps}")
    if a.device:
        overrides.append(f"learner.device={a.device}")
    if a.producers is not None:
        overrides.append(f"producer.count={a.producers}")
    if a.resume:
        from learner.checkpoint import CheckpointManager

        run = RunDir.open(a.resume)
        cfg = run.read_config()
        if overrides:
            cfg = apply_overrides(cfg, overrides)
            run.write_config(cfg)
        ckpt = CheckpointManager(run.checkpoints).latest()
        if ckpt is None:
            raise ConfigError(f"{run.path} has no checkpoint to resume from")
        return cfg, run, ckpt
    cfg = load_config(a.preset, overrides)
    return cfg, RunDir.create(a.runs, cfg, a.run_id), None


def learner_options(cfg, ray) -> dict[str, Any]:
    """Ray resources for the learner: a GPU when asked or available, the `learner` node."""
    res = ray.cluster_resources()
    opts: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0}
    want_gpu = cfg.learner.device == "gpu" or (cfg.learner.device == "auto" and res.get("GPU"))
    if want_gpu:
        opts["num_gpus"] = 1
    if res.get("learner"):
        opts["resources"] = {"learner": 1}
    return opts


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg, run, resume = resolve_config(a)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import ray

    from cluster.metrics import MetricsWriter
    from cluster.queue import create_queue, create_registry
    from cluster.ray_session import init_ray, spare_cpus
    from learner.actor import LearnerActor
    from workers.corpus import CorpusError
    from workers.pool import start_producers, stop_producers
    from workers.producer import open_database

    try:  # fail fast, in the driver, on a bad corpus (and generate the synthetic one once)
        db, train, held = open_database(cfg)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "run %s: %s; %d training and %d held-out speakers",
        run.run_id,
        db.summary(),
        len(train),
        len(held),
    )

    url, embedded = metrics_store(a, cfg, run)
    writer = MetricsWriter(url, run.run_id, "driver")
    writer.meta(
        config=json.dumps(cfg.to_dict()),
        started_at=time.time(),
        status="starting",
        preset=cfg.preset,
        data=cfg.data.path or "synthetic",
        max_steps=cfg.learner.max_steps,
        run_dir=str(run.path),
    )
    writer.event("start", {"resume": str(resume.path) if resume else None})

    init_ray(a.address, num_cpus=a.cpus, quiet=False)
    states = {}
    if resume is not None:
        states = resume.state().get("sampler_states") or {}
    registry = create_registry(run.run_id, cfg.to_dict(), str(run.path), states, url)
    queue = create_queue(run.run_id, cfg.producer.queue_size)
    count = cfg.producer.count or spare_cpus(reserved=1)
    # The learner first: it holds its node (GPU, `learner` resource) before producers
    # could take that node's CPUs.
    actor = (
        ray.remote(LearnerActor)
        .options(**learner_options(cfg, ray))
        .remote(
            cfg.to_dict(),
            str(run.path),
            run.run_id,
            cfg.learner.device,
            str(resume.path) if resume else None,
            url,
        )
    )
    code = 0
    try:
        info = ray.get(actor.info.remote())  # placed and built: now producers may fill the rest
        start_producers(cfg, run.run_id, count, registry=registry)
        log.info(
            "learner: %s, %d parameters, %d producer(s)", info["device"], info["params"], count
        )
        writer.meta(status="running", device=info["device"], params=info["params"], producers=count)
        scaler = Autoscaler(cfg, run.run_id, count, registry, writer)
        code = train_loop(cfg, actor, info["step"], a.no_progress, resume is None, scaler)
    except KeyboardInterrupt:
        print("\ninterrupted: writing a checkpoint and shutting down", file=sys.stderr)
        code = 130
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        print(f"error: {exc.cause if hasattr(exc, 'cause') else exc}", file=sys.stderr)
        code = 1
    finally:
        if code != 1:
            saved = _final_save(actor, ray)
            if saved:
                print(f"checkpoint: {saved}", file=sys.stderr)
        stop_producers(run.run_id, timeout=5)
        del queue, registry
        ray.shutdown()
        status = {0: "finished", 130: "interrupted"}.get(code, "failed")
        writer.event("stop", {"status": status})
        writer.meta(status=status, ended_at=time.time())
        writer.close()
        if embedded is not None:
            embedded.stop()
    print(f"run directory: {run.path}", file=sys.stderr)
    return code


def metrics_store(a: argparse.Namespace, cfg, run: RunDir):
    """(Redis URL, embedded server or None): --redis, REDIS_URL, config, else embedded."""
    url = a.redis or os.environ.get("REDIS_URL") or cfg.metrics.redis_url
    if url:
        return url, None
    from cluster.redis_server import EmbeddedRedis

    server = EmbeddedRedis(run.redis_dir)
    return server.ensure(), server


def _final_save(actor, ray) -> str | None:
    try:
        return ray.get(actor.save.remote("exit"), timeout=120)
    except Exception as exc:  # noqa: BLE001 - report, the periodic checkpoints remain
        print(f"warning: could not write the exit checkpoint: {exc}", file=sys.stderr)
        return None


class Autoscaler:
    """Asks for more producers when the learner waits for data too much of its time.

    After ``patience`` consecutive progress intervals in which the learner spent more
    than ``producer.autoscale_wait_share`` of its time waiting, it asks Ray's autoscaler
    for one more producer's CPUs (``request_resources``; an autoscaling cluster adds a
    node), starts one more producer if the cluster has room, and says so in the log and
    the metrics (event ``scale``).
    """

    def __init__(self, cfg, run_id: str, count: int, registry, writer, patience: int = 3) -> None:
        self.cfg, self.run_id, self.count = cfg, run_id, count
        self.registry, self.writer, self.patience = registry, writer, patience
        self.high = 0
        self.last = (0.0, 0.0)

    def observe(self, totals: dict[str, float]) -> bool:
        """Feed the learner's cumulative wait/step seconds; True when it scaled up."""
        threshold = self.cfg.producer.autoscale_wait_share
        wait, step = totals["wait"] - self.last[0], totals["step"] - self.last[1]
        self.last = (totals["wait"], totals["step"])
        if threshold <= 0 or wait + step <= 0:
            return False
        share = wait / (wait + step)
        self.high = self.high + 1 if share > threshold else 0
        if self.high < self.patience or self.count >= self.cfg.producer.max_count:
            return False
        self.high = 0
        return self.scale_up(share)

    def scale_up(self, share: float) -> bool:
        import ray
        from ray.autoscaler.sdk import request_resources

        from workers.pool import start_producers

        want = self.count + 1
        cpus = self.cfg.producer.num_cpus
        try:  # on a cluster without an autoscaler this only records the request
            request_resources(bundles=[{"CPU": cpus}] * want)
        except Exception as exc:  # noqa: BLE001 - scaling is best effort
            log.info("autoscaler request failed: %s", exc)
        room = ray.available_resources().get("CPU", 0) >= cpus
        if room:
            start_producers(self.cfg, self.run_id, 1, registry=self.registry)
            self.count = want
        log.warning(
            "the learner waited for data %.0f%% of its time: asked Ray for CPUs for %d producers%s",
            100 * share,
            want,
            "; started one more" if room else " (no free CPU yet)",
        )
        self.writer.event(
            "scale",
            {
                "wait_share": share,
                "requested_producers": want,
                "started": room,
                "producers": self.count,
            },
        )
        return room


def train_loop(
    cfg, actor, start: int, quiet: bool, evaluate_first: bool, scaler: Autoscaler | None = None
) -> int:
    import ray
    from tqdm import tqdm

    first_eer = None
    if evaluate_first:
        first = ray.get(actor.evaluate.remote())
        first_eer = first.get("eer")
    total = cfg.learner.max_steps
    chunk, t_start, step, summary = 2, time.time(), start, {}
    with tqdm(total=total, initial=start, unit="step", disable=quiet, dynamic_ncols=True) as bar:
        while step < total:
            t0 = time.time()
            summary = ray.get(actor.train.remote(min(chunk, total - step)))
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
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
