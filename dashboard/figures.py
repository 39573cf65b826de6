"""Plotly figures from a RunSeries: pure functions, downsampled for drawing.

Figures are plain dicts (what plotly.js reads), not ``plotly.graph_objects``: building
and validating graph objects cost ~70 ms per figure, more than reading the data.

    s = board.refresh(run_id)                       # a RunSeries
    summary_line(s), loss_figure(s, log_scale=False), eer_figure(s)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from dashboard.series import downsample, minmax, moving_average
from dashboard.store import RunSeries

MAX_POINTS = 2000
AXIS = dict(gridcolor="#e5e5e5", zeroline=False)
LAYOUT = dict(
    margin=dict(l=50, r=20, t=40, b=40),
    height=300,
    plot_bgcolor="white",
    legend=dict(orientation="h", y=-0.25),
    uirevision="keep",
)


def new_figure(title: str, xaxis_title: str = "", yaxis_type: str = "linear", **kw) -> dict:
    """An empty plotly figure (a plain dict) with the house layout."""
    layout = dict(
        LAYOUT,
        title=dict(text=title, x=0.01, xanchor="left"),
        xaxis=dict(AXIS, title=dict(text=xaxis_title)),
        yaxis=dict(AXIS, type=yaxis_type),
        **kw,
    )
    return dict(data=[], layout=layout)


def _line(x, y, name: str, gl: bool = True, mode: str = "lines", **style) -> dict:
    """One trace; WebGL (``scattergl``) unless the trace needs SVG (stacking, markers)."""
    kind = "scattergl" if gl else "scatter"
    return dict(type=kind, x=np.asarray(x), y=np.asarray(y), mode=mode, name=name, **style)


def _smoothed(s: RunSeries, field: str, window: int, scale: float = 1.0):
    """``(steps, moving average of field)`` downsampled for drawing."""
    steps = s.train.array("step")
    y = scale * moving_average(s.train.array(field), window)
    idx = downsample(len(y), MAX_POINTS)
    return steps[idx], y[idx]


def loss_figure(s: RunSeries, log_scale: bool = False) -> dict:
    steps, loss = s.train.array("step"), s.train.array("loss")
    fig = new_figure(
        "Triplet loss", xaxis_title="step", yaxis_type="log" if log_scale else "linear"
    )
    idx = minmax(loss, MAX_POINTS)
    traces = fig["data"]
    traces.append(_line(steps[idx], loss[idx], "loss", line=dict(width=1, color="#9ecae1")))
    traces.append(
        _line(*_smoothed(s, "loss", 50), "moving average (50)", line=dict(width=2, color="#08519c"))
    )
    ckpts = [c for c in s.checkpoints() if len(steps) and c <= steps[-1]]
    if ckpts:
        at = np.searchsorted(steps, ckpts).clip(0, len(steps) - 1)
        marker = dict(symbol="diamond", size=9, color="#d94801")
        avg = moving_average(loss)
        traces.append(_line(ckpts, avg[at], "checkpoint", gl=False, mode="markers", marker=marker))
    return fig


def similarity_figure(s: RunSeries, margin: float) -> dict:
    fig = new_figure("Cosine similarity: anchor-positive vs anchor-negative", xaxis_title="step")
    for name, color in (("cos_ap", "#238b45"), ("cos_an", "#cb181d")):
        fig["data"].append(_line(*_smoothed(s, name, 20), name, line=dict(color=color)))
    x, ap = _smoothed(s, "cos_ap", 20)
    style = dict(dash="dot", color="#74c476")
    fig["data"].append(_line(x, ap - margin, f"cos_ap - margin ({margin})", line=style))
    return fig


def eer_figure(s: RunSeries) -> dict:
    fig = new_figure("Held-out EER (%)", xaxis_title="step")
    x = s.eval.array("step")
    low, high = s.eval.array("eer_low"), s.eval.array("eer_high")
    if s.eval.n and np.isfinite(low).any():  # the 95% interval (bootstrap over speakers)
        band = dict(width=0, color="rgba(33,113,181,0.25)")
        fig["data"].append(_line(x, 100 * high, "95% interval", gl=False, line=band))
        fig["data"].append(
            _line(x, 100 * low, "95% low", gl=False, line=band, fill="tonexty", showlegend=False)
        )
    fig["data"].append(_line(x, 100 * s.eval.array("eer"), "EER", gl=False, mode="lines+markers"))
    smoothed = s.eval.array("eer_smoothed")
    if s.eval.n and np.isfinite(smoothed).any():
        style = dict(dash="dash", color="#08519c")
        fig["data"].append(_line(x, 100 * smoothed, "smoothed (picks best)", gl=False, line=style))
    if s.eval.n:
        dcf = 100 * s.eval.array("min_dcf_01")
        fig["data"].append(_line(x, dcf, "minDCF(0.01) x100", gl=False, line=dict(dash="dot")))
        calibrated = s.eval.array("cllr")
        if np.isfinite(calibrated).any():  # the calibration: what it costs over its minimum
            style = dict(dash="dashdot", color="#e6550d")
            fig["data"].append(
                _line(x, 100 * calibrated, "Cllr x100", gl=False, mode="lines+markers", line=style)
            )
            style = dict(dash="dot", color="#fdae6b")
            fig["data"].append(
                _line(x, 100 * s.eval.array("min_cllr"), "minCllr x100", gl=False, line=style)
            )
    return fig


def calibration_text(s: RunSeries) -> str:
    """The latest calibrated evaluation's calibration, in words ('' before any). The
    learner calibrates at each new best evaluation."""
    cal = s.eval.array("cllr")
    have = np.flatnonzero(np.isfinite(cal)) if len(cal) else []
    if not len(have):
        return ""
    last = int(have[-1])

    def at(name: str) -> float:
        return float(s.eval.array(name)[last])

    text = (
        f" · calibration at step {int(at('step'))}: Cllr {at('cllr'):.3f} (min "
        f"{at('min_cllr'):.3f}), actDCF(0.01) {at('act_dcf_01'):.3f}"
    )
    if np.isfinite(at("fa_at_threshold")):
        text += (
            f", at its EER threshold {100 * at('fa_at_threshold'):.1f}% false accepts and "
            f"{100 * at('miss_at_threshold'):.1f}% misses with 1-2 s inputs mixed in"
        )
    return text


def timing_figure(s: RunSeries) -> dict:
    """Per step: waiting for data and training, stacked; the producers' build time beside."""
    fig = new_figure("Time per step (ms)", xaxis_title="step")
    for name, label, color in (
        ("wait_s", "waiting for data", "#fd8d3c"),
        ("step_s", "training", "#6baed6"),
    ):
        x, y = _smoothed(s, name, 20, scale=1000)
        fig["data"].append(_line(x, y, label, gl=False, stackgroup="time", line=dict(color=color)))
    x, build = _smoothed(s, "build_s", 20, scale=1000)
    style = dict(dash="dash", color="#54278f")
    fig["data"].append(_line(x, build, "producer build time", line=style))
    return fig


