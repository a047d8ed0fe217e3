"""The study page: a :class:`~satadvisor.search.study_record.StudySummary` → view context →
``index.html`` + ``study.json`` + ``trials.csv``.

Everything shown is computed here (sentences in :mod:`._study_text`, command lines in
:mod:`._study_commands`), so the template stays free of logic; the charts come from
:mod:`._plots_study` in two steps (data, then figure).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from satadvisor.report import _plots_study
from satadvisor.report._analysis import _csv_cell
from satadvisor.report._page import (
    finite,
    fmt_change,
    fmt_count,
    fmt_fraction,
    fmt_percent,
    fmt_ratio,
    fmt_value,
    render_page,
    to_json,
    write_bundle,
)
from satadvisor.report._study_commands import (
    analyze_command,
    model_label,
    model_snippet,
    reproduce,
    set_line,
)
from satadvisor.report._study_text import (
    VERDICT_BADGE,
    agreement,
    fmt_interval,
    fmt_points,
    fmt_spread,
    not_learned_note,
    per_seed,
    selection_note,
    state_name,
    verdict,
    verdict_reason,
)
from satadvisor.search.study_record import (
    SCHEMA,
    Comparison,
    Recommendation,
    StudySummary,
    TrialRow,
    ValidatedConfig,
)

#: The schema of ``study.json`` (defined once, in :mod:`satadvisor.search.study_record`).
STUDY_SCHEMA = SCHEMA

TRIAL_HEAD = ("number", "state", "source")
TRIAL_TAIL = ("accuracy", "macs", "params", "tail_length", "evenness", "reason")
"""``trials.csv`` columns: :data:`TRIAL_HEAD`, one column per knob, then :data:`TRIAL_TAIL`."""


def as_summary(summary: StudySummary | Mapping[str, Any]) -> StudySummary:
    """The record of ``summary``; a loaded ``study.json`` dict is read with ``from_dict``
    (another schema: a one-line :class:`~satadvisor.errors.UsageError`)."""
    return summary if isinstance(summary, StudySummary) else StudySummary.from_dict(summary)


def write_study(
    summary: StudySummary | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    single_file: bool = False,
) -> Path:
    """Write the report of one study into ``out_dir``; return ``out_dir/index.html``.

    Writes ``index.html``, ``study.json`` (``summary.to_dict()``, indent 2, NaN/inf as null),
    ``trials.csv`` (see :func:`trials_csv`) and ``plotly.min.js`` (``single_file``: plotly is
    inlined into ``index.html`` instead, which then opens on its own), rendered in memory and
    swapped in atomically (a failure leaves the previous report as it was). Raises
    :class:`~satadvisor.errors.UsageError` for a dict of another schema and
    :class:`~satadvisor.errors.OutputError` when ``out_dir`` cannot be written.
    """
    s = as_summary(summary)
    files = {
        "index.html": render_study(s, single_file=single_file),
        "study.json": to_json(s.to_dict(), indent=2) + "\n",
        "trials.csv": trials_csv(s),
    }
    return write_bundle(out_dir, files, single_file=single_file)


def render_study(summary: StudySummary | Mapping[str, Any], *, single_file: bool = False) -> str:
    """The HTML of the study page (references ``plotly.min.js`` next to it, or holds it:
    ``single_file``)."""
    return render_page("study.html", study_context(summary), single_file=single_file)


# ---------------------------------------------------------------------------------------------
# trials.csv


def knob_names(trials: Sequence[TrialRow]) -> list[str]:
    """Knob names in order of first appearance over the trials, ``resolution`` last."""
    names: list[str] = []
    for t in trials:
        names.extend(k for k in t.knobs if k not in names)
    if "resolution" in names:
        names.remove("resolution")
        names.append("resolution")
    return names


def trial_columns(knobs: Sequence[str]) -> list[str]:
    """The CSV header; a knob named like a fixed column gets a ``knob_`` prefix."""
    fixed = set(TRIAL_HEAD) | set(TRIAL_TAIL)
    return [*TRIAL_HEAD, *(f"knob_{k}" if k in fixed else k for k in knobs), *TRIAL_TAIL]


def trials_csv(summary: StudySummary | Mapping[str, Any]) -> str:
    """One row per trial: number, state, source, one column per knob, accuracy [0, 1], macs,
    params, tail_length, evenness [0, 1], reason. Missing values empty, booleans true/false.

    ``summary``: the study record, or a dict with its ``trials`` (rows of ``study.json``)."""
    trials = (
        summary.trials
        if isinstance(summary, StudySummary)
        else tuple(TrialRow.from_dict(t) for t in summary.get("trials") or ())
    )
    knobs = knob_names(trials)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(trial_columns(knobs))
    for t in trials:
        row = [getattr(t, c) for c in TRIAL_HEAD] + [t.knobs.get(k) for k in knobs]
        row += [getattr(t, c) for c in TRIAL_TAIL[:-1]] + [t.reason or None]
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _cell(value: Any) -> str:
    # Lists and dicts (knob values) as JSON, the rest like layers.csv.
    return fmt_value(value) if isinstance(value, (list, tuple, dict)) else _csv_cell(value)


# ---------------------------------------------------------------------------------------------
# View context


def study_context(summary: StudySummary | Mapping[str, Any]) -> dict[str, Any]:
    """The template context of the study page, from the study summary."""
    s = StudySummary.from_dict(finite(as_summary(summary).to_dict()))
    baseline = s.baseline
    return {
        "title": f"{s.study_name} · satadvisor study",
        "page_kind": "study",
        "s": s,
        "settings": s.settings,
        "model_label": model_label(s.settings.model),
        "stats": _stats(s, baseline),
        "verdict": verdict(s, baseline),
        "not_learned": not_learned_note(s.not_learned),
        "baseline": baseline,
        "baseline_rows": _baseline_rows(baseline) if baseline else [],
        "baseline_profile": _profile_figure(baseline, None),
        "recommendations": [
            _recommendation(s, r, baseline, i) for i, r in enumerate(s.recommended, 1)
        ],
        "figures": _figures(s),
        "importance_note": _importance_note(s),
        "knobs": knob_names(s.trials),
        "trials": _trial_rows(s),
        "validation": _validation_rows(s),
        "selection_note": selection_note(s.validation),
        "agreement": agreement(s.rank_agreement, s.validation),
        "reproduce": reproduce(s),
    }


def _count_states(trials: Sequence[TrialRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[state_name(t)] = counts.get(state_name(t), 0) + 1
    return counts


def _stats(s: StudySummary, baseline: ValidatedConfig | None) -> list[dict[str, Any]]:
    states = _count_states(s.trials)
    complete = [t for t in s.trials if t.state == "complete" and t.accuracy is not None]
    best = max(complete, key=lambda t: t.accuracy or 0.0, default=None)
    others = ", ".join(
        f"{states[k]} {k}"
        for k in ("not learned", "failed", "pruned", "skipped", "interrupted")
        if states.get(k)
    )
    stats: list[dict[str, Any]] = [
        {
            "label": "trials",
            "value": ("text", str(s.counted_trials)),
            "sub": f"of budget {s.budget}" if s.budget is not None else "counted",
        },
        {
            "label": "complete",
            "value": ("text", str(states.get("complete", 0))),
            "sub": others or "none failed",
        },
        {
            "label": "Pareto front",
            "value": ("text", str(len(s.pareto))),
            "sub": "configurations",
        },
        {
            "label": "best proxy accuracy",
            "value": ("percent", best.accuracy if best else None),
            "sub": f"trial #{best.number}" if best else "no complete trial",
        },
    ]
    if s.not_learned:
        stats.append(
            {
                "label": "did not learn",
                "value": ("text", str(s.not_learned)),
                "sub": "proxies left out of the front",
                "warn": True,
            }
        )
    if baseline is not None:
        n = len(baseline.seeds)
        stats.append(
            {
                "label": "baseline val accuracy",
                "value": ("percent", baseline.val_accuracy),
                "sub": f"full runs, {n} seed{'' if n == 1 else 's'}; test "
                f"{fmt_percent(baseline.test_accuracy)} (reported only)",
            }
        )
    rho = s.rank_agreement
    stats.append(
        {
            "label": "rank agreement",
            "value": ("text", "—" if rho is None else f"{rho:.2f}"),
            "sub": "Spearman, proxy vs full-run val",
        }
    )
    return [{"warn": False, "exact": None, **item} for item in stats]


def _baseline_rows(baseline: ValidatedConfig) -> list[tuple[str, str]]:
    return [
        ("val accuracy (chooses)", fmt_spread(baseline)),
        ("per seed", per_seed(baseline)),
        ("test accuracy (reported only)", fmt_spread(baseline, "test")),
        ("MACs / image", fmt_count(baseline.macs)),
        ("parameters", fmt_count(baseline.params)),
        ("proxy accuracy", fmt_percent(baseline.proxy_accuracy)),
        ("tail layers", str(len(baseline.tail))),
        ("evenness", fmt_fraction(baseline.evenness)),
        ("full-run epochs", str(baseline.epochs)),
    ]


def _profile_figure(
    record: ValidatedConfig | None, other: ValidatedConfig | None
) -> dict[str, Any] | None:
    """Saturation bars of a validated configuration, on a y scale shared with ``other``."""
    data = _plots_study.run_profile_data(record)
    if data is None:
        return None
    values = [
        v for r in (record, other) if r is not None for v in r.saturation.values() if v is not None
    ]
    return _plots_study.run_profile_figure(data, y_max=max(values, default=1.0))


def _comparison(rec: Recommendation, b: ValidatedConfig | None) -> list[dict[str, Any]]:
    """Rows metric | baseline | this | change; ``good`` True/False/None colours the change."""

    def ratio(r: float | None) -> tuple[str, bool | None]:
        return (f"{fmt_ratio(r)} ({fmt_change(r)})", r < 1.0) if r is not None else ("—", None)

    def delta(x: float | None, y: float | None, *, points: bool = False) -> tuple[str, bool | None]:
        if x is None or y is None:
            return "—", None
        return (fmt_points(x - y) if points else f"{x - y:+.3f}"), (x >= y)

    tail_now, tail_base = len(rec.tail), len(b.tail) if b else 0
    c = rec.comparison or Comparison()
    # Green or red only when the paired interval excludes 0; a tie stays uncoloured.
    sign = {"more accurate": True, "less accurate": False}.get(str(c.accuracy))
    paired = (f"{fmt_points(c.mean)} {fmt_interval(c.low, c.high)}", sign) if c.n else ("—", None)
    test = delta(rec.test_accuracy, b.test_accuracy if b else None, points=True)
    rows = [
        ("val accuracy (chooses)", fmt_spread(b), fmt_spread(rec), paired),
        ("val per seed", per_seed(b), per_seed(rec), ("paired by seed", None)),
        ("test accuracy (reported only)", fmt_spread(b, "test"), fmt_spread(rec, "test"),
         (test[0], None)),
        ("MACs / image", fmt_count(b.macs if b else None), fmt_count(rec.macs),
         ratio(rec.macs_ratio)),
        ("parameters", fmt_count(b.params if b else None), fmt_count(rec.params),
         ratio(rec.params_ratio)),
        ("proxy accuracy", fmt_percent(b.proxy_accuracy if b else None),
         fmt_percent(rec.proxy_accuracy),
         delta(rec.proxy_accuracy, b.proxy_accuracy if b else None, points=True)),
        ("tail layers", str(tail_base) if b else "—", str(tail_now),
         (f"{tail_now - tail_base:+d}", tail_now <= tail_base) if b else ("—", None)),
        ("evenness", fmt_fraction(b.evenness if b else None), fmt_fraction(rec.evenness),
         delta(rec.evenness, b.evenness if b else None)),
    ]  # fmt: skip
    return [
        {"metric": m, "before": x, "after": y, "change": c[0], "good": c[1]} for m, x, y, c in rows
    ]


def _recommendation(
    s: StudySummary, rec: Recommendation, baseline: ValidatedConfig | None, number: int
) -> dict[str, Any]:
    base_knobs = baseline.knobs if baseline is not None else {}
    accuracy = rec.comparison.accuracy if rec.comparison else None
    badges = [(VERDICT_BADGE.get(rec.verdict, "unconfirmed"), rec.verdict)]
    if rec.macs_ratio is not None and rec.macs_ratio < 1.0:
        badges.append(("good", "fewer MACs"))
    # Never "more accurate" without a confirmed interval above 0.
    if rec.confirmed and accuracy == "more accurate":
        badges.append(("good", "more accurate"))
    elif accuracy == "tie":
        badges.append(("tie", "accuracy: tie"))
    return {
        "anchor": f"rec-{number}",
        "number": number,
        "confirmed": rec.confirmed,
        "verdict": rec.verdict,
        "reason": verdict_reason(rec, s.tolerance),
        "trial": rec.trial,
        "source": rec.source,
        "knobs": [
            (k, fmt_value(v), k in base_knobs and base_knobs[k] != v) for k, v in rec.knobs.items()
        ],
        "badges": badges,
        "rows": _comparison(rec, baseline),
        "set_line": set_line(rec.knobs),
        "snippet": model_snippet(rec.knobs),
        "command": analyze_command(s, rec.knobs),
        "before": _profile_figure(baseline, rec),
        "after": _profile_figure(rec, baseline),
    }


def _figures(s: StudySummary) -> dict[str, dict[str, Any] | None]:
    pareto = _plots_study.pareto_data(s)
    history = _plots_study.history_data(s)
    importance = _plots_study.importance_data(s)
    return {
        "pareto": _plots_study.pareto_figure(pareto) if pareto else None,
        "history": _plots_study.history_figure(history) if history else None,
        "importance": _plots_study.importance_figure(importance) if importance else None,
    }


def _importance_note(s: StudySummary) -> str:
    complete = [t for t in s.trials if t.state == "complete"]
    return (
        f"Not enough to estimate importances: {len(complete)} complete trial"
        f"{'' if len(complete) == 1 else 's'}; at least 3 with different accuracies and a knob "
        "that takes two or more values are needed."
    )


def _trial_rows(s: StudySummary) -> list[dict[str, Any]]:
    trials = sorted(s.trials, key=lambda t: t.number)
    names = knob_names(trials)
    front = set(s.pareto)
    validated = {r.trial for r in s.validation}
    chosen = {r.trial for r in s.recommended}
    return [
        {
            "t": t,
            "state": state_name(t),
            "knobs": [fmt_value(t.knobs[k]) if k in t.knobs else "—" for k in names],
            "front": t.number in front,
            "validated": t.number in validated,
            "recommended": t.number in chosen,
            "note": t.reason or "",
        }
        for t in trials
    ]


def _validation_rows(s: StudySummary) -> list[dict[str, Any]]:
    chosen = {r.trial: r for r in s.recommended}
    rows = []
    for r in s.validation:
        rec = chosen.get(r.trial)
        if r.baseline:
            role, verdict = "baseline", ""
        elif rec is not None:
            role = "recommended" if rec.confirmed else "candidate"
            verdict = rec.verdict
        else:
            role, verdict = "validated", ""
        c = r.comparison or Comparison()
        rows.append(
            {
                "r": r,
                "role": role,
                "knobs": _plots_study.knobs_text(r.knobs),
                "val": fmt_spread(r),
                "per_seed": per_seed(r),
                "test": fmt_spread(r, "test"),
                "paired": fmt_points(c.mean) if c.n else "—",
                "interval": fmt_interval(c.low, c.high) if c.n else "—",
                "accuracy": c.accuracy or "",
                "verdict": verdict,
                "verdict_badge": VERDICT_BADGE.get(verdict, "unconfirmed"),
            }
        )
    return rows
