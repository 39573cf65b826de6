"""What the dashboard's summary line says of a run (no Redis: a series filled by hand)."""

from __future__ import annotations

import json

from cluster.config import load_config, replace
from dashboard.figures import lineage_text
from dashboard.store import RunSeries


def test_a_fine_tuned_run_names_its_parent_and_a_run_from_scratch_does_not():
    s = RunSeries("ft")
    cfg = load_config("smoke")
    s.meta = {"config": json.dumps(cfg.to_dict())}
    assert lineage_text(s) == ""
    tuned = replace(
        cfg,
        learner={"init_from": "/r/runs/base/checkpoints/ckpt-00001000", "init_fingerprint": "4d59"},
    )
    s.meta = {"config": json.dumps(tuned.to_dict())}
    assert lineage_text(s) == " · fine-tuned from base/checkpoints/ckpt-00001000 (weights 4d59)"
    s.meta = {"config": "not json"}
    assert lineage_text(s) == ""
