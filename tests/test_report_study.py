"""The study report: files, page content and order, escaping, importances, plot data, browser."""

from __future__ import annotations

import copy
import csv
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
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

EVIL = "<script>alert(1)</script>"
TOLERANCE = 0.005
KNOBS = ("depth", "kernel_size", "width", "resolution")


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
    skipped: str | None = None,
) -> dict[str, Any]:
    config = dict(zip(KNOBS, knobs, strict=True))
    sat, _ = _profile(config["depth"], tail, 0.5) if state == "complete" else ({}, [])
    status = {"complete": "completed", "fail": "failed", "pruned": "pruned"}[state]
    if skipped:
        state, status, reason = "pruned", "duplicate", f"skipped: {skipped}"
    return {
        "number": number,
        "state": state,
        "status": status,
        "counted": not skipped,
        "source": source,
        "knobs": config,
        "params_searched": config,
        "accuracy": accuracy,
        "macs": macs,
        "params": None if macs is None else macs // 50,
        "tail_length": tail if state == "complete" else None,
        "evenness": evenness,
        "saturation": sat,
        "findings": ["tail"] if tail else [],
        "reason": reason,
        "parent": parent,
        "retry_of": None,
        "wall_time": 31.5 if state == "complete" else None,
        "values": [accuracy, float(macs)] if state == "complete" and macs else None,
    }


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
            "params": trial["params"],
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


def make_summary() -> dict[str, Any]:
    """A realistic ``satadvisor.study/2`` summary: 12 trials, 3 full runs, one recommendation."""
    t = [
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
        _trial(8, "sampler", (6, 3, 16, 16), state="fail", skipped="duplicate"),
        _trial(9, "random", (8, 5, 16, 12), accuracy=0.930, macs=1_510_000, tail=2, evenness=0.66),
        _trial(10, "sampler", (6, 3, 32, 12), accuracy=0.955, macs=1_790_000, evenness=0.78),
        _trial(11, "rule:performance", (4, 3, 32, 24), accuracy=0.961, macs=4_950_000,
               evenness=0.82, parent=6),
    ]  # fmt: skip
    complete = [x for x in t if x["state"] == "complete"]
    front = _plots_study.pareto_front(
        [x["accuracy"] for x in complete], [x["macs"] for x in complete]
    )
    records = summary_mod.aggregate(validation_runs(t))
    ranked = [r for r in records if r["val_accuracy"] is not None]
    return {
        "schema": summary_mod.SCHEMA,
        "study_name": "vgg-digits",
        "settings": {
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
        },
        "space": {
            "depth": [4, 6, 8, 10],
            "kernel_size": [3, 5, 7],
            "width": [16, 32, 64],
            "resolution": [12, 16, 24, 32],
        },
        "objectives": ["accuracy", "macs"],
        "budget": 12,
        "counted_trials": 11,
        "trials": t,
        "pareto": [x["number"] for x, f in zip(complete, front, strict=True) if f],
        "validation": records,
        "recommended": summary_mod.recommended(records, tolerance=TOLERANCE),
        "tolerance": TOLERANCE,
        "validate_seeds": 3,
        "not_learned": 0,
        "rank_agreement": summary_mod.spearman(
            [r["proxy_accuracy"] for r in ranked], [r["val_accuracy"] for r in ranked]
        ),
        "storage": "sqlite:///studies/vgg-digits.db",
    }


def empty_summary() -> dict[str, Any]:
    """A study that ran nothing yet: one failed baseline, no validation."""
    s = make_summary()
    s.update(
        trials=[_trial(0, "baseline", (8, 3, 32, 16), state="fail", reason="out of GPU memory")],
        pareto=[],
        validation=[],
        recommended=[],
        rank_agreement=None,
        counted_trials=1,
    )
    return s


@pytest.fixture()
def summary() -> dict[str, Any]:
    return make_summary()


