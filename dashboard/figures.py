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

from cluster.metric_schema import shown
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
    layout = {
        **LAYOUT,
        "title": dict(text=title, x=0.01, xanchor="left"),
        "xaxis": dict(AXIS, title=dict(text=xaxis_title)),
        "yaxis": dict(AXIS, type=yaxis_type),
        **kw,  # an axis given here replaces the default one
    }
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
    """The training loss; with a classifier loss (AAM) the total is drawn, titled as such,
    with the triplet part beside it."""
    steps, loss = s.train.array("step"), s.train.array("loss")
    triplet = s.train.array("triplet_loss")
    parts = bool(len(triplet)) and bool(np.isfinite(s.train.array("cls_loss")).any())
    title = "Training loss: AAM + triplet" if parts else "Triplet loss"
    fig = new_figure(title, xaxis_title="step", yaxis_type="log" if log_scale else "linear")
    idx = minmax(loss, MAX_POINTS)
    traces = fig["data"]
    name = "total" if parts else "loss"
    traces.append(_line(steps[idx], loss[idx], name, line=dict(width=1, color="#9ecae1")))
    traces.append(
        _line(*_smoothed(s, "loss", 50), "moving average (50)", line=dict(width=2, color="#08519c"))
    )
    if parts:
        style = dict(width=2, dash="dash", color="#41ab5d")
        traces.append(_line(*_smoothed(s, "triplet_loss", 50), "triplet part (50)", line=style))
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
    """The held-out EER on its own axis (%), the detection cost on a second (a plain number)
    and the calibration's Cllr on a third (bits): one axis per unit, from the metric
    declaration (``cluster.metric_schema.shown``)."""
    eer, dcf, cllr = shown("eer"), shown("min_dcf_01"), shown("cllr")
    fig = new_figure(
        "Held-out EER, detection cost and calibration",
        xaxis_title="step",
        xaxis=dict(AXIS, title=dict(text="step"), domain=[0.0, 0.76]),
        yaxis=dict(AXIS, title=dict(text=eer.axis_title), rangemode="tozero"),
        yaxis2=dict(
            overlaying="y",
            side="right",
            anchor="x",
            rangemode="tozero",
            showgrid=False,
            title=dict(text=dcf.label),
            nticks=5,
            tickformat=".2f",
        ),
        yaxis3=dict(
            overlaying="y",
            side="right",
            anchor="free",
            position=0.93,
            rangemode="tozero",
            showgrid=False,
            title=dict(text=cllr.axis_title),
            nticks=5,
            tickformat=".2f",
        ),
    )
    x = s.eval.array("step")
    low, high = s.eval.array("eer_low"), s.eval.array("eer_high")
    if s.eval.n and np.isfinite(low).any():  # the 95% interval (bootstrap over speakers)
        band = dict(width=0, color="rgba(33,113,181,0.25)")
        fig["data"].append(_line(x, eer.scale * high, "95% interval", gl=False, line=band))
        fig["data"].append(
            _line(
                x, eer.scale * low, "95% low", gl=False, line=band, fill="tonexty", showlegend=False
            )
        )
    fig["data"].append(
        _line(x, eer.scale * s.eval.array("eer"), "EER", gl=False, mode="lines+markers")
    )
    smoothed = s.eval.array("eer_smoothed")
    if s.eval.n and np.isfinite(smoothed).any():
        style = dict(dash="dash", color="#08519c")
        fig["data"].append(
            _line(x, eer.scale * smoothed, "smoothed (picks best)", gl=False, line=style)
        )
    if s.eval.n:
        y = dcf.scale * s.eval.array("min_dcf_01")
        fig["data"].append(_line(x, y, dcf.label, gl=False, line=dict(dash="dot"), yaxis="y2"))
        calibrated = s.eval.array("cllr")
        if np.isfinite(calibrated).any():  # the calibration: what it costs over its minimum
            style = dict(dash="dashdot", color="#e6550d")
            fig["data"].append(
                _line(
                    x,
                    cllr.scale * calibrated,
                    cllr.label,
                    gl=False,
                    mode="lines+markers",
                    line=style,
                    yaxis="y3",
                )
            )
            style = dict(dash="dot", color="#fdae6b")
            y = cllr.scale * s.eval.array("min_cllr")
            fig["data"].append(
                _line(x, y, shown("min_cllr").label, gl=False, line=style, yaxis="y3")
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
    """Each producer's throughput against the batches it built; the learner's queue depth, a
    whole number of batches, on its own axis against the learner's steps."""
    depth = s.train.array("queue_depth")
    top = float(np.nanmax(depth)) if len(depth) and np.isfinite(depth).any() else 1.0
    fig = new_figure(
        "Producer throughput (batches/s) and queue depth",
        xaxis_title="batches built",
        yaxis=dict(AXIS, title=dict(text=shown("batches_per_s", "producers").label)),
        xaxis2=dict(overlaying="x", side="top", showgrid=False, tickformat="d"),
        yaxis2=dict(
            overlaying="y",
            side="right",
            showgrid=False,
            title=dict(text=shown("queue_depth", "train").label),
            range=[0, max(1.0, top) * 1.15],  # whole batches: from 0, never clipped at the top
            tickmode="linear" if top <= 10 else "auto",
            dtick=1 if top <= 10 else None,
            tickformat="d",
        ),
    )
    workers = s.producers.array("worker")
    built, rate = s.producers.array("built"), s.producers.array("batches_per_s")
    for w in np.unique(workers[~np.isnan(workers)]) if len(workers) else []:
        sel = np.nonzero(workers == w)[0]
        sel = sel[downsample(len(sel), MAX_POINTS // 4)]
        fig["data"].append(_line(built[sel], rate[sel], f"producer {int(w)}"))
    if len(depth) and not np.all(np.isnan(depth)):
        steps = s.train.array("step")
        idx = downsample(len(depth), MAX_POINTS)
        style = dict(yaxis="y2", xaxis="x2", line=dict(color="#969696"))
        name = "queue depth (by learner step, top axis)"
        fig["data"].append(_line(steps[idx], depth[idx], name, **style))
    return fig


def summary_line(s: RunSeries) -> str:
    n = s.steps()
    if n == 0:
        return f"Run {s.run_id}: no training steps yet (status: {s.meta.get('status', '?')})."
    steps = s.train.array("step")
    step = int(steps[-1])
    rate = steps_per_second(s)
    max_steps = float(s.meta.get("max_steps", "nan") or "nan")
    status = s.meta.get("status", "?")
    planned = f" of {int(max_steps)}" if math.isfinite(max_steps) else ""
    eta = ""  # only while the run trains: a finished or stopped run has nothing left to wait for
    if status == "running" and rate > 0 and math.isfinite(max_steps) and max_steps > step:
        eta = f" · ETA {format_seconds((max_steps - step) / rate)}"
    elif status != "running" and planned:  # e.g. a time budget ended it before max_steps
        planned = f" ({int(max_steps)} planned)" if max_steps > step else ""
    eer = s.eval.array("eer")
    best = f" · best EER {100 * np.nanmin(eer):.2f}%" if len(eer) else ""
    return (
        f"Run {s.run_id} ({status}) · step {step}{planned} · "
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
