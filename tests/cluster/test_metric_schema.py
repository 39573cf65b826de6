"""Every metric declared once (cluster.metric_schema): each field an evaluation computes
reaches both Redis and TensorBoard, through the real writer, a real Redis server and a real
TensorBoard event file."""

from __future__ import annotations

import dataclasses

import pytest

from cluster import metrics as M
from cluster.metric_schema import METRICS, STREAMS, fields, scalars, unit
from cluster.tensorboard import EVAL_SCALARS, TRAIN_SCALARS, TensorBoardSink
from learner.scoring.scores import EvalResult

pytestmark = pytest.mark.redis


def test_the_outputs_derive_from_the_declaration():
    assert fields("train") == M.TRAIN_FIELDS and fields("eval") == M.EVAL_FIELDS
    assert fields("producers") == M.PRODUCER_FIELDS
    assert scalars("train") == TRAIN_SCALARS and scalars("eval") == EVAL_SCALARS
    assert {m.stream for m in METRICS} == set(STREAMS)
    for stream in STREAMS:  # one declaration per name and stream
        assert len(set(fields(stream))) == len(fields(stream)), stream
    assert unit("eer") == "share" and unit("cllr") == "bits"
    with pytest.raises(ValueError):
        fields("nope")


def test_every_field_an_evaluation_computes_reaches_redis_and_tensorboard(redis_server, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, url = redis_server
    computed = {f.name: 0.25 for f in dataclasses.fields(EvalResult)}  # every one filled
    computed.update(trials=100, targets=40, eval_s=1.5, eer_smoothed=0.2)  # the learner's
    sink = TensorBoardSink(tmp_path / "tb", every=1)
    w = M.MetricsWriter(url, "schema", tensorboard=sink)
    w.eval(7, computed)
    w.close()
    _, entry = M.connect(url).xrange(M.eval_key("schema"))[0]
    assert set(entry) == set(computed) | {"step"}, set(computed) ^ (set(entry) - {"step"})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    drawn = {t.removeprefix("eval/").removesuffix("_pct") for t in events.Tags()["scalars"]}
    assert drawn == set(computed), set(computed) ^ drawn
    # shares are drawn as percent, as the dashboard draws them (a fraction used to be shown)
    assert events.Scalars("eval/eer_pct")[0].value == pytest.approx(25.0)
