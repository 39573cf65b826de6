"""The Dash app: a run selector, six live charts and a summary line, refreshed every 2 s.

board = Dashboard(RunsDirSource("runs"))        # or UrlSource(REDIS_URL)
build_app(board, refresh_ms=2000).run(host="127.0.0.1", port=8050)
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from dashboard import figures as F
from dashboard.store import RunSeries, StoreUnavailable

log = logging.getLogger(__name__)
REFRESH_MS = 2000
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def allowed_hosts(bound: str = "127.0.0.1", extra: tuple[str, ...] = ()) -> frozenset[str]:
    """The names a request's ``Host:`` may carry: loopback, the address the server is bound
    to, and ``extra`` (``--allow-host``); bound to every address, also this machine's names.
    Anything else is refused, so a site whose name is rebound to 127.0.0.1 (DNS rebinding)
    cannot read the dashboard from a browser."""
    names = set(LOOPBACK_NAMES) | {n.lower().strip("[]") for n in extra}
    if bound in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        names.add(bound.lower().strip("[]"))
    return frozenset(names)


def host_name(header: str) -> str:
    """``Host:`` without its port: ``[::1]:8050`` -> ``::1``, ``Localhost:80`` -> ``localhost``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Dashboard:
    """Holds the source and the series read so far; ``app`` is the Dash application."""

    def __init__(
        self, source, refresh_ms: int = REFRESH_MS, allowed_hosts: frozenset[str] | None = None
    ) -> None:
        self.source = source
        self.series: dict[str, RunSeries] = {}
        self.lock = threading.Lock()
        self.app = build_app(self, refresh_ms)
        self.allowed_hosts = allowed_hosts or LOOPBACK_NAMES
        self.app.server.before_request(self._check_host)

    def _check_host(self):
        from flask import request

        name = host_name(request.host or "")
        if name in self.allowed_hosts:
            return None
        return (
            f"This dashboard is not served under the name {name!r}: open it by its address "
            "(http://127.0.0.1:PORT), or start it with --allow-host NAME.\n",
            403,
            {"Content-Type": "text/plain; charset=utf-8"},
        )

    def run_options(self) -> tuple[list[dict] | None, str]:
        """Dropdown options (newest first) and a message ('' when fine); options are None
        when the store cannot be read, so the page keeps the selection it has."""
        try:
            runs = self.source.runs()
        except StoreUnavailable as exc:
            return None, f"{exc}. Is the server running? (--redis URL or REDIS_URL)"
        if not runs:
            return [], f"No runs yet in {self.source.describe()}. Start one with: python -m learner"
        return [
            {"label": f"{r['id']} · {r.get('status', '?')}", "value": r["id"]} for r in runs
        ], ""

    def refresh(self, run_id: str) -> RunSeries:
        with self.lock:  # Dash may call back concurrently; reads of one run are serial
            client = self.source.client_for(run_id)  # refuses ids that are not runs
            series = self.series.setdefault(run_id, RunSeries(run_id))
            try:
                series.refresh(client)
            except StoreUnavailable:
                self.source.forget(run_id)  # a stored run's server is started again next time
                raise
            return series