def test_fixture_is_consistent_with_the_search_module(summary: dict[str, Any]) -> None:
    assert STUDY_SCHEMA == summary_mod.SCHEMA
    # Trial 1 (depth 6): validation +0.2 pt over the baseline, paired over 3 seeds, with fewer
    # MACs → the only recommendation, although its test accuracy is lower.
    (rec,) = summary["recommended"]
    assert rec["trial"] == 1 and rec["accuracy_delta"] == pytest.approx(0.002)
    assert rec["test_delta"] == pytest.approx(-0.003)
    # deltas 0.003, 0.002, 0.001: sd 0.001, t(0.975, 2) = 4.3027 → ±0.00248 around 0.002
    assert rec["comparison"]["low"] == pytest.approx(0.002 - 4.302653 * 0.001 / 3**0.5)
    assert rec["comparison"]["accuracy"] == "tie"  # the interval contains 0
    assert (rec["claim"], rec["verdict"], rec["confirmed"]) == ("cheaper", "confirmed", True)
    assert rec["macs_ratio"] == pytest.approx(3_150_000 / 4_100_000)
    # Ranks proxy (3, 2, 1) vs full-run val (2, 3, 1): d² = 1 + 1 + 0 → ρ = 1 − 6·2 / (3·8) = 0.5.
    assert summary["rank_agreement"] == pytest.approx(0.5)
    # Front by hand: 3 (cheapest), 5, 10, 1, 0, 2, 7 (most accurate); 6, 9, 11 dominated.
    assert summary["pareto"] == [0, 1, 2, 3, 5, 7, 10]


# ---------------------------------------------------------------------------------------------
# Files


def test_write_study_writes_the_four_files(tmp_path: Path, summary: dict[str, Any]) -> None:
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
    assert json.loads((out / "study.json").read_text("utf-8")) == summary
    assert (out / "study.json").read_text("utf-8").startswith('{\n  "schema"')
    page = index.read_text("utf-8")
    assert '<script src="plotly.min.js"></script>' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_trials_csv_has_one_row_per_trial_with_knob_columns(summary: dict[str, Any]) -> None:
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


def test_non_finite_values_become_null(tmp_path: Path, summary: dict[str, Any]) -> None:
    summary["trials"][3]["evenness"] = float("nan")
    summary["validation"][2]["wall_time"] = float("inf")
    write_study(summary, tmp_path)

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads((tmp_path / "study.json").read_text("utf-8"), parse_constant=reject)
    assert data["trials"][3]["evenness"] is None
    assert data["validation"][2]["wall_time"] is None
    page = (tmp_path / "index.html").read_text("utf-8")
    assert "NaN" not in page and "Infinity" not in page


