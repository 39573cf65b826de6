"""TensorBoard event files (cluster.tensorboard) when their folder goes away mid-run."""

from __future__ import annotations

import logging
import shutil

import pytest

from cluster import metrics as M
from cluster.tensorboard import TensorBoardSink


def test_a_deleted_event_file_is_said_not_written_into_the_void(tmp_path):
    """Writes into a deleted event file succeed (the file is open) and are lost: the sink
    says so at the next flush instead."""
    sink = TensorBoardSink(tmp_path / "tb", every=1)
    sink.scalars(1, {"train/loss": 1.0})
    sink.flush()
    shutil.rmtree(tmp_path / "tb")
    sink.scalars(2, {"train/loss": 0.5})
    with pytest.raises(OSError, match="was removed"):
        sink.flush()


@pytest.mark.redis
def test_the_metrics_writer_warns_once_and_training_goes_on(tmp_path, redis_server, caplog):
    _, url = redis_server
    sink = TensorBoardSink(tmp_path / "tb", every=1)
    w = M.MetricsWriter(url, "tb-gone", tensorboard=sink)
    w.train({"step": 1, "loss": 1.0})
    w.flush()
    shutil.rmtree(tmp_path / "tb")
    caplog.set_level(logging.WARNING)
    for step in range(2, 5):
        w.train({"step": step, "loss": 1.0 / step})
        w.flush()
    w.close()
    said = [
        r.getMessage() for r in caplog.records if "TensorBoard events stopped" in r.getMessage()
    ]
    assert len(said) == 1 and str(tmp_path / "tb") in said[0]
    assert M.connect(url).xlen(M.train_key("tb-gone")) == 4  # the Redis series is whole