def producers_figure(s: RunSeries) -> dict:
    fig = new_figure(
        "Producer throughput (batches/s) and queue depth",
        xaxis_title="batches built",
        yaxis2=dict(overlaying="y", side="right", title=dict(text="queue depth")),
    )
    workers = s.producers.array("worker")
    built, rate = s.producers.array("built"), s.producers.array("batches_per_s")
    for w in np.unique(workers[~np.isnan(workers)]) if len(workers) else []:
        sel = np.nonzero(workers == w)[0]
        sel = sel[downsample(len(sel), MAX_POINTS // 4)]
        fig["data"].append(_line(built[sel], rate[sel], f"producer {int(w)}"))
    depth = s.train.array("queue_depth")
    if len(depth) and not np.all(np.isnan(depth)):
        steps = s.train.array("step")
        idx = downsample(len(depth), MAX_POINTS)
        style = dict(yaxis="y2", xaxis="x", line=dict(color="#969696"))
        fig["data"].append(_line(steps[idx], depth[idx], "queue depth", **style))
    return fig


def summary_line(s: RunSeries) -> str:
    n = s.steps()
    if n == 0:
        return f"Run {s.run_id}: no training steps yet (status: {s.meta.get('status', '?')})."
    steps = s.train.array("step")
    step = int(steps[-1])
    rate = steps_per_second(s)
    max_steps = float(s.meta.get("max_steps", "nan") or "nan")
    eta = ""
    if rate > 0 and math.isfinite(max_steps) and max_steps > step:
        eta = f" · ETA {format_seconds((max_steps - step) / rate)}"
    eer = s.eval.array("eer")
    best = f" · best EER {100 * np.nanmin(eer):.2f}%" if len(eer) else ""
    status = s.meta.get("status", "?")
    return (
        f"Run {s.run_id} ({status}) · step {step}"
        f"{f' of {int(max_steps)}' if math.isfinite(max_steps) else ''} · "
        f"{rate:.2f} steps/s{eta}{best} · {n} points{calibration_text(s)}{lineage_text(s)}"
    )


def lineage_text(s: RunSeries) -> str:
    """`` · fine-tuned from <parent> (weights <fingerprint>)`` for a run started with
    ``--init-from``; empty for a run from scratch (or a config that cannot be read)."""
    try:
        learner = json.loads(s.meta.get("config", "{}")).get("learner", {})
    except (ValueError, AttributeError):
        return ""
    parent = learner.get("init_from") if isinstance(learner, dict) else None
    if not parent:
        return ""
    where = "/".join(Path(str(parent)).parts[-3:])
    return f" · fine-tuned from {where} (weights {learner.get('init_fingerprint') or '?'})"


def steps_per_second(s: RunSeries, window: int = 50) -> float:
    st = s.train.array("step_s")[-window:]
    wt = s.train.array("wait_s")[-window:]
    per = np.nanmean(st + wt) if len(st) else float("nan")
    return 1.0 / per if per and math.isfinite(per) and per > 0 else 0.0


def format_seconds(sec: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(sec)) if sec < 86400 else f"{sec / 86400:.1f} d"
