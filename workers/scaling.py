"""The producer pool's scaling policy: more producers while the learner waits for data.

scaler = Autoscaler(cfg, run_id, count=2, registry=registry, writer=metrics)
scaler.observe(learner_summary["totals"])    # after each progress interval
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.autoscaler.sdk import request_resources

from cluster.config import RunConfig
from cluster.metric_schema import wait_share
from cluster.metrics import EVENT_SCALE
from workers.pool import start_producers

log = logging.getLogger(__name__)


class Autoscaler:
    """Asks for more producers when the learner waits for data too much of its time.

    After ``patience`` consecutive progress intervals in which the learner spent more
    than ``producer.autoscale_wait_share`` of its time waiting, it asks Ray's autoscaler
    for one more producer's CPUs (``request_resources``; an autoscaling cluster adds a
    node), starts one more producer if the cluster has room, and says so in the log and
    the metrics (event ``scale``).
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_id: str,
        count: int,
        registry: Any,
        writer: Any,
        patience: int = 3,
        watch: Any = None,
    ) -> None:
        self.cfg, self.run_id, self.count = cfg, run_id, count
        self.watch = watch  # producers started here are watched like the first ones
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
        share = wait_share(wait, step)
        self.high = self.high + 1 if share > threshold else 0
        if self.high < self.patience or self.count >= self.cfg.producer.max_count:
            return False
        self.high = 0
        return self.scale_up(share)

    def scale_up(self, share: float) -> bool:
        want = self.count + 1
        cpus = self.cfg.producer.num_cpus
        try:  # on a cluster without an autoscaler this only records the request
            request_resources(bundles=[{"CPU": cpus}] * want)
        except Exception as exc:  # noqa: BLE001 - scaling is best effort
            log.info("autoscaler request failed: %s", exc)
        room = ray.available_resources().get("CPU", 0) >= cpus
        if room:
            start_producers(self.cfg, self.run_id, 1, registry=self.registry, watch=self.watch)
            self.count = want
        log.warning(
            "the learner waited for data %.0f%% of its time: asked Ray for CPUs for %d producers%s",
            100 * share,
            want,
            "; started one more" if room else " (no free CPU yet)",
        )
        self.writer.event(
            EVENT_SCALE,
            {
                "wait_share": share,
                "requested_producers": want,
                "started": room,
                "producers": self.count,
            },
        )
        return room
