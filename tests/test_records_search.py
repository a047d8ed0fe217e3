"""The typed records of a study (``study.json``): round trips, the schema, and that the JSON a
real study writes holds every field the records (and so the report) read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from test_report_study import fixture_trials, make_summary, study, validation_runs

from satadvisor.errors import UsageError
from satadvisor.report import write_report
from satadvisor.search import summary as summary_mod
from satadvisor.search.study_record import (
    SCHEMA,
    Comparison,
    Recommendation,
    SeedRun,
    StudySettings,
    StudySummary,
    TrialRow,
    ValidatedConfig,
    ValidationRun,
)


def test_every_record_of_a_real_study_round_trips() -> None:
    s = make_summary()
    assert StudySummary.from_dict(s.to_dict()) == s
    assert StudySummary.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    for row in s.trials:
        assert TrialRow.from_dict(row.to_dict()) == row
    for config in s.validation:
        assert ValidatedConfig.from_dict(config.to_dict()) == config
        for run in config.runs:
            assert SeedRun.from_dict(run.to_dict()) == run
        if config.comparison is not None:
            assert Comparison.from_dict(config.comparison.to_dict()) == config.comparison
    (rec,) = s.recommended
    assert Recommendation.from_dict(rec.to_dict()) == rec
    assert StudySettings.from_dict(s.settings.to_dict()) == s.settings


def test_a_stored_validation_run_reads_back_unchanged() -> None:
    stored = validation_runs(fixture_trials())[0]
    run = ValidationRun.from_dict(stored)
    assert run.to_dict() == stored
    assert (run.trial, run.baseline, run.seed, run.tail) == (
        0,
        True,
        0,
        ("conv6", "conv7", "conv8"),
    )
    assert run.seed_run == SeedRun(0, "completed", 0.956, 0.951, 20, 140.0)


def test_settings_keep_what_they_do_not_name() -> None:
    d = {"model": "m.py", "dataset": None, "strategy": "tpe", "train": {"epochs": 2}, "subset": 9}
    settings = StudySettings.from_dict(d)
    assert (settings.model, settings.dataset, settings.other) == ("m.py", None, {"subset": 9})
    assert settings.to_dict() == d


def test_the_aggregate_is_the_mean_and_sample_spread_of_the_seeds() -> None:
    base = make_summary().baseline
    assert base is not None
    # val 0.956, 0.960, 0.958: mean 0.958, sample standard deviation 0.002
    assert base.val_accuracy == pytest.approx(0.958)
    assert base.val_std == pytest.approx(0.002)
    assert base.wall_time == pytest.approx(3 * 140.0)
    assert [r.val_accuracy for r in base.runs] == [0.956, 0.960, 0.958]
    assert base.comparison is None  # the baseline is what the others compare with


@pytest.mark.parametrize("schema", ["satadvisor.study/1", "satadvisor.study/9", None])
def test_another_schema_is_a_one_line_error_naming_it_and_the_fix(schema: str | None) -> None:
    d: dict[str, Any] = {**make_summary().to_dict(), "schema": schema}
    with pytest.raises(UsageError) as err:
        StudySummary.from_dict(d)
    message = str(err.value)
    assert "\n" not in message
    assert repr(schema) in message and SCHEMA in message
    assert "satadvisor report STUDY" in message


def _missing_fields(record: Any, data: Any, where: str) -> list[str]:
    """Fields of ``record`` (recursively) that ``data``, its JSON, does not hold."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        missing = []
        for f in dataclasses.fields(record):
            if isinstance(record, StudySettings):
                continue  # a free-form settings dict: its keys are what the study stored
            value = getattr(record, f.name)
            if f.name not in data:
                # optional keys: written only when they hold something
                if not (f.name in ("storage", "settings_used", "comparison") and value is None):
                    missing.append(f"{where}.{f.name}")
                continue
            missing += _missing_fields(value, data[f.name], f"{where}.{f.name}")
        return missing
    if isinstance(record, tuple) and isinstance(data, list):
        return [m for i, (r, d) in enumerate(zip(record, data, strict=True))
                for m in _missing_fields(r, d, f"{where}[{i}]")]  # fmt: skip
    return []


def test_the_json_a_real_study_writes_holds_every_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    st = study(storage=url)
    summary = summary_mod.study_summary(st, tolerance=0.005, storage=url)
    assert summary.recommended and summary.validation[1].comparison is not None
    index = write_report(summary, tmp_path / "report")
    written = json.loads((index.parent / "study.json").read_text("utf-8"))
    assert written["schema"] == SCHEMA
    assert _missing_fields(summary, written, "study") == []
    # and nothing in it that no record reads
    names = {f.name for f in dataclasses.fields(StudySummary)}
    assert set(written) <= names
    assert set(written["validation"][1]) == {f.name for f in dataclasses.fields(ValidatedConfig)}
    assert set(written["recommended"][0]) == {f.name for f in dataclasses.fields(Recommendation)}
    assert set(written["trials"][0]) == {f.name for f in dataclasses.fields(TrialRow)}
    assert StudySummary.from_dict(written) == summary
    # the public path reads the loaded dict the same way
    again = write_report(written, tmp_path / "again")
    assert again.read_text("utf-8") == index.read_text("utf-8")


def test_write_report_refuses_a_study_json_of_another_schema(tmp_path: Path) -> None:
    d = {**make_summary().to_dict(), "schema": "satadvisor.study/1"}
    with pytest.raises(UsageError, match="study/1"):
        write_report(d, tmp_path / "r")