def test_unknown_schema_is_a_usage_error(tmp_path: Path, summary: dict[str, Any]) -> None:
    summary["schema"] = "satadvisor.study/9"
    with pytest.raises(UsageError, match=r"study/9.*satadvisor report"):
        write_study(summary, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_failed_write_keeps_the_previous_report(
    tmp_path: Path, summary: dict[str, Any], monkeypatch: pytest.MonkeyPatch
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


def test_sections_in_the_required_order(summary: dict[str, Any]) -> None:
    page = render_study(summary)
    assert re.findall(r'<section id="([a-z]+)"', page) == [
        "recommendation", "pareto", "history", "importance", "trials", "validation", "reproduce",
    ]  # fmt: skip
    for figure in ("fig-before-1", "fig-after-1", "fig-pareto", "fig-history", "fig-importance"):
        assert f'<script type="application/json" id="{figure}-data">' in page


def test_recommendation_shows_set_line_snippet_and_numbers(summary: dict[str, Any]) -> None:
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


def test_before_after_profiles_mark_the_tails(summary: dict[str, Any]) -> None:
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


def _revalidate(summary: dict[str, Any], trial: int, val: tuple[float, ...]) -> None:
    """Give ``trial`` other validation accuracies (same test ones) and recompute the summary."""
    runs = validation_runs(summary["trials"])
    for run, v in zip([r for r in runs if r["trial"] == trial], val, strict=True):
        run["val_accuracy"] = v
    summary["validation"] = summary_mod.aggregate(runs)
    summary["recommended"] = summary_mod.recommended(summary["validation"], tolerance=TOLERANCE)


def test_no_recommendation_says_keep_the_baseline_with_numbers(summary: dict[str, Any]) -> None:
    _revalidate(summary, 1, (0.941, 0.940, 0.944))
    assert summary["recommended"] == []
    rec = _section(render_study(summary), "recommendation")
    assert (
        "Keep the baseline (depth=8 kernel_size=3 width=32 resolution=16): 95.8 % ± 0.2 pt "
        "(3 seeds) validation accuracy (test 95.3 %, reported only)"
    ) in rec
    assert "4.1 M MACs and 82 k parameters" in rec
    assert "None of the 2 validated alternatives" in rec
    assert 'id="fig-baseline-data"' in rec and "fig-after" not in rec


def test_one_seed_confirms_nothing_and_says_so(summary: dict[str, Any]) -> None:
    runs = [r for r in validation_runs(summary["trials"]) if r["seed"] == 0]
    summary["validation"] = summary_mod.aggregate(runs)
    summary["recommended"] = summary_mod.recommended(summary["validation"], tolerance=TOLERANCE)
    summary["validate_seeds"] = 1
    (rec,) = summary["recommended"]
    assert not rec["confirmed"] and rec["accuracy_delta"] > 0
    page = render_study(summary)
    section = _section(page, "recommendation")
    assert "Keep the baseline for now: no validated configuration is confirmed." in section
    assert "With one seed there is no interval, so nothing is confirmed" in section
    assert "<h3>Candidate (not confirmed): trial #1</h3>" in section
    assert '<span class="badge unconfirmed">not confirmed</span>' in section
    assert "Adopt" not in section and "more accurate" not in section
    assert "no interval" in _section(page, "validation")
    assert "--validate-seeds 1" in _section(page, "reproduce")


def test_more_accurate_only_with_a_confirmed_interval(summary: dict[str, Any]) -> None:
    # Trial 1 is +0.3 pt on average but worse on one seed: a tie, never "more accurate"
    _revalidate(summary, 1, (0.966, 0.958, 0.962))
    (rec,) = summary["recommended"]
    assert rec["comparison"]["accuracy"] == "tie" and rec["accuracy_delta"] > 0
    section = _section(render_study(summary), "recommendation")
    assert "more accurate" not in section
    assert "accuracy: tie" in section
    # +0.3 pt on every seed: confirmed, and now badged more accurate
    _revalidate(summary, 1, (0.959, 0.963, 0.961))
    (rec,) = summary["recommended"]
    assert rec["comparison"]["accuracy"] == "more accurate" and rec["confirmed"]
    section = _section(render_study(summary), "recommendation")
    assert '<span class="badge good">more accurate</span>' in section
    assert "confirmed more accurate" in section


def test_a_more_expensive_tie_is_a_tie(summary: dict[str, Any]) -> None:
    # Trial 3 made more expensive than the baseline and a little more accurate on average
    runs = validation_runs(summary["trials"])
    for run, v in zip([r for r in runs if r["trial"] == 3], (0.957, 0.963, 0.957), strict=True):
        run.update(val_accuracy=v, macs=9_000_000)
    runs = [r for r in runs if r["trial"] != 1]
    summary["validation"] = summary_mod.aggregate(runs)
    summary["recommended"] = summary_mod.recommended(summary["validation"], tolerance=TOLERANCE)
    (rec,) = summary["recommended"]
    assert (rec["claim"], rec["verdict"]) == ("more accurate", "tie")
    page = render_study(summary)
    section = _section(page, "recommendation")
    assert "<h3>Candidate (tie): trial #3</h3>" in section
    assert "A tie: the 95 % interval" in section and "contains 0" in section
    assert '<span class="badge good">more accurate</span>' not in page
    assert re.findall(r'<span class="badge role-([a-z]+)">', _section(page, "validation")) == [
        "baseline", "candidate",
    ]  # fmt: skip


def test_proxies_that_did_not_learn_are_counted(summary: dict[str, Any]) -> None:
    for n in (9, 10):
        summary["trials"][n].update(state="pruned", status="not_learned")
    summary["not_learned"] = 2
    page = render_study(summary)
    rec = _section(page, "recommendation")
    assert "2 proxies did not learn (validation accuracy not significantly above" in rec
    assert re.search(r"did not learn</div>\s*<div class=\"value\">2</div>", rec)
    table = _section(page, "trials")
    assert table.count('<span class="badge state-not-learned">not learned</span>') == 2


def test_trials_table_lists_every_trial_with_state_and_reason(summary: dict[str, Any]) -> None:
    table = _section(render_study(summary), "trials")
    numbers = re.findall(r'<tr class="[^"]*">\s*<td class="num">(\d+)</td>', table)
    assert numbers == [str(i) for i in range(12)]
    assert "diverged: training loss became nan in epoch 2" in table
    assert "skipped: duplicate" in table
    assert '<span class="badge state-failed">failed</span>' in table
    assert '<span class="badge state-skipped">skipped</span>' in table
    assert "← #0" in table and "← #6" in table
    front_rows = re.findall(r'<tr class="front[^"]*">\s*<td class="num">(\d+)</td>', table)
    assert sorted(map(int, front_rows)) == summary["pareto"]
    assert re.search(r'<tr class="front recommended">\s*<td class="num">1</td>', table)


def test_validation_section_shows_spearman_and_records(summary: dict[str, Any]) -> None:
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


def test_reproduce_section_rebuilds_the_commands(summary: dict[str, Any]) -> None:
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


def test_recorded_command_and_pinned_knobs(summary: dict[str, Any]) -> None:
    # Resolution pinned (--set resolution=16): outside the space, constant over all trials.
    del summary["space"]["resolution"]
    for t in summary["trials"]:
        t["knobs"]["resolution"] = 16
    summary["storage"] = "postgresql://me:***@db.example/studies"
    section = _section(render_study(summary), "reproduce")
    assert "--set resolution=16 --full-epochs 20" in section
    assert "<dt>pinned knobs</dt><dd>resolution=16</dd>" in section
    assert "The storage password is shown as ***" in section
    summary["command"] = "satadvisor optimize --budget 12"
    section = _section(render_study(summary), "reproduce")
    assert "<code>satadvisor optimize --budget 12</code>" in section
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


def test_proxy_only_study_says_nothing_is_validated(summary: dict[str, Any]) -> None:
    summary.update(validation=[], recommended=[], rank_agreement=None)
    page = render_study(summary)
    assert "No configuration was retrained in full yet, so nothing is recommended" in page
    assert "--full-epochs" not in page
    assert 'id="fig-pareto-data"' in page


def test_bare_summary_with_missing_optional_keys_renders() -> None:
    page = render_study({"schema": STUDY_SCHEMA, "study_name": "x"})
    assert "The study has no trials yet." in page
    assert "The study has no complete trial yet: rerun the same satadvisor optimize" in page
    assert "<code>satadvisor optimize --study-name x</code>" in page


# ---------------------------------------------------------------------------------------------
# Escaping


def _hostile() -> dict[str, Any]:
    s = make_summary()
    s["study_name"] = EVIL
    s["settings"]["model"] = f"/tmp/{EVIL}.py"
    s["settings"]["dataset"] = f"imagefolder:{EVIL}"
    s["storage"] = f"sqlite:///{EVIL}.db"
    for t in s["trials"]:
        t["knobs"]["activation"] = EVIL
    s["trials"][4]["reason"] = EVIL
    s["trials"][0]["source"] = EVIL  # an unknown source falls into "other"
    for r in s["validation"]:
        r["knobs"]["activation"] = EVIL
        r["saturation"][EVIL] = 0.3
    s["recommended"] = summary_mod.recommended(s["validation"], tolerance=TOLERANCE)
    s["space"][EVIL] = [EVIL, "relu"]
    return s


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


def test_param_importances_match_scikit_learn_anova(summary: dict[str, Any]) -> None:
    # η² from the F statistic of sklearn's one-way ANOVA: η² = F·df_b / (F·df_b + df_w).
    rows = [t for t in summary["trials"] if t["state"] == "complete"]
    y = np.array([t["accuracy"] for t in rows])
    eta = {}
    for knob in KNOBS:
        groups = np.array([t["knobs"][knob] for t in rows])
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


def test_pareto_data_and_figure(summary: dict[str, Any]) -> None:
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


def test_pareto_falls_back_to_computed_front(summary: dict[str, Any]) -> None:
    stored = summary.pop("pareto")
    data = _plots_study.pareto_data(summary)
    assert data is not None
    assert sorted(data.front_numbers) == stored


def test_history_data_has_the_running_best(summary: dict[str, Any]) -> None:
    summary["trials"].append(
        {**_trial(12, "sampler", (4, 3, 16, 12)), "state": "pruned", "accuracy": 0.5}
    )
    data = _plots_study.history_data(summary)
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
    index = write_study(copy.deepcopy(s), tmp_path / "report")
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


def test_real_optuna_study_summary_renders(tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from satadvisor.search.record import KEY, TrialRecord

    fixture = make_summary()
    study = optuna.create_study(study_name="real", directions=["maximize", "minimize"])
    dists = {k: CategoricalDistribution(v) for k, v in fixture["space"].items()}
    for t in fixture["trials"]:
        complete = t["state"] == "complete"
        rec = TrialRecord(
            knobs=dict(t["knobs"]),
            source=t["source"],
            status=t["status"],
            parent=t["parent"],
            reason=t["reason"],
            accuracy=t["accuracy"],
            macs=t["macs"],
            params=t["params"],
            saturation=t["saturation"],
            tail=tuple(f"conv{i}" for i in range(t["tail_length"] or 0)),
            evenness=t["evenness"],
            findings=tuple(t["findings"]),
        )
        attrs = {KEY: rec.to_dict()}
        states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
        study.add_trial(
            create_trial(
                state=states.get(t["state"], TrialState.FAIL),
                values=[t["accuracy"], float(t["macs"])] if complete else None,
                params=dict(t["knobs"]),
                distributions=dists,
                user_attrs=attrs,
            )
        )
    for i, record in enumerate(validation_runs(fixture["trials"])):
        study.set_user_attr(f"{summary_mod.VALIDATION_PREFIX}{i}", record)
    # a record of a version that chose on the test set (no seed) is left out
    study.set_user_attr(f"{summary_mod.VALIDATION_PREFIX}old", {"trial": 5, "test_accuracy": 1})
    for key in ("settings", "space", "objectives", "budget"):
        study.set_user_attr(key, fixture[key])
    s = summary_mod.study_summary(study, tolerance=TOLERANCE, extra={"storage": "sqlite:///x.db"})
    assert s["pareto"] == fixture["pareto"]
    assert [r["trial"] for r in s["recommended"]] == [1]
    assert s["validation"] == fixture["validation"]
    assert s["rank_agreement"] == pytest.approx(0.5)
    index = write_study(s, tmp_path / "real")
    page = index.read_text("utf-8")
    assert "Adopt depth=6 kernel_size=3 width=32 resolution=16" in page
    assert page.count('type="application/json"') == 5
    rows = list(csv.reader(io.StringIO((tmp_path / "real" / "trials.csv").read_text("utf-8"))))
    assert len(rows) == 13 and rows[9][-1] == "skipped: duplicate"


# ---------------------------------------------------------------------------------------------
# The terminal summary of `satadvisor optimize` / `satadvisor report`


def test_terminal_summary_shows_what_chose_and_the_verdict(summary: dict[str, Any]) -> None:
    from satadvisor.cli import format_study

    summary["not_learned"] = 2
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
    runs = [r for r in validation_runs(summary["trials"]) if r["seed"] == 0]
    summary["validation"] = summary_mod.aggregate(runs)
    summary["recommended"] = summary_mod.recommended(summary["validation"], tolerance=TOLERANCE)
    text = format_study(summary, Path("index.html"))
    assert "  candidate  depth=6" in text and "recommend " not in text
    assert "Δ val +0.003: not confirmed (one seed, no interval)" in text
    assert "nothing is confirmed with one seed: keep the baseline" in text
    assert "--set depth=6" not in text
