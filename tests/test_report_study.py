"""The study report: files, page content and order, escaping, importances, plot data, browser.

Every page is rendered from what the library really returns: a real Optuna study (in memory,
or SQLite where the storage matters) whose trials carry the real trial record and whose
validation runs are stored as :func:`satadvisor.search.validate.validate` stores them, summed
up by :func:`satadvisor.search.summary.study_summary`.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from sklearn.feature_selection import f_classif

from satadvisor.errors import UsageError
from satadvisor.report import (
    STUDY_SCHEMA,
    _plots_study,
    param_importances,
    render_study,
    trials_csv,
    write_study,
)
from satadvisor.search import summary as summary_mod
from satadvisor.search.record import KEY, TrialRecord
from satadvisor.search.storage import open_storage
from satadvisor.search.study_record import StudySummary
from satadvisor.search.validate import validation_key

EVIL = "<script>alert(1)</script>"
TOLERANCE = 0.005
KNOBS = ("depth", "kernel_size", "width", "resolution")
#: Every value a searched knob takes in the fixture (the trials' Optuna distributions).
CHOICES = {
    "depth": [4, 6, 8, 10],
    "kernel_size": [3, 5, 7],
    "width": [16, 32, 64],
    "resolution": [12, 16, 24, 32],
}
SETTINGS = {
    "model": "model.py",
    "dataset": "digits",
    "strategy": "guided",
    "train": {
        "epochs": 5,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "seed": 0,
        "device": "auto",
        "amp": True,
        "full": False,
    },
}
STORAGE = "sqlite:///studies/vgg-digits.db"


def _profile(depth: int, tail: int, top: float) -> tuple[dict[str, float], list[str]]:
    """Saturation of conv1..conv{depth} + fc: a plateau, then ``tail`` layers falling off."""
    sat = {}
    for i in range(1, depth + 1):
        drop = max(0, i - (depth - tail))
        sat[f"conv{i}"] = round(top * (0.9 + 0.1 * (i % 2)) * 0.45**drop, 4)
    sat["fc"] = 0.62
    return sat, [f"conv{i}" for i in range(depth - tail + 1, depth + 1)]


def _trial(
    number: int,
    source: str,
    knobs: tuple[int, int, int, int],
    *,
    accuracy: float | None = None,
    macs: int | None = None,
    tail: int = 0,
    evenness: float | None = None,
    state: str = "complete",
    parent: int | None = None,
    reason: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """What the fixture says of one trial (turned into a real Optuna trial by :func:`study`)."""
    default = {"complete": "completed", "fail": "failed", "pruned": "pruned"}[state]
    return {
        "number": number,
        "state": state,
        "status": status or default,
        "source": source,
        "knobs": dict(zip(KNOBS, knobs, strict=True)),
        "accuracy": accuracy,
        "macs": macs,
        "tail": tail,
        "evenness": evenness,
        "parent": parent,
        "reason": reason,
    }


def fixture_trials() -> list[dict[str, Any]]:
    """12 trials: the baseline, rule moves, sampler and random draws, a failure, a duplicate."""
    return [
        _trial(0, "baseline", (8, 3, 32, 16), accuracy=0.962, macs=4_100_000, tail=3, evenness=0.61),
        _trial(1, "rule:efficiency", (6, 3, 32, 16), accuracy=0.958, macs=3_150_000, tail=1,
               evenness=0.74, parent=0),
        _trial(2, "rule:performance", (8, 3, 32, 24), accuracy=0.971, macs=9_220_000, tail=1,
               evenness=0.70, parent=0),
        _trial(3, "sampler", (4, 5, 16, 12), accuracy=0.921, macs=880_000, evenness=0.80),
        _trial(4, "sampler", (10, 7, 64, 32), state="fail",
               reason="diverged: training loss became nan in epoch 2"),
        _trial(5, "sampler", (6, 3, 16, 16), accuracy=0.949, macs=1_020_000, tail=1, evenness=0.72),
        _trial(6, "rule:efficiency", (4, 3, 32, 16), accuracy=0.944, macs=2_210_000,
               evenness=0.83, parent=1),
        _trial(7, "sampler", (6, 5, 64, 24), accuracy=0.974, macs=18_400_000, tail=1, evenness=0.69),
        _trial(8, "sampler", (6, 3, 16, 16), state="pruned", status="duplicate",
               reason="skipped: duplicate"),
        _trial(9, "random", (8, 5, 16, 12), accuracy=0.930, macs=1_510_000, tail=2, evenness=0.66),
        _trial(10, "sampler", (6, 3, 32, 12), accuracy=0.955, macs=1_790_000, evenness=0.78),
        _trial(11, "rule:performance", (4, 3, 32, 24), accuracy=0.961, macs=4_950_000,
               evenness=0.82, parent=6),
    ]  # fmt: skip


def _record(
    trial: dict[str, Any],
    *,
    val: tuple[float, ...],
    test: tuple[float, ...],
    baseline: bool = False,
    tail: int = 0,
) -> list[dict[str, Any]]:
    """The full runs of ``trial``, one per seed 0, 1, … (20 epochs; evenness a little above
    the proxy's), as :func:`satadvisor.search.validate.validate` stores them."""
    sat, tail_names = _profile(trial["knobs"]["depth"], tail, 0.55)
    return [
        {
            "trial": trial["number"],
            "baseline": baseline,
            "source": trial["source"],
            "knobs": dict(trial["knobs"]),
            "seed": seed,
            "proxy_accuracy": trial["accuracy"],
            "val_accuracy": v,
            "test_accuracy": t,
            "status": "completed",
            "macs": trial["macs"],
            "params": trial["macs"] // 50,
            "epochs": 20,
            "train_images": 1200,
            "val_images": 238,
            "test_images": 359,
            "wall_time": 140.0,
            "saturation": sat,
            "tail": tail_names,
            "evenness": round(trial["evenness"] + 0.02, 4),
            "history": [],
        }
        for seed, (v, t) in enumerate(zip(val, test, strict=True))
    ]


def validation_runs(t: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The full runs of the fixture: the baseline (trial 0), trials 1 and 3, three seeds each.

    Validation (chooses): trial 1 is above the baseline on every seed pair (deltas +0.3, +0.2,
    +0.1 pt); test (reported only) puts it 0.3 pt *below* the baseline.
    """
    return (
        _record(t[0], val=(0.956, 0.960, 0.958), test=(0.951, 0.955, 0.953), baseline=True,
                tail=3)
        + _record(t[1], val=(0.959, 0.962, 0.959), test=(0.948, 0.952, 0.950), tail=1)
        + _record(t[3], val=(0.915, 0.917, 0.913), test=(0.921, 0.910, 0.915))
    )  # fmt: skip


_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}


def study(
    trials: Sequence[dict[str, Any]] | None = None,
    runs: Sequence[dict[str, Any]] | None = None,
    *,
    name: str = "vgg-digits",
    storage: str | None = None,
    **attrs: Any,
) -> optuna.Study:
    """A real Optuna study of ``trials`` (default: the fixture's) with the validation ``runs``
    (default: the fixture's) stored as :func:`~satadvisor.search.validate.validate` stores
    them, and the study attributes satadvisor sets (``attrs`` override them)."""
    trials = fixture_trials() if trials is None else trials
    runs = validation_runs(list(trials)) if runs is None else runs
    st = optuna.create_study(
        study_name=name,
        storage=None if storage is None else open_storage(storage),
        directions=["maximize", "minimize"],
    )
    for t in trials:
        complete = t["state"] == "complete"
        depth = t["knobs"]["depth"]
        rec = TrialRecord(
            knobs=dict(t["knobs"]),
            source=t["source"],
            status=t["status"],
            parent=t["parent"],
            reason=t["reason"],
            accuracy=t["accuracy"],
            macs=t["macs"],
            params=None if t["macs"] is None else t["macs"] // 50,
            epochs=5 if t["accuracy"] is not None else 0,
            saturation=_profile(depth, t["tail"], 0.5)[0] if complete else {},
            tail=tuple(_profile(depth, t["tail"], 0.5)[1]) if complete else (),
            evenness=t["evenness"],
            findings=("tail",) if t["tail"] else (),
            wall_time=31.5 if complete else None,
        )
        st.add_trial(
            create_trial(
                state=_STATES[t["state"]],
                values=[t["accuracy"], float(t["macs"])] if complete else None,
                params={k: t["knobs"][k] for k in KNOBS},
                distributions={k: CategoricalDistribution(CHOICES[k]) for k in KNOBS},
                user_attrs={KEY: rec.to_dict()},
            )
        )
    for run in runs:
        st.set_user_attr(validation_key(run["knobs"], run["seed"]), run)
    # a record of a version that chose on the test set (no seed) is left out
    st.set_user_attr(f"{summary_mod.VALIDATION_PREFIX}old", {"trial": 5, "test_accuracy": 1})
    defaults = {
        "settings": SETTINGS,
        "space": CHOICES,
        "objectives": ["accuracy", "macs"],
        "budget": 12,
        "validate_seeds": 3,
    }
    for key, value in {**defaults, **attrs}.items():
        if value is not None:
            st.set_user_attr(key, value)
    return st


def make_summary(
    trials: Sequence[dict[str, Any]] | None = None,
    runs: Sequence[dict[str, Any]] | None = None,
    *,
    storage: str | None = STORAGE,
    **attrs: Any,
) -> StudySummary:
    """The summary the library makes of :func:`study` (storage shown as ``storage``)."""
    return summary_mod.study_summary(
        study(trials, runs, **attrs), tolerance=TOLERANCE, storage=storage
    )


def revalidated(trial: int, val: tuple[float, ...]) -> StudySummary:
    """The fixture with other validation accuracies (same test ones) for ``trial``."""
    runs = validation_runs(fixture_trials())
    for run, v in zip([r for r in runs if r["trial"] == trial], val, strict=True):
        run["val_accuracy"] = v
    return make_summary(runs=runs)


def empty_summary() -> StudySummary:
    """A study that ran nothing yet: one failed baseline, no validation."""
    failed = _trial(0, "baseline", (8, 3, 32, 16), state="fail", reason="out of GPU memory")
    return make_summary([failed], [])


@pytest.fixture()
def summary() -> StudySummary:
    return make_summary()


def test_summary_of_the_fixture_study(summary: StudySummary) -> None:
    assert STUDY_SCHEMA == summary_mod.SCHEMA == summary.schema
    assert summary.counted_trials == 11  # the duplicate does not count
    assert [t.counted for t in summary.trials].count(False) == 1
    # Trial 1 (depth 6): validation +0.2 pt over the baseline, paired over 3 seeds, with fewer
    # MACs → the only recommendation, although its test accuracy is lower.
    (rec,) = summary.recommended
    assert rec.trial == 1 and rec.accuracy_delta == pytest.approx(0.002)
    assert rec.test_delta == pytest.approx(-0.003)
    # deltas 0.003, 0.002, 0.001: sd 0.001, t(0.975, 2) = 4.3027 → ±0.00248 around 0.002
    assert rec.comparison is not None
    assert rec.comparison.low == pytest.approx(0.002 - 4.302653 * 0.001 / 3**0.5)
    assert rec.comparison.accuracy == "tie"  # the interval contains 0
    assert (rec.claim, rec.verdict, rec.confirmed) == ("cheaper", "confirmed", True)
    assert rec.macs_ratio == pytest.approx(3_150_000 / 4_100_000)
    # Ranks proxy (3, 2, 1) vs full-run val (2, 3, 1): d² = 1 + 1 + 0 → ρ = 1 − 6·2 / (3·8) = 0.5.
    assert summary.rank_agreement == pytest.approx(0.5)
    # Front by hand: 3 (cheapest), 5, 10, 1, 0, 2, 7 (most accurate); 6, 9, 11 dominated.
    assert summary.pareto == (0, 1, 2, 3, 5, 7, 10)
    # the legacy record without a seed is left out: the baseline and trials 1 and 3
    assert [r.trial for r in summary.validation] == [0, 1, 3]
    assert summary.validation[0].seeds == (0, 1, 2)


# ---------------------------------------------------------------------------------------------
# Files


def test_write_study_writes_the_four_files(tmp_path: Path, summary: StudySummary) -> None:
    index = write_study(summary, tmp_path / "report")
    out = tmp_path / "report"
    assert index == out / "index.html"
    assert {p.name for p in out.iterdir()} == {
        "index.html",
        "study.json",
        "trials.csv",
        "plotly.min.js",
        ".satadvisor-output",
    }
    written = json.loads((out / "study.json").read_text("utf-8"))
    assert written == summary.to_dict()
    assert StudySummary.from_dict(written) == summary
    assert (out / "study.json").read_text("utf-8").startswith('{\n  "schema"')
    page = index.read_text("utf-8")
    assert '<script src="plotly.min.js"></script>' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_trials_csv_has_one_row_per_trial_with_knob_columns(summary: StudySummary) -> None:
    rows = list(csv.reader(io.StringIO(trials_csv(summary))))
    assert rows[0] == [
        "number", "state", "source", "depth", "kernel_size", "width", "resolution",
        "accuracy", "macs", "params", "tail_length", "evenness", "reason",
    ]  # fmt: skip
    assert len(rows) == 1 + 12
    by_number = {int(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert by_number[1] == {
        "number": "1",
        "state": "complete",
        "source": "rule:efficiency",
        "depth": "6",
        "kernel_size": "3",
        "width": "32",
        "resolution": "16",
        "accuracy": "0.958",
        "macs": "3150000",
        "params": "63000",
        "tail_length": "1",
        "evenness": "0.74",
        "reason": "",
    }
    assert by_number[4]["state"] == "fail" and by_number[4]["accuracy"] == ""
    assert by_number[4]["reason"] == "diverged: training loss became nan in epoch 2"
    assert by_number[8]["reason"] == "skipped: duplicate"


def test_non_finite_values_become_null(tmp_path: Path) -> None:
    trials = fixture_trials()
    runs = validation_runs(trials)
    trials[3]["evenness"] = float("nan")
    runs[-1]["wall_time"] = float("inf")  # a run of trial 3, the third validated configuration
    summary = make_summary(trials, runs)
    write_study(summary, tmp_path)

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads((tmp_path / "study.json").read_text("utf-8"), parse_constant=reject)
    assert data["trials"][3]["evenness"] is None
    assert data["validation"][2]["wall_time"] is None
    page = (tmp_path / "index.html").read_text("utf-8")
    assert "NaN" not in page and "Infinity" not in page


def test_unknown_schema_is_a_usage_error(tmp_path: Path, summary: StudySummary) -> None:
    loaded = {**summary.to_dict(), "schema": "satadvisor.study/9"}
    with pytest.raises(UsageError, match=r"study/9.*satadvisor report") as err:
        write_study(loaded, tmp_path / "r")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()


def test_failed_write_keeps_the_previous_report(
    tmp_path: Path, summary: StudySummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    write_study(summary, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from satadvisor.report import _page

    def crash() -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_page, "plotly_js", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_study(empty_summary(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# ---------------------------------------------------------------------------------------------
# Page content


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    end = page.find("<section id=", start + 1)
    return page[start : end if end > 0 else len(page)]


def test_sections_in_the_required_order(summary: StudySummary) -> None:
    page = render_study(summary)
    assert re.findall(r'<section id="([a-z]+)"', page) == [
        "recommendation", "pareto", "history", "importance", "trials", "validation", "reproduce",
    ]  # fmt: skip
    for figure in ("fig-before-1", "fig-after-1", "fig-pareto", "fig-history", "fig-importance"):
        assert f'<script type="application/json" id="{figure}-data">' in page


def test_recommendation_shows_set_line_snippet_and_numbers(summary: StudySummary) -> None:
    rec = _section(render_study(summary), "recommendation")
    assert "Adopt depth=6 kernel_size=3 width=32 resolution=16: its full-run validation " in rec
    assert (
        "96.0 % ± 0.2 pt (3 seeds) against the baseline&#39;s 95.8 % ± 0.2 pt (3 seeds), paired "
        "difference +0.2 pt, 95 % interval [−0.05, +0.45] pt over 3 seeds, the same accuracy "
        "within the interval (a tie)"
    ) in rec
    assert "0.77× the MACs" in rec
    assert "Test accuracy, reported only: 95.0 % against 95.3 %." in rec
    # confirmed (cheaper, within the tolerance), accuracy a tie: never "more accurate"
    assert re.findall(r'<span class="badge ([a-z]+)">([^<]+)</span>', rec)[:4] == [
        ("kind", "rule:efficiency"), ("good", "confirmed"), ("good", "fewer MACs"),
        ("tie", "accuracy: tie"),
    ]  # fmt: skip
    assert "more accurate" not in rec
    assert (
        "<code>--set depth=6 --set kernel_size=3 --set width=32 --set resolution=16</code>" in rec
    )
    assert "<code>build_model(depth=6, kernel_size=3, width=32)\nRESOLUTION = 16</code>" in rec
    assert "<code>satadvisor analyze model.py --dataset digits --set depth=6" in rec
    # Full-run comparison rows: baseline vs this, with the change.
    row = re.search(r"<td>MACs / image</td>(.*?)</tr>", rec, re.S)
    assert row is not None
    assert re.findall(r">([^<>]+)</td>", row.group(1)) == ["4.1 M", "3.15 M", "0.77× (−23 %)"]
    row = re.search(r"<td>val accuracy \(chooses\)</td>(.*?)</tr>", rec, re.S)
    assert row is not None
    assert re.findall(r">([^<>]+)</td>", row.group(1)) == [
        "95.8 % ± 0.2 pt (3 seeds)", "96.0 % ± 0.2 pt (3 seeds)", "+0.2 pt [−0.05, +0.45] pt",
    ]  # fmt: skip
    assert '<td class="num">+0.2 pt [' in row.group(1)  # a tie is not coloured good
    row = re.search(r"<td>val per seed</td>(.*?)</tr>", rec, re.S)
    assert row is not None and "s0 95.9 % · s1 96.2 % · s2 95.9 %" in row.group(1)
    row = re.search(r"<td>test accuracy \(reported only\)</td>(.*?)</tr>", rec, re.S)
    assert row is not None
    assert re.findall(r">([^<>]+)</td>", row.group(1))[-1] == "−0.3 pt"
    assert re.search(r"<td>tail layers</td>.*?>3<.*?>1<.*?>-2<", rec, re.S)
    row = re.search(r"<td>evenness</td>(.*?)</tr>", rec, re.S)  # 0.61 + 0.02 → 0.74 + 0.02
    assert row is not None
    assert re.findall(r">([^<>]+)</td>", row.group(1)) == ["0.630", "0.760", "+0.130"]
    # Only the changed knob is highlighted against the baseline.
    assert re.findall(r'<span class="kchip changed"[^>]*>([^<]*)</span>', rec) == ["depth=6"]


def test_before_after_profiles_mark_the_tails(summary: StudySummary) -> None:
    page = render_study(summary)

    def figure(name: str) -> dict[str, Any]:
        blob = re.search(rf'id="{name}-data">(.*?)</script>', page, re.S)
        assert blob is not None
        return dict(json.loads(blob.group(1)))

    before, after = figure("fig-before-1"), figure("fig-after-1")
    go.Figure(before), go.Figure(after)
    tails = {t["name"]: t["x"] for t in before["data"]}
    assert tails["tail"] == ["conv6", "conv7", "conv8"]
    assert {t["name"]: t["x"] for t in after["data"]}["tail"] == ["conv6"]
    # Same y scale on both sides, so the drop reads correctly.
    assert before["layout"]["yaxis"]["range"] == after["layout"]["yaxis"]["range"]


def test_no_recommendation_says_keep_the_baseline_with_numbers() -> None:
    summary = revalidated(1, (0.941, 0.940, 0.944))
    assert summary.recommended == ()
    rec = _section(render_study(summary), "recommendation")
    assert (
        "Keep the baseline (depth=8 kernel_size=3 width=32 resolution=16): 95.8 % ± 0.2 pt "
        "(3 seeds) validation accuracy (test 95.3 %, reported only)"
    ) in rec
    assert "4.1 M MACs and 82 k parameters" in rec
    assert "None of the 2 validated alternatives" in rec
    assert 'id="fig-baseline-data"' in rec and "fig-after" not in rec


def test_one_seed_confirms_nothing_and_says_so() -> None:
    runs = [r for r in validation_runs(fixture_trials()) if r["seed"] == 0]
    summary = make_summary(runs=runs, validate_seeds=1)
    (rec,) = summary.recommended
    assert not rec.confirmed and rec.accuracy_delta > 0
    page = render_study(summary)
    section = _section(page, "recommendation")
    assert "Keep the baseline for now: no validated configuration is confirmed." in section
    assert "With one seed there is no interval, so nothing is confirmed" in section
    assert "<h3>Candidate (not confirmed): trial #1</h3>" in section
    assert '<span class="badge unconfirmed">not confirmed</span>' in section
    assert "Adopt" not in section and "more accurate" not in section
    assert "no interval" in _section(page, "validation")
    assert "--validate-seeds 1" in _section(page, "reproduce")


def test_more_accurate_only_with_a_confirmed_interval() -> None:
    # Trial 1 is +0.3 pt on average but worse on one seed: a tie, never "more accurate"
    summary = revalidated(1, (0.966, 0.958, 0.962))
    (rec,) = summary.recommended
    assert rec.comparison is not None
    assert rec.comparison.accuracy == "tie" and rec.accuracy_delta > 0
    section = _section(render_study(summary), "recommendation")
    assert "more accurate" not in section
    assert "accuracy: tie" in section
    # +0.3 pt on every seed: confirmed, and now badged more accurate
    summary = revalidated(1, (0.959, 0.963, 0.961))
    (rec,) = summary.recommended
    assert rec.comparison is not None
    assert rec.comparison.accuracy == "more accurate" and rec.confirmed
    section = _section(render_study(summary), "recommendation")
    assert '<span class="badge good">more accurate</span>' in section
    assert "confirmed more accurate" in section


def test_a_more_expensive_tie_is_a_tie() -> None:
    # Trial 3 made more expensive than the baseline and a little more accurate on average
    runs = validation_runs(fixture_trials())
    for run, v in zip([r for r in runs if r["trial"] == 3], (0.957, 0.963, 0.957), strict=True):
        run.update(val_accuracy=v, macs=9_000_000)
    summary = make_summary(runs=[r for r in runs if r["trial"] != 1])
    (rec,) = summary.recommended
    assert (rec.claim, rec.verdict) == ("more accurate", "tie")
    page = render_study(summary)
    section = _section(page, "recommendation")
    assert "<h3>Candidate (tie): trial #3</h3>" in section
    assert "A tie: the 95 % interval" in section and "contains 0" in section
    assert '<span class="badge good">more accurate</span>' not in page
    assert re.findall(r'<span class="badge role-([a-z]+)">', _section(page, "validation")) == [
        "baseline", "candidate",
    ]  # fmt: skip


def _not_learning(*numbers: int) -> list[dict[str, Any]]:
    """The fixture's trials with ``numbers`` pruned as proxies that did not learn."""
    trials = fixture_trials()
    for n in numbers:
        trials[n].update(state="pruned", status="not_learned")
    return trials


def test_proxies_that_did_not_learn_are_counted() -> None:
    summary = make_summary(_not_learning(9, 10))
    assert summary.not_learned == 2 and summary.counted_trials == 11
    page = render_study(summary)
    rec = _section(page, "recommendation")
    assert "2 proxies did not learn (validation accuracy not significantly above" in rec
    assert re.search(r"did not learn</div>\s*<div class=\"value\">2</div>", rec)
    table = _section(page, "trials")
    assert table.count('<span class="badge state-not-learned">not learned</span>') == 2


def test_trials_table_lists_every_trial_with_state_and_reason(summary: StudySummary) -> None:
    table = _section(render_study(summary), "trials")
    numbers = re.findall(r'<tr class="[^"]*">\s*<td class="num">(\d+)</td>', table)
    assert numbers == [str(i) for i in range(12)]
    assert "diverged: training loss became nan in epoch 2" in table
    assert "skipped: duplicate" in table
    assert '<span class="badge state-failed">failed</span>' in table
    assert '<span class="badge state-skipped">skipped</span>' in table
    assert "← #0" in table and "← #6" in table
    front_rows = re.findall(r'<tr class="front[^"]*">\s*<td class="num">(\d+)</td>', table)
    assert tuple(sorted(map(int, front_rows))) == summary.pareto
    assert re.search(r'<tr class="front recommended">\s*<td class="num">1</td>', table)


def test_validation_section_shows_spearman_and_records(summary: StudySummary) -> None:
    section = _section(render_study(summary), "validation")
    assert "ρ = 0.50" in section and "over 3 configurations" in section
    assert "carried over only partly" in section
    rows = re.findall(r'<span class="badge role-([a-z]+)">', section)
    assert rows == ["baseline", "recommended", "validated"]
    assert "91.5 % ± 0.2 pt (3 seeds)" in section and "92.1 %" in section  # val, proxy of #3
    assert "s0 92.1 % · s1 91.0 % · s2 91.5 %" not in section  # test is not shown per seed
    assert "s0 91.5 % · s1 91.7 % · s2 91.3 %" in section  # val per seed of #3
    assert "Spearman rank correlation of proxy and full-run validation accuracy" in section
    assert "the validation accuracy alone chooses" in section
    assert "Images per run: 1.2 k train, 238 val, 359 test." in section
    assert '<span class="badge good">confirmed</span>' in section


def test_reproduce_section_rebuilds_the_commands(summary: StudySummary) -> None:
    section = _section(render_study(summary), "reproduce")
    assert (
        "<code>satadvisor optimize model.py --budget 12 --strategy guided --objectives "
        "accuracy,macs --study-name vgg-digits --storage sqlite:///studies/vgg-digits.db "
        "--dataset digits --epochs 5 --batch-size 64 --lr 0.05 --seed 0 --full-epochs 20 "
        "--validate-top 2</code>"
    ) in section
    assert (
        "<code>satadvisor report vgg-digits --storage sqlite:///studies/vgg-digits.db</code>"
        in section
    )
    assert "<dt>strategy</dt><dd>guided</dd>" in section
    assert "depth ∈ [4, 6, 8, 10]" in section


def test_recorded_command_and_pinned_knobs() -> None:
    # Resolution pinned (--set resolution=16): outside the space, constant over all trials.
    trials = fixture_trials()
    for t in trials:
        t["knobs"]["resolution"] = 16
    space = {k: v for k, v in CHOICES.items() if k != "resolution"}
    storage = "postgresql://me:***@db.example/studies"
    summary = make_summary(trials, storage=storage, space=space)
    section = _section(render_study(summary), "reproduce")
    assert "--set resolution=16 --full-epochs 20" in section
    assert "<dt>pinned knobs</dt><dd>resolution=16</dd>" in section
    assert "The storage password is shown as ***" in section
    summary = make_summary(trials, storage=storage, space=space, command="satadvisor optimize x")
    section = _section(render_study(summary), "reproduce")
    assert "<code>satadvisor optimize x</code>" in section
    assert "rebuilt from the stored settings" not in section


def test_summary_without_validation_or_complete_trials_renders(tmp_path: Path) -> None:
    s = empty_summary()
    index = write_study(s, tmp_path / "r")
    page = index.read_text("utf-8")
    assert "No trial of the study completed (1 failed; the reasons are in All trials" in page
    assert "<span>1 trial of 12</span>" in page
    assert page.count("No complete trial yet.") == 2  # Pareto and history
    assert "Not enough to estimate importances: 0 complete trials" in page
    assert "No configuration was retrained in full." in page
    assert "ρ = —" in page
    assert 'type="application/json"' not in page  # no charts at all
    rows = list(csv.reader(io.StringIO((tmp_path / "r" / "trials.csv").read_text("utf-8"))))
    assert rows[1][-1] == "out of GPU memory"


def test_proxy_only_study_says_nothing_is_validated() -> None:
    summary = make_summary(runs=[])
    assert summary.validation == summary.recommended == () and summary.rank_agreement is None
    page = render_study(summary)
    assert "No configuration was retrained in full yet, so nothing is recommended" in page
    assert "--full-epochs" not in page
    assert 'id="fig-pareto-data"' in page


def test_a_new_study_without_trials_or_settings_renders() -> None:
    bare = summary_mod.study_summary(optuna.create_study(study_name="x"))
    assert (bare.trials, bare.budget, bare.settings.model) == ((), None, None)
    # a loaded study.json with only its schema and name reads the same
    assert render_study({"schema": STUDY_SCHEMA, "study_name": "x"}) == render_study(bare)
    page = render_study(bare)
    assert "The study has no trials yet." in page
    assert "The study has no complete trial yet: rerun the same satadvisor optimize" in page
    assert "<code>satadvisor optimize --study-name x</code>" in page


# ---------------------------------------------------------------------------------------------
# Escaping


def _hostile() -> StudySummary:
    trials = fixture_trials()
    for t in trials:
        t["knobs"]["activation"] = EVIL
    runs = validation_runs(trials)
    for r in runs:
        r["saturation"][EVIL] = 0.3
    trials[4]["reason"] = EVIL
    trials[0]["source"] = EVIL  # an unknown source falls into "other"
    settings = {**SETTINGS, "model": f"/tmp/{EVIL}.py", "dataset": f"imagefolder:{EVIL}"}
    return summary_mod.study_summary(
        study(trials, runs, name=EVIL, settings=settings, space={**CHOICES, EVIL: [EVIL, "relu"]}),
        tolerance=TOLERANCE,
        storage=f"sqlite:///{EVIL}.db",
    )


def test_user_strings_are_escaped_everywhere_including_plot_json() -> None:
    page = render_study(_hostile())
    assert EVIL not in page
    assert html.escape(EVIL) in page
    n_figures = page.count('type="application/json"')
    assert n_figures == 5
    assert page.count("<script") == page.count("</script>") == 2 + n_figures
    blob = re.search(r'id="fig-pareto-data">(.*?)</script>', page, re.S)
    assert blob is not None
    knobs = [
        c[2] for trace in json.loads(blob.group(1))["data"] for c in trace.get("customdata", [])
    ]
    assert all(html.escape(EVIL, quote=False) in k for k in knobs)
    # The --set line quotes the value for the shell; the page escapes it for HTML.
    assert "--set &#39;activation=&lt;script&gt;alert(1)&lt;/script&gt;&#39;" in page
    assert "activation=&#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;" in page  # snippet repr


# ---------------------------------------------------------------------------------------------
# Importances: one-way ANOVA η², normalised


def test_param_importances_hand_computed() -> None:
    # y = 1, 2, 3, 4 (mean 2.5, SS_total = 5). a groups {1, 2} and {3, 4}: SS_between = 4 →
    # η² = 0.8. b groups {1, 3} and {2, 4}: SS_between = 1 → η² = 0.2. Normalised: unchanged.
    knobs = [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    scores = param_importances(knobs, [1.0, 2.0, 3.0, 4.0])
    assert list(scores) == ["a", "b"]
    assert scores["a"] == pytest.approx(0.8) and scores["b"] == pytest.approx(0.2)
    # A knob with one value explains nothing and is left out; the rest is renormalised.
    knobs3 = [{**k, "c": 7} for k in knobs]
    assert param_importances(knobs3, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(scores)
    assert param_importances(knobs, [2.0, 2.0, 2.0, 2.0]) == {}
    assert param_importances(knobs[:2], [1.0, 2.0]) == {}


def test_param_importances_match_scikit_learn_anova(summary: StudySummary) -> None:
    # η² from the F statistic of sklearn's one-way ANOVA: η² = F·df_b / (F·df_b + df_w).
    rows = [t for t in summary.trials if t.state == "complete"]
    y = np.array([t.accuracy for t in rows])
    eta = {}
    for knob in KNOBS:
        groups = np.array([t.knobs[knob] for t in rows])
        k, n = len(set(groups.tolist())), len(y)
        f, _ = f_classif(y[:, None], groups)
        eta[knob] = f[0] * (k - 1) / (f[0] * (k - 1) + (n - k))
    total = sum(eta.values())
    expected = {knob: value / total for knob, value in eta.items()}
    data = _plots_study.importance_data(summary)
    assert data is not None and data.n_trials == 10
    assert dict(zip(data.knobs, data.importance, strict=True)) == pytest.approx(expected)
    assert list(data.importance) == sorted(data.importance, reverse=True)
    assert sum(data.importance) == pytest.approx(1.0)
    fig = _plots_study.importance_figure(data)
    go.Figure(fig)
    assert fig["data"][0]["y"] == list(data.knobs)


# ---------------------------------------------------------------------------------------------
# Plot data


def test_pareto_front_brute_force() -> None:
    acc = [0.9, 0.95, 0.93, 0.95, 0.80]
    macs = [1.0, 3.0, 3.0, 2.0, 0.5]
    # 1 dominated by 3 (same accuracy, cheaper); 2 dominated by 3.
    assert _plots_study.pareto_front(acc, macs) == [True, False, False, True, True]


def test_pareto_data_and_figure(summary: StudySummary) -> None:
    data = _plots_study.pareto_data(summary)
    assert data is not None
    assert data.number == (0, 1, 2, 3, 5, 6, 7, 9, 10, 11)  # complete trials only
    assert data.front_numbers == (3, 5, 10, 1, 0, 2, 7)  # cheapest first
    assert data.baseline == 0
    assert data.knobs[1] == "depth=6 kernel_size=3 width=32 resolution=16"
    fig = _plots_study.pareto_figure(data)
    go.Figure(fig)
    line = fig["data"][0]
    assert line["name"] == "Pareto front"
    assert line["x"] == [880_000, 1_020_000, 1_790_000, 3_150_000, 4_100_000, 9_220_000, 18_400_000]
    by_name = {t["name"]: t for t in fig["data"][1:]}
    assert set(by_name) == {"baseline", "rule candidate", "sampler", "random"}
    assert [c[0] for c in by_name["rule candidate"]["customdata"]] == [1, 2, 6, 11]
    assert [c[1] for c in by_name["rule candidate"]["customdata"]] == [
        "rule:efficiency", "rule:performance", "rule:efficiency", "rule:performance",
    ]  # fmt: skip
    # Front members are ringed (wider outline) — trial 6 is dominated, 1 is not.
    widths = by_name["rule candidate"]["marker"]["line"]["width"]
    assert widths == [2, 2, 1, 1]
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert fig["layout"]["annotations"][0]["x"] == pytest.approx(np.log10(4_100_000))


def test_pareto_falls_back_to_computed_front(summary: StudySummary) -> None:
    data = _plots_study.pareto_data(dataclasses.replace(summary, pareto=()))
    assert data is not None
    assert tuple(sorted(data.front_numbers)) == summary.pareto


def test_history_data_has_the_running_best() -> None:
    pruned = _trial(12, "sampler", (4, 3, 16, 12), state="pruned", accuracy=0.5)
    data = _plots_study.history_data(make_summary([*fixture_trials(), pruned]))
    assert data is not None
    assert data.number == (0, 1, 2, 3, 5, 6, 7, 9, 10, 11)
    assert data.best == (0.962, 0.962, 0.971, 0.971, 0.971, 0.971, 0.974, 0.974, 0.974, 0.974)
    assert data.pruned_number == (12,) and data.pruned_accuracy == (0.5,)
    fig = _plots_study.history_figure(data)
    go.Figure(fig)
    assert fig["data"][0]["line"]["shape"] == "hv"
    assert fig["data"][-1]["name"] == "pruned"


def test_no_plot_data_without_complete_trials() -> None:
    s = empty_summary()
    assert _plots_study.pareto_data(s) is None
    assert _plots_study.history_data(s) is None
    assert _plots_study.importance_data(s) is None
    assert _plots_study.run_profile_data(None) is None


def test_source_category() -> None:
    assert [
        _plots_study.source_category(s)
        for s in ("baseline", "rule:efficiency", "rule:width", "sampler", "random", "x", None)
    ] == ["baseline", "rule", "rule", "sampler", "random", "other", "sampler"]


# ---------------------------------------------------------------------------------------------
# Real browser

try:
    from test_report import _browser, _headless
except ImportError:  # run from another rootdir: the same helpers, kept minimal
    import shutil
    import subprocess

    def _browser() -> str | None:
        return next(
            (
                p
                for n in ("chromium", "chromium-browser", "google-chrome")
                if (p := shutil.which(n))
            ),
            None,
        )

    def _headless(browser: str, index: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={index.parent.parent / 'profile'}",
             "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", *extra,
             index.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["study", "hostile", "empty"])
def test_page_renders_charts_in_a_real_browser(tmp_path: Path, variant: str) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    s = {"study": make_summary, "hostile": _hostile, "empty": empty_summary}[variant]()
    index = write_study(s, tmp_path / "report")
    expected = render_study(s).count('type="application/json"')
    assert expected == {"study": 5, "hostile": 5, "empty": 0}[variant]
    result = _headless(browser, index, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    drawn = re.findall(
        r'<div class="plot[^"]*" id="(fig-[a-z0-9-]+)"[^>]*>\s*<div[^>]*plot-container', dom
    )
    assert len(drawn) == expected, drawn
    assert dom.count('class="main-svg"') >= expected
    assert 'class="plot plot-missing"' not in dom
    assert EVIL not in dom
    console = [
        line
        for line in result.stderr.splitlines()
        if "CONSOLE" in line and ("index.html" in line or "plotly.min.js" in line)
    ]
    assert console == [], console


# ---------------------------------------------------------------------------------------------
# The contract with the search module: a real Optuna study → study_summary → page


def test_a_sqlite_study_summarises_and_renders_as_in_memory(tmp_path: Path) -> None:
    # User attributes go through JSON in an RDB storage: the summary is the same record.
    url = f"sqlite:///{tmp_path / 'real.db'}"
    s = summary_mod.study_summary(study(storage=url), tolerance=TOLERANCE, storage=STORAGE)
    assert s == make_summary()
    index = write_study(s, tmp_path / "real")
    page = index.read_text("utf-8")
    assert "Adopt depth=6 kernel_size=3 width=32 resolution=16" in page
    assert page.count('type="application/json"') == 5
    rows = list(csv.reader(io.StringIO((tmp_path / "real" / "trials.csv").read_text("utf-8"))))
    assert len(rows) == 13 and rows[9][-1] == "skipped: duplicate"


# ---------------------------------------------------------------------------------------------
# The terminal summary of `satadvisor optimize` / `satadvisor report`


def test_terminal_summary_shows_what_chose_and_the_verdict() -> None:
    from satadvisor.cli import format_study

    summary = make_summary(_not_learning(9, 10))
    text = format_study(summary, Path("reports/vgg-digits/index.html"))
    lines = text.splitlines()
    assert lines[0].endswith("; 2 proxies did not learn (left out)")
    assert "baseline   depth=8 kernel_size=3 width=32 resolution=16: val acc 0.958 ± 0.002 " in text
    assert "test acc 0.953 (reported only)" in lines[1]
    assert lines[2].startswith("  recommend  depth=6 kernel_size=3 width=32 resolution=16: val")
    assert lines[3].strip() == (
        "Δ val +0.002, 95 % interval [-0.000, +0.004]: confirmed (accuracy tie, within the "
        "-0.005 tolerance)"
    )
    assert lines[4].strip().startswith("--set depth=6")
    # one seed: a candidate, never a recommendation, and the line says why
    runs = [r for r in validation_runs(fixture_trials()) if r["seed"] == 0]
    text = format_study(make_summary(runs=runs), Path("index.html"))
    assert "  candidate  depth=6" in text and "recommend " not in text
    assert "Δ val +0.003: not confirmed (one seed, no interval)" in text
    assert "nothing is confirmed with one seed: keep the baseline" in text
    assert "--set depth=6" not in text
