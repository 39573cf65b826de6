"""Plotly figures from a RunSeries: pure functions, downsampled for drawing.

Figures are plain dicts (what plotly.js reads), not ``plotly.graph_objects``: building
and validating graph objects cost ~70 ms per figure, more than reading the data.
"""

from __future__ import annotations

import math
import time

import numpy as np

from dashboard.store import RunSeries, downsample, minmax, moving_average

MAX_POINTS = 2000
AXIS = dict(gridcolor="#e5e5e5", zeroline=False)
LAYOUT = dict(
    margin=dict(l=50, r=20, t=40, b=40),
    height=300,
    plot_bgcolor="white",
    legend=dict(orientation="h", y=-0.25),
    uirevision="keep",
)


class Fig(dict):
    """A plotly figure as a dict, with the one method the code below needs."""

    def add_trace(self, trace: dict) -> None:
        self["data"].append(trace)


def _fig(title: str, xaxis_title: str = "", yaxis_type: str = "linear", **kw) -> Fig:
    layout = dict(
        LAYOUT,
        title=dict(text=title, x=0.01, xanchor="left"),
        xaxis=dict(AXIS, title=dict(text=xaxis_title)),
        yaxis=dict(AXIS, type=yaxis_type),
        **kw,
    )
    return Fig(data=[], layout=layout)


def _trace(kind: str, x, y, **kw) -> dict:
    return dict(type=kind, x=np.asarray(x), y=np.asarray(y), **kw)


class go:  # noqa: N801 - keeps the figure code below reading like plotly's own API
    @staticmethod
    def Scattergl(x, y, **kw) -> dict:  # noqa: N802
        return _trace("scattergl", x, y, **kw)

    @staticmethod
    def Scatter(x, y, **kw) -> dict:  # noqa: N802
        return _trace("scatter", x, y, **kw)


def loss_figure(s: RunSeries, log_scale: bool = False) -> Fig:
    steps, loss = s.train.array("step"), s.train.array("loss")
    fig = _fig("Triplet loss", xaxis_title="step", yaxis_type="log" if log_scale else "linear")
    idx = minmax(loss, MAX_POINTS)
    fig.add_trace(
        go.Scattergl(
            x=steps[idx],
            y=loss[idx],
            mode="lines",
            name="loss",
            line=dict(width=1, color="#9ecae1"),
        )
    )
    avg = moving_average(loss)
    sm = downsample(len(avg), MAX_POINTS)
    fig.add_trace(
        go.Scattergl(
            x=steps[sm],
            y=avg[sm],
            mode="lines",
            name="moving average (50)",
            line=dict(width=2, color="#08519c"),
        )
    )
    ckpts = [c for c in s.checkpoints() if len(steps) and c <= steps[-1]]
    if ckpts:
        at = np.searchsorted(steps, ckpts).clip(0, len(steps) - 1)
        fig.add_trace(
            go.Scatter(
                x=ckpts,
                y=avg[at],
                mode="markers",
                name="checkpoint",
                marker=dict(symbol="diamond", size=9, color="#d94801"),
            )
        )
    return fig


def similarity_figure(s: RunSeries, margin: float) -> Fig:
    steps = s.train.array("step")
    fig = _fig("Cosine similarity: anchor-positive vs anchor-negative", xaxis_title="step")
    for name, color in (("cos_ap", "#238b45"), ("cos_an", "#cb181d")):
        y = moving_average(s.train.array(name), 20)
        idx = downsample(len(y), MAX_POINTS)
        fig.add_trace(
            go.Scattergl(x=steps[idx], y=y[idx], mode="lines", name=name, line=dict(color=color))
        )
    ap = moving_average(s.train.array("cos_ap"), 20)
    idx = downsample(len(ap), MAX_POINTS)
    fig.add_trace(
        go.Scattergl(
            x=steps[idx],
            y=ap[idx] - margin,
            mode="lines",
            name=f"cos_ap - margin ({margin})",
            line=dict(dash="dot", color="#74c476"),
        )
    )
    return fig


def eer_figure(s: RunSeries) -> Fig:
    fig = _fig("Held-out EER (%)", xaxis_title="step")
    fig.add_trace(
        go.Scatter(
            x=s.eval.array("step"), y=100 * s.eval.array("eer"), mode="lines+markers", name="EER"
        )
    )
    if s.eval.n:
        fig.add_trace(
            go.Scatter(
                x=s.eval.array("step"),
                y=100 * s.eval.array("min_dcf_01"),
                mode="lines",
                name="minDCF(0.01) x100",
                line=dict(dash="dot"),
            )
        )
    return fig


def timing_figure(s: RunSeries) -> Fig:
    """Per step: waiting for data and training, stacked; the producers' build time beside."""
    steps = s.train.array("step")
    fig = _fig("Time per step (ms)", xaxis_title="step")
    idx = downsample(len(steps), MAX_POINTS)
    for name, label, color in (
        ("wait_s", "waiting for data", "#fd8d3c"),
        ("step_s", "training", "#6baed6"),
    ):
        y = 1000 * moving_average(s.train.array(name), 20)
        fig.add_trace(
            go.Scatter(
                x=steps[idx],
                y=y[idx],
                mode="lines",
                name=label,
                stackgroup="time",
                line=dict(color=color),
            )
        )
    build = 1000 * moving_average(s.train.array("build_s"), 20)
    fig.add_trace(
        go.Scattergl(
            x=steps[idx],
            y=build[idx],
            mode="lines",
            name="producer build time",
            line=dict(dash="dash", color="#54278f"),
        )
    )
    return fig


def producers_figure(s: RunSeries) -> Fig:
    fig = _fig(
        "Producer throughput (batches/s) and queue depth",
        xaxis_title="batches built",
        yaxis2=dict(overlaying="y", side="right", title=dict(text="queue depth")),
    )
    workers = s.producers.array("worker")
    built, rate = s.producers.array("built"), s.producers.array("batches_per_s")
    for w in np.unique(workers[~np.isnan(workers)]) if len(workers) else []:
        sel = np.nonzero(workers == w)[0]
        sel = sel[downsample(len(sel), MAX_POINTS // 4)]
        fig.add_trace(
            go.Scattergl(x=built[sel], y=rate[sel], mode="lines", name=f"producer {int(w)}")
        )
    depth = s.train.array("queue_depth")
    if len(depth) and not np.all(np.isnan(depth)):
        steps = s.train.array("step")
        idx = downsample(len(depth), MAX_POINTS)
        fig.add_trace(
            go.Scattergl(
                x=steps[idx],
                y=depth[idx],
                mode="lines",
                name="queue depth",
                yaxis="y2",
                xaxis="x",
                line=dict(color="#969696"),
            )
        )
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
        f"{rate:.2f} steps/s{eta}{best} · {n} points"
    )


def steps_per_second(s: RunSeries, window: int = 50) -> float:
    st = s.train.array("step_s")[-window:]
    wt = s.train.array("wait_s")[-window:]
    per = np.nanmean(st + wt) if len(st) else float("nan")
    return 1.0 / per if per and math.isfinite(per) and per > 0 else 0.0


def format_seconds(sec: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(sec)) if sec < 86400 else f"{sec / 86400:.1f} d"
