"""What the dashboard's summary line and charts show of a run (no Redis: series filled by hand)."""

from __future__ import annotations

import json

import numpy as np

from cluster.config import load_config, replace
from dashboard.figures import (
    eer_figure,
    lineage_text,
    loss_figure,
    producers_figure,
    summary_line,
)
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


def filled(status: str, steps: int = 40, max_steps: int = 6000, cls: bool = True) -> RunSeries:
    """A run's series as the store would read them, filled by hand."""
    s = RunSeries("r")
    s.meta = {"status": status, "max_steps": str(max_steps)}
    n = steps
    columns = {
        "step": np.arange(1, n + 1, dtype=float),
        "loss": np.linspace(3.0, 1.0, n),
        "triplet_loss": np.linspace(0.2, 0.05, n),
        "cls_loss": np.linspace(2.8, 0.95, n) if cls else np.full(n, np.nan),
        "step_s": np.full(n, 0.2),
        "wait_s": np.full(n, 0.01),
        "queue_depth": np.full(n, 4.0),
    }
    for name, values in columns.items():
        s.train._append(name, values)
    s.train.n = n
    for name, values in {
        "step": [20.0, 40.0],
        "eer": [0.2, 0.1],
        "min_dcf_01": [0.9, 0.8],
        "cllr": [0.6, 0.4],
        "min_cllr": [0.5, 0.35],
    }.items():
        s.eval._append(name, np.array(values))
    s.eval.n = 2
    return s


def test_a_finished_run_shows_no_eta_and_a_running_one_does():
    running = summary_line(filled("running"))
    assert "step 40 of 6000" in running and "ETA" in running
    done = summary_line(filled("finished"))  # a time budget ended it at step 40
    assert "ETA" not in done and "step 40 (6000 planned)" in done
    assert "ETA" not in summary_line(filled("finished", steps=40, max_steps=40))


def test_each_unit_of_the_evaluation_chart_has_its_own_axis():
    fig = eer_figure(filled("finished"))
    axis_of = {t["name"]: t.get("yaxis", "y") for t in fig["data"]}
    assert axis_of["EER"] == "y" and axis_of["minDCF(0.01)"] == "y2"
    assert axis_of["Cllr"] == axis_of["minCllr"] == "y3"
    layout = fig["layout"]
    assert layout["yaxis"]["title"]["text"] == "EER (%)"
    assert layout["yaxis3"]["title"]["text"] == "Cllr (bits)"
    eer = next(t for t in fig["data"] if t["name"] == "EER")
    assert list(eer["y"]) == [20.0, 10.0]  # percent, as the axis says
    cllr = next(t for t in fig["data"] if t["name"] == "Cllr")
    assert list(cllr["y"]) == [0.6, 0.4]  # bits, not x100


def test_the_loss_chart_names_what_it_draws():
    with_cls = loss_figure(filled("running"))
    assert with_cls["layout"]["title"]["text"] == "Training loss: AAM + triplet"
    assert "triplet part (50)" in [t["name"] for t in with_cls["data"]]
    triplet_only = loss_figure(filled("running", cls=False))
    assert triplet_only["layout"]["title"]["text"] == "Triplet loss"


def test_the_queue_depth_axis_counts_whole_batches_from_zero_without_clipping():
    y2 = producers_figure(filled("running"))["layout"]["yaxis2"]
    assert y2["range"][0] == 0 and y2["range"][1] > 4.0
    assert y2["dtick"] == 1 and y2["tickformat"] == "d"