def build_app(board: Dashboard, refresh_ms: int) -> Dash:
    app = Dash(__name__, title="voice-embeddings", update_title=None)
    graph = dict(config={"displaylogo": False}, style={"height": "300px"})
    app.layout = html.Div(
        style={"fontFamily": "system-ui, sans-serif", "margin": "12px"},
        children=[
            html.Div(
                style={"display": "flex", "gap": "16px", "alignItems": "center"},
                children=[
                    html.H3("voice-embeddings", style={"margin": "0"}),
                    dcc.Dropdown(
                        id="run",
                        placeholder="select a run",
                        style={"width": "420px"},
                        clearable=False,
                    ),
                    dcc.Checklist(
                        id="log-scale",
                        options=[{"label": " log-scale loss", "value": "log"}],
                        value=[],
                    ),
                ],
            ),
            # Two message lines, one per callback: if both callbacks wrote one element, whichever
            # response arrived last would win and could blank the other's message.
            html.Div(id="message", style={"color": "#b30000", "margin": "8px 0"}),
            html.Div(id="run-message", style={"color": "#b30000", "margin": "8px 0"}),
            html.Div(id="summary", style={"fontWeight": "600", "margin": "8px 0"}),
            html.Div(
                style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": "8px"},
                children=[
                    dcc.Graph(id=i, **graph)
                    for i in (
                        "loss-graph",
                        "similarity-graph",
                        "eer-graph",
                        "timing-graph",
                        "producers-graph",
                    )
                ],
            ),
            dcc.Interval(id="tick", interval=refresh_ms),
            dcc.Store(id="drawn"),  # per browser tab: what its charts show (see update_charts)
        ],
    )

    @app.callback(
        Output("run", "options"),
        Output("run", "value"),
        Output("message", "children"),
        Input("tick", "n_intervals"),
        State("run", "value"),
    )
    def update_runs(_, current):
        if current is not None and not isinstance(current, str):
            current = None  # a forged request: not a run id; keep the page working
        options, message = board.run_options()
        if options is None:  # a blip of the store must not drop the run being watched
            return no_update, no_update, message
        values = [o["value"] for o in options]
        value = current if current in values else (values[0] if values else None)
        return options, value, message

    @app.callback(
        Output("summary", "children"),
        Output("loss-graph", "figure"),
        Output("similarity-graph", "figure"),
        Output("eer-graph", "figure"),
        Output("timing-graph", "figure"),
        Output("producers-graph", "figure"),
        Output("run-message", "children"),
        Output("drawn", "data"),
        Input("tick", "n_intervals"),
        Input("run", "value"),
        Input("log-scale", "value"),
        State("drawn", "data"),
    )
    def update_charts(_, run_id, log_scale, drawn):
        # A tick that brings nothing new sends nothing: redrawing five unchanged charts every
        # tick can keep a slow browser busy past the next tick, and Dash drops a callback's
        # result when the callback fires again before it arrives (plotly/dash#941).
        ticked = ctx.triggered_id == "tick"
        bad = bad_inputs(run_id, log_scale, drawn)
        if bad:  # a forged request (the page only sends these types): the page's own text
            return _cleared(f"Bad request: {bad}.")
        if not run_id:
            return (no_update,) * 8 if ticked else _cleared()
        t0 = time.perf_counter()
        try:
            s = board.refresh(run_id)
        except StoreUnavailable as exc:  # keep the charts drawn so far; say they are stale
            return (no_update,) * 6 + (f"Showing the data read so far: {exc}", None)
        key = _drawn_key(s, log_scale)
        if ticked and drawn == key:
            return (no_update,) * 8
        try:
            margin = _margin(s)
            out = (
                F.summary_line(s),
                F.loss_figure(s, "log" in (log_scale or [])),
                F.similarity_figure(s, margin),
                F.eer_figure(s),
                F.timing_figure(s),
                F.producers_figure(s),
                "",
                key,
            )
        except Exception as exc:  # noqa: BLE001 - a message on the page, the traceback in the log
            log.exception("drawing run %s failed", run_id)
            return _cleared(f"Cannot draw run {run_id}: {exc}")
        log.debug("refresh of %s took %.3f s", run_id, time.perf_counter() - t0)
        return out

    return app


def bad_inputs(run_id, log_scale, drawn) -> str:
    """What is wrong with the chart callback's inputs ('' when nothing): a run id is text,
    the log-scale switch a list of texts, the drawn key text."""
    if run_id is not None and not isinstance(run_id, str):
        return f"the run must be a run id (text), got {type(run_id).__name__}"
    if log_scale is not None and not (
        isinstance(log_scale, list) and all(isinstance(v, str) for v in log_scale)
    ):
        return f"the log-scale switch must be a list of texts, got {type(log_scale).__name__}"
    if drawn is not None and not isinstance(drawn, str):
        return f"the drawn key must be text, got {type(drawn).__name__}"
    return ""


def _cleared(message: str = "") -> tuple:
    """The chart callback's outputs with nothing drawn: summary, five charts, message, key."""
    return ("", *[F.new_figure("")] * 5, message, None)


def _drawn_key(s: RunSeries, log_scale) -> str:
    """Identifies what a tab's charts show: the run, how much of each stream, meta, scale."""
    counts = (s.train.n, s.eval.n, s.producers.n, len(s.events.rows))
    meta = json.dumps(s.meta, sort_keys=True)
    return f"{s.run_id}|{counts}|{hash(meta)}|{sorted(log_scale or [])}"


def _margin(s: RunSeries) -> float:
    try:
        return float(json.loads(s.meta.get("config", "{}"))["learner"]["margin"])
    except (ValueError, KeyError, TypeError):
        return 0.1
