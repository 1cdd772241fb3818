"""The MLflow tracker's delivery thread tells an outage (kept and retried) from a request the
store refuses (reported once with its reason and dropped, so the updates after it still arrive)."""

from __future__ import annotations

import threading

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from mtsam.sweep.callback import MlflowTracker, _rejected


def test_client_errors_are_rejections_and_server_errors_are_outages():
    assert _rejected(TypeError("bad argument type for built-in operation"))
    assert _rejected(MlflowException("too long", error_code=INVALID_PARAMETER_VALUE))
    assert not _rejected(MlflowException("connection refused", error_code=INTERNAL_ERROR))
    assert not _rejected(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not _rejected(ConnectionError("refused"))


def test_a_rejected_update_is_reported_with_its_reason_and_the_rest_delivered(tmp_path, capsys):
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/m.db", "0", "parent", {}, "s", 1, "fifo", retry_s=0.05)
    delivered = threading.Event()

    def refused():
        message = "Param value 'x' had length 7000, limit 6000"
        raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)

    tracker._submit(refused)
    tracker._submit(refused)
    tracker._submit(delivered.set)
    assert delivered.wait(10), "the update after a rejected one was never delivered"
    err = capsys.readouterr().err
    assert tracker.rejected == 2 and err.count("rejected a tracking update") == 1, err
    assert "MlflowException: Param value 'x' had length 7000, limit 6000" in err
    assert "unreachable" not in err
