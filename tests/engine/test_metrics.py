"""metrics.jsonl: strict JSON, and what a resumed run keeps."""

import json
import math

import pytest

from maskrcnn.engine.metrics import MetricsLog, read_metrics
from maskrcnn.files import strict_json


def _reject(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_non_finite_values_are_written_as_null(tmp_path):
    log = MetricsLog(tmp_path, enabled=True)
    log.write({"iteration": 1, "segm_APl": math.nan, "loss": 0.5, "nested": [math.inf, 1.0]})
    log.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    record = json.loads(text, parse_constant=_reject)
    assert record == {"iteration": 1, "segm_APl": None, "loss": 0.5, "nested": [None, 1.0]}


def test_strict_json_leaves_finite_values_alone():
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": -0.0}}
    assert json.loads(strict_json(value), parse_constant=_reject) == value
    with pytest.raises(ValueError):
        json.loads(json.dumps({"a": math.nan}), parse_constant=_reject)


def test_a_resumed_log_keeps_what_came_before_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, enabled=True)
    for iteration in range(1, 6):
        log.write({"iteration": iteration, "loss": float(iteration)})
    log.close()
    MetricsLog(tmp_path, enabled=True, start_iteration=3).close()
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
