"""The typed records of an analysis: each round-trips through its JSON, a real ``analysis.json``
reads back into the record it was written from, and a file of another schema or shape is a
one-line error."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from satadvisor import analyze, trust
from satadvisor.advisor import Analysis
from satadvisor.analysis_record import (
    SCHEMA,
    AnalysisRecord,
    LayerRow,
    ReceptiveFieldSummary,
    SaturationEpoch,
    Tracking,
    TrainingSummary,
)
from satadvisor.config import TrainConfig
from satadvisor.errors import UsageError
from satadvisor.report import write_report
from satadvisor.rules import Finding, Recommendation

QUICK = TrainConfig(epochs=2, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def analyses() -> Iterator[dict[str, Analysis]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield {"trained": analyze(config=QUICK), "no training": analyze(train=False)}
    finally:
        torch.set_num_threads(threads)


def _json(value: Any) -> Any:
    """``value`` through strict JSON text, as a file holds it."""
    return json.loads(json.dumps(value, allow_nan=False))


def _written(analysis: Analysis, out: Path) -> dict[str, Any]:
    write_report(analysis, out)
    loaded: dict[str, Any] = json.loads((out / "analysis.json").read_text("utf-8"))
    return loaded


# ---------------------------------------------------------------------------------------------
# Round trips


def test_every_record_of_a_real_analysis_round_trips_through_json(
    analyses: dict[str, Analysis],
) -> None:
    record = analyses["trained"].record()
    training = record.training
    assert training is not None and training.learning is not None and training.settling
    parts: list[Any] = [
        record,
        training,
        training.learning,
        training.settling,
        training.tracking,
        record.receptive_field,
        *training.saturation_history,
        *record.layers,
        *record.findings,
        *record.recommendations,
    ]
    for part in parts:
        assert dataclasses.is_dataclass(part)
        assert type(part).from_dict(part.to_dict()) == part, type(part).__name__
        assert type(part).from_dict(_json(part.to_dict())) == part, type(part).__name__


def test_the_records_are_frozen(analyses: dict[str, Analysis]) -> None:
    record = analyses["trained"].record()
    assert record.training is not None
    for part in (record, record.layers[0], record.training, record.receptive_field):
        with pytest.raises(dataclasses.FrozenInstanceError):
            part.name = "changed"  # type: ignore[misc, union-attr]
    assert isinstance(record.layers, tuple) and isinstance(record.findings, tuple)
    assert all(isinstance(f, Finding) for f in record.findings)
    assert all(isinstance(r, Recommendation) for r in record.recommendations)


def test_hand_made_records_round_trip() -> None:
    # values a tiny run does not produce: an inverted feasible range, a capped position count,
    # no learning test, a row the tracker never saw
    parts = [
        ReceptiveFieldSummary(False, "attention mixes every position", (48, 40), None),
        ReceptiveFieldSummary(True),
        Tracking(positions=512, rows_per_batch="at most 512", groups=8, z=2.0),
        SaturationEpoch(3, {"a.b": 0.25, "c": 1.0}),
        LayerRow(name="head", label="head", type="Linear"),
        trust.Settling(False, None, 1, None, None, None, 0.03),
    ]
    for part in parts:
        assert type(part).from_dict(_json(part.to_dict())) == part


def test_a_settling_reads_back_without_its_derived_reason() -> None:
    moving = trust.Settling(False, None, 3, 0.2, "conv4", False, 0.03)
    d = moving.to_dict()
    assert d["reason"] == moving.reason and "conv4" in d["reason"]
    assert trust.Settling.from_dict(d) == moving


# ---------------------------------------------------------------------------------------------
# The real analysis.json


@pytest.mark.parametrize("kind", ["trained", "no training"])
def test_a_real_analysis_json_validates_against_the_record(
    analyses: dict[str, Analysis], kind: str, tmp_path: Path
) -> None:
    analysis = analyses[kind]
    written = _written(analysis, tmp_path / "report")
    assert written["schema"] == SCHEMA
    record = AnalysisRecord.from_dict(written)
    assert record == analysis.record()
    # the file is the record's dict and, per recommendation, the command that tries it
    again = record.to_dict()
    assert {k: v for k, v in written.items() if k != "recommendations"} == {
        k: v for k, v in again.items() if k != "recommendations"
    }
    for file_rec, rec in zip(written["recommendations"], again["recommendations"], strict=True):
        assert file_rec.pop("command").startswith("satadvisor analyze ")
        assert file_rec == rec
    # what the live analysis says, the record says
    assert record.verdict == analysis.verdict and record.advice_basis == analysis.basis
    assert [row.name for row in record.layers] == [row.name for row in analysis.layers()]
    assert (record.training is None) == (analysis.run is None)
    assert record.learned == analysis.learned


def test_a_trained_record_holds_the_runs_numbers(analyses: dict[str, Analysis]) -> None:
    analysis = analyses["trained"]
    run = analysis.run
    assert run is not None
    training = analysis.record().training
    assert isinstance(training, TrainingSummary)
    assert training.history == tuple(run.epochs)
    assert training.accuracy == run.epochs[-1].eval_accuracy
    assert [e.epoch for e in training.saturation_history] == [1, 2]
    last = {s.name: s.saturation for s in run.saturation[-1]["train"]}
    assert training.saturation_history[-1].layers == last
    assert training.tracking.positions == "auto" and training.tracking.stated_error


def test_a_row_written_before_labels_is_called_by_its_name() -> None:
    row = LayerRow(name="features.3", label="Conv2d #2 (features.3)", type="Conv2d")
    old = {k: v for k, v in row.to_dict().items() if k != "label"}
    assert LayerRow.from_dict(old).label == "features.3"


def test_non_finite_numbers_read_back_as_null(
    analyses: dict[str, Analysis], tmp_path: Path
) -> None:
    record = analyses["trained"].record()
    assert record.training is not None
    last = dataclasses.replace(record.training.history[-1], train_loss=math.nan)
    training = dataclasses.replace(record.training, history=(last,))
    write_report(dataclasses.replace(record, training=training), tmp_path / "r")
    loaded = json.loads((tmp_path / "r" / "analysis.json").read_text("utf-8"))
    back = AnalysisRecord.from_dict(loaded)
    assert back.training is not None and back.training.history[-1].train_loss is None


# ---------------------------------------------------------------------------------------------
# Errors


def _one_line_usage_error(d: Any, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        AnalysisRecord.from_dict(d)
    assert "\n" not in str(info.value)


def test_an_unknown_or_missing_schema_is_a_one_line_error(analyses: dict[str, Analysis]) -> None:
    d = analyses["no training"].to_dict()
    _one_line_usage_error({**d, "schema": "satadvisor.analysis/99"}, r"analysis/99.*re-run")
    _one_line_usage_error({k: v for k, v in d.items() if k != "schema"}, r"None.*re-run")
    _one_line_usage_error({"schema": "satadvisor.study/2"}, r"study/2.*not supported")


def test_a_malformed_analysis_is_a_one_line_error_naming_what_is_wrong(
    analyses: dict[str, Analysis],
) -> None:
    d = analyses["trained"].to_dict()
    _one_line_usage_error({k: v for k, v in d.items() if k != "layers"}, r"malformed.*'layers'")
    bad_row = {**d["layers"][0], "colour": "red"}
    _one_line_usage_error({**d, "layers": [bad_row]}, r"malformed.*colour")
    no_status = {k: v for k, v in d["training"].items() if k != "status"}
    _one_line_usage_error({**d, "training": no_status}, r"malformed.*status")
    _one_line_usage_error({**d, "resolution": "sixteen"}, r"malformed.*sixteen")
