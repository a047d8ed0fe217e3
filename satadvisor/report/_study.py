"""The study page: study summary (``satadvisor.study/2``) → view context → ``index.html`` + JSON + CSV.

The summary is the dict of :func:`satadvisor.search.summary.study_summary`. Everything shown is
computed here, so the template stays free of logic; the charts come from :mod:`._plots_study` in two
steps (data, then figure).
"""

from __future__ import annotations

import csv
import io
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from satadvisor.errors import UsageError
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

STUDY_SCHEMA = "satadvisor.study/2"

TRIAL_HEAD = ("number", "state", "source")
TRIAL_TAIL = ("accuracy", "macs", "params", "tail_length", "evenness", "reason")
"""``trials.csv`` columns: :data:`TRIAL_HEAD`, one column per knob, then :data:`TRIAL_TAIL`."""

#: Default of ``satadvisor optimize --validate-top`` (left out of the reconstructed command).
DEFAULT_VALIDATE_TOP = 3
#: Default of ``satadvisor optimize --validate-seeds`` (left out of the reconstructed command).
DEFAULT_VALIDATE_SEEDS = 3
#: Verdict word → badge class on the page.
VERDICT_BADGE = {"confirmed": "good", "not confirmed": "unconfirmed", "tie": "tie"}


def write_study(
    summary: Mapping[str, Any], out_dir: str | os.PathLike[str], *, single_file: bool = False
) -> Path:
    """Write the report of one study into ``out_dir``; return ``out_dir/index.html``.

    Writes ``index.html``, ``study.json`` (the summary, indent 2, NaN/inf as null),
    ``trials.csv`` (see :func:`trials_csv`) and ``plotly.min.js`` (``single_file``: plotly is
    inlined into ``index.html`` instead, which then opens on its own), rendered in memory and swapped
    in atomically (a failure leaves the previous report as it was). Raises
    :class:`~satadvisor.errors.UsageError` for a dict of another schema and
    :class:`~satadvisor.errors.OutputError` when ``out_dir`` cannot be written.
    """
    schema = summary.get("schema")
    if schema != STUDY_SCHEMA:
        raise UsageError(
            f"study schema {schema!r} is not supported (expected {STUDY_SCHEMA!r}); "
            "re-render it with `satadvisor report STUDY` of this version"
        )
    files = {
        "index.html": render_study(summary, single_file=single_file),
        "study.json": to_json(summary, indent=2) + "\n",
        "trials.csv": trials_csv(summary),
    }
    return write_bundle(out_dir, files, single_file=single_file)


def render_study(summary: Mapping[str, Any], *, single_file: bool = False) -> str:
    """The HTML of the study page (references ``plotly.min.js`` next to it, or holds it:
    ``single_file``)."""
    return render_page("study.html", study_context(summary), single_file=single_file)


# ---------------------------------------------------------------------------------------------
# trials.csv


def knob_names(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """Knob names in order of first appearance over the trials, ``resolution`` last."""
    names: list[str] = []
    for t in trials:
        names.extend(k for k in (t.get("knobs") or {}) if k not in names)
    if "resolution" in names:
        names.remove("resolution")
        names.append("resolution")
    return names


def _reason(t: Mapping[str, Any]) -> str | None:
    """Why a trial has no (full) result: its failure, pruning, skip or interruption reason."""
    return str(t["reason"]) if t.get("reason") else None


def trial_columns(knobs: Sequence[str]) -> list[str]:
    """The CSV header; a knob named like a fixed column gets a ``knob_`` prefix."""
    fixed = set(TRIAL_HEAD) | set(TRIAL_TAIL)
    return [*TRIAL_HEAD, *(f"knob_{k}" if k in fixed else k for k in knobs), *TRIAL_TAIL]


def trials_csv(summary: Mapping[str, Any]) -> str:
    """One row per trial: number, state, source, one column per knob, accuracy [0, 1], macs,
    params, tail_length, evenness [0, 1], reason. Missing values empty, booleans true/false."""
    trials = summary.get("trials") or []
    knobs = knob_names(trials)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(trial_columns(knobs))
    for t in trials:
        values = t.get("knobs") or {}
        row = [t.get(c) for c in TRIAL_HEAD] + [values.get(k) for k in knobs]
        row += [t.get(c) for c in TRIAL_TAIL[:-1]] + [_reason(t)]
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _cell(value: Any) -> str:
    # Lists and dicts (knob values) as JSON, the rest like layers.csv.
    return fmt_value(value) if isinstance(value, (list, tuple, dict)) else _csv_cell(value)


# ---------------------------------------------------------------------------------------------
# Small formatting helpers


def fmt_points(delta: float | None) -> str:
    """An accuracy difference (fraction) in percentage points: 0.0021 → ``+0.2 pt``."""
    if delta is None:
        return "—"
    pts = 100.0 * delta
    if abs(pts) < 0.05:
        return "±0.0 pt"
    return f"{'+' if pts > 0 else '−'}{abs(pts):.1f} pt"


def fmt_interval(low: float | None, high: float | None) -> str:
    """A paired interval of accuracy differences in points: ``[−0.05, +0.45] pt``."""
    if low is None or high is None:
        return "no interval"

    def pts(x: float) -> str:
        return f"{'+' if x > 0 else '−' if x < 0 else '±'}{abs(100.0 * x):.2f}"

    return f"[{pts(low)}, {pts(high)}] pt"


def fmt_spread(record: Mapping[str, Any] | None, key: str = "val") -> str:
    """Mean accuracy over seeds with its standard deviation: ``95.8 % ± 0.4 pt (3 seeds)``."""
    r = record or {}
    n = len(r.get("seeds") or [])
    std = r.get(f"{key}_std")
    spread = f" ± {100.0 * std:.1f} pt" if std is not None else ""
    seeds = f" ({n} seed{'' if n == 1 else 's'})" if n else ""
    return f"{fmt_percent(r.get(f'{key}_accuracy'))}{spread}{seeds}"


def per_seed(record: Mapping[str, Any] | None, key: str = "val_accuracy") -> str:
    """Each seed's accuracy: ``s0 95.6 % · s1 96.1 % · s2 95.8 %`` ('—' without runs)."""
    runs = (record or {}).get("runs") or []
    return " · ".join(f"s{r.get('seed')} {fmt_percent(r.get(key))}" for r in runs) or "—"


def paired_text(comparison: Mapping[str, Any] | None) -> str:
    """``+0.2 pt, 95 % interval [−0.3, +0.7] pt over 3 seeds`` of a paired comparison."""
    c = comparison or {}
    if not c.get("n"):
        return "—"
    level = round(100 * float(c.get("level") or 0.95))
    n = int(c["n"])
    interval = (
        f"{level} % interval {fmt_interval(c.get('low'), c.get('high'))}"
        if c.get("low") is not None
        else "no interval"
    )
    return f"{fmt_points(c.get('mean'))}, {interval} over {n} seed{'' if n == 1 else 's'}"


def verdict_reason(rec: Mapping[str, Any], tolerance: float) -> str:
    """Why a recommendation is (not) confirmed, in one sentence."""
    c = rec.get("comparison") or {}
    verdict = rec.get("verdict")
    if rec.get("basis") == "one seed":
        return (
            "With one seed there is no interval, so nothing is confirmed: rerun with "
            "--validate-seeds 3 or more."
        )
    if rec.get("basis") == "missing runs":
        return (
            f"{c.get('missing')} of the paired runs have no score (diverged, failed or not run "
            "yet), so it is not confirmed: rerun the same command to finish the validation."
        )
    interval = fmt_interval(c.get("low"), c.get("high"))
    if rec.get("claim") == "cheaper":
        floor = fmt_points(-tolerance)
        if verdict == "confirmed":
            return (
                f"Confirmed: the 95 % interval of its validation accuracy minus the baseline's "
                f"({interval}) lies above the tolerance ({floor})."
            )
        return (
            f"Not confirmed: the 95 % interval {interval} reaches below the tolerance "
            f"({floor}); more seeds (--validate-seeds) narrow it."
        )
    if verdict == "confirmed":
        return f"Confirmed more accurate: the 95 % interval {interval} lies above 0."
    if verdict == "tie":
        return f"A tie: the 95 % interval {interval} contains 0, so it is not more accurate."
    return f"Not confirmed: the 95 % interval is {interval}."


def set_line(knobs: Mapping[str, Any]) -> str:
    """``--set depth=6 --set resolution=16``: every knob, quoted for a POSIX shell."""
    return " ".join(f"--set {shlex.quote(f'{k}={fmt_value(v)}')}" for k, v in knobs.items())


def model_snippet(knobs: Mapping[str, Any]) -> str:
    """The configuration as model-file code: a ``build_model(...)`` call and ``RESOLUTION``."""
    arch = {k: v for k, v in knobs.items() if k != "resolution"}
    lines = []
    if arch:
        lines.append("build_model(" + ", ".join(f"{k}={v!r}" for k, v in arch.items()) + ")")
    if "resolution" in knobs:
        lines.append(f"RESOLUTION = {knobs['resolution']!r}")
    return "\n".join(lines)


#: A trial record's status as the report names it (see satadvisor.search.record).
_STATE_NAMES = {
    "completed": "complete",
    "not_learned": "not learned",
    "diverged": "failed",
    "duplicate": "skipped",
    "over_budget": "skipped",
}


def _state(t: Mapping[str, Any]) -> str:
    status = str(t.get("status") or t.get("state") or "")
    return _STATE_NAMES.get(status, status)


# ---------------------------------------------------------------------------------------------
# View context


def study_context(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The template context of the study page, from the study summary."""
    s: dict[str, Any] = finite(summary)
    records = list(s.get("validation") or [])
    baseline = next((r for r in records if r.get("baseline")), None)
    recommended = list(s.get("recommended") or [])
    settings = s.get("settings") or {}
    trials = list(s.get("trials") or [])
    return {
        "title": f"{s.get('study_name', 'study')} · satadvisor study",
        "page_kind": "study",
        "s": s,
        "settings": settings,
        "model_label": _model_label(settings.get("model")),
        "stats": _stats(s, baseline),
        "verdict": _verdict(s, baseline, recommended, records),
        "not_learned": _not_learned_note(s),
        "baseline": baseline,
        "baseline_rows": _baseline_rows(baseline) if baseline else [],
        "baseline_profile": _profile_figure(baseline, None),
        "recommendations": [
            _recommendation(r, baseline, i, settings, s) for i, r in enumerate(recommended, 1)
        ],
        "figures": _figures(s),
        "importance_note": _importance_note(s),
        "knobs": knob_names(trials),
        "trials": _trial_rows(s, recommended, records),
        "validation": _validation_rows(records, recommended),
        "selection_note": _selection_note(records),
        "agreement": _agreement(s.get("rank_agreement"), records),
        "reproduce": _reproduce(s, records),
    }


def _model_label(model: Any) -> str:
    return str(model) if model else "default (./model.py, else the built-in network)"


def _count_states(trials: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[_state(t)] = counts.get(_state(t), 0) + 1
    return counts


def _stats(s: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    trials = s.get("trials") or []
    states = _count_states(trials)
    budget = s.get("budget")
    complete = [t for t in trials if t.get("state") == "complete" and t.get("accuracy") is not None]
    best = max(complete, key=lambda t: t["accuracy"], default=None)
    others = ", ".join(
        f"{states[k]} {k}"
        for k in ("not learned", "failed", "pruned", "skipped", "interrupted")
        if states.get(k)
    )
    stats: list[dict[str, Any]] = [
        {
            "label": "trials",
            "value": ("text", str(s.get("counted_trials", len(trials)))),
            "sub": f"of budget {budget}" if budget is not None else "counted",
        },
        {
            "label": "complete",
            "value": ("text", str(states.get("complete", 0))),
            "sub": others or "none failed",
        },
        {
            "label": "Pareto front",
            "value": ("text", str(len(s.get("pareto") or []))),
            "sub": "configurations",
        },
        {
            "label": "best proxy accuracy",
            "value": ("percent", best["accuracy"] if best else None),
            "sub": f"trial #{best['number']}" if best else "no complete trial",
        },
    ]
    missed = _not_learned_count(s)
    if missed:
        stats.append(
            {
                "label": "did not learn",
                "value": ("text", str(missed)),
                "sub": "proxies left out of the front",
                "warn": True,
            }
        )
    if baseline is not None:
        n = len(baseline.get("seeds") or [])
        stats.append(
            {
                "label": "baseline val accuracy",
                "value": ("percent", baseline.get("val_accuracy")),
                "sub": f"full runs, {n} seed{'' if n == 1 else 's'}; test "
                f"{fmt_percent(baseline.get('test_accuracy'))} (reported only)",
            }
        )
    rho = s.get("rank_agreement")
    stats.append(
        {
            "label": "rank agreement",
            "value": ("text", "—" if rho is None else f"{rho:.2f}"),
            "sub": "Spearman, proxy vs full-run val",
        }
    )
    return [{"warn": False, "exact": None, **item} for item in stats]


def _verdict(
    s: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    recommended: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
) -> dict[str, str]:
    """The headline: adopt (confirmed only), keep the baseline, or why nothing is decided yet.

    Validation accuracy chose; test accuracy is quoted as reported only.
    """
    tolerance = float(s.get("tolerance") or 0.005)
    confirmed = [r for r in recommended if r.get("confirmed")]
    if confirmed:
        top = confirmed[0]
        c = top.get("comparison") or {}
        more = f" ({len(confirmed)} configurations are confirmed, cheapest first)" * (
            len(confirmed) > 1
        )
        gain = {
            "more accurate": ", confirmed more accurate",
            "tie": ", the same accuracy within the interval (a tie)",
        }.get(str(c.get("accuracy")), "")
        return {
            "kind": "adopt",
            "text": (
                f"Adopt {_plots_study.knobs_text(top.get('knobs'))}{more}: its full-run "
                f"validation accuracy was {fmt_spread(top)} against the baseline's "
                f"{fmt_spread(baseline)}, paired difference {paired_text(c)}{gain}, with "
                f"{fmt_ratio(top.get('macs_ratio'))} the MACs and "
                f"{fmt_ratio(top.get('params_ratio'))} the parameters. Test accuracy, "
                f"reported only: {fmt_percent(top.get('test_accuracy'))} against "
                f"{fmt_percent((baseline or {}).get('test_accuracy'))}."
            ),
        }
    if recommended:
        top = recommended[0]
        claim = "is cheaper" if top.get("claim") == "cheaper" else "looked more accurate"
        return {
            "kind": "unconfirmed",
            "text": (
                f"Keep the baseline for now: no validated configuration is confirmed. The best "
                f"candidate, {_plots_study.knobs_text(top.get('knobs'))}, {claim} "
                f"({fmt_ratio(top.get('macs_ratio'))} the MACs): validation accuracy "
                f"{fmt_spread(top)} against the baseline's {fmt_spread(baseline)}, paired "
                f"difference {paired_text(top.get('comparison'))}. "
                f"{verdict_reason(top, tolerance)}"
            ),
        }
    if baseline is not None and baseline.get("val_accuracy") is not None:
        alternatives = len(records) - 1
        return {
            "kind": "keep",
            "text": (
                f"Keep the baseline ({_plots_study.knobs_text(baseline.get('knobs'))}): "
                f"{fmt_spread(baseline)} validation accuracy (test "
                f"{fmt_percent(baseline.get('test_accuracy'))}, reported only), "
                f"{fmt_count(baseline.get('macs'))} MACs and "
                f"{fmt_count(baseline.get('params'))} parameters in full runs. "
                + (
                    f"None of the {alternatives} validated alternatives matched its validation "
                    "accuracy with fewer MACs or beat it."
                    if alternatives
                    else "No alternative was validated against it."
                )
            ),
        }
    if records:
        return {
            "kind": "pending",
            "text": "The baseline has no full-run result, so no configuration can be compared "
            "with it: rerun the same satadvisor optimize command to finish the validation.",
        }
    trials = s.get("trials") or []
    if not any(t.get("state") == "complete" for t in trials):
        failed = sum(1 for t in trials if _state(t) == "failed")
        missed = _not_learned_count(s)
        if missed:
            return {
                "kind": "pending",
                "text": f"No proxy of the study learned ({missed} did not learn: their "
                "validation accuracy was not significantly above chance), so there is nothing to "
                "compare or recommend: raise --epochs or the learning rate, or use more data.",
            }
        if failed:
            return {
                "kind": "pending",
                "text": f"No trial of the study completed ({failed} failed; the reasons are in "
                "All trials below), so there is nothing to compare or recommend.",
            }
        return {
            "kind": "pending",
            "text": "The study has no complete trial yet: rerun the same satadvisor optimize "
            "command to run it (it resumes where it stopped).",
        }
    return {
        "kind": "pending",
        "text": "No configuration was retrained in full yet, so nothing is recommended: the "
        "results below come from short proxy trainings. Rerun the same satadvisor optimize "
        "command with --validate-top 3 to retrain the best configurations and the baseline.",
    }


def _not_learned_count(s: Mapping[str, Any]) -> int:
    if s.get("not_learned") is not None:
        return int(s["not_learned"])
    return sum(1 for t in s.get("trials") or [] if t.get("status") == "not_learned")


def _not_learned_note(s: Mapping[str, Any]) -> str | None:
    """``3 proxies did not learn …``: why some trials are missing from the front (or None)."""
    n = _not_learned_count(s)
    if not n:
        return None
    return (
        f"{n} prox{'y' if n == 1 else 'ies'} did not learn (validation accuracy not "
        "significantly above the majority-class rate, or a training loss that did not fall): "
        f"{'it is' if n == 1 else 'they are'} left out of the Pareto front, the rule candidates "
        "and the recommendations."
    )


def _baseline_rows(baseline: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("val accuracy (chooses)", fmt_spread(baseline)),
        ("per seed", per_seed(baseline)),
        ("test accuracy (reported only)", fmt_spread(baseline, "test")),
        ("MACs / image", fmt_count(baseline.get("macs"))),
        ("parameters", fmt_count(baseline.get("params"))),
        ("proxy accuracy", fmt_percent(baseline.get("proxy_accuracy"))),
        ("tail layers", str(len(baseline.get("tail") or []))),
        ("evenness", fmt_fraction(baseline.get("evenness"))),
        ("full-run epochs", str(baseline.get("epochs", "—"))),
    ]


def _profile_figure(
    record: Mapping[str, Any] | None, other: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Saturation bars of a validation record, on a y scale shared with ``other``."""
    data = _plots_study.run_profile_data(record)
    if data is None:
        return None
    values = [
        v
        for r in (record, other)
        for v in ((r or {}).get("saturation") or {}).values()
        if v is not None
    ]
    return _plots_study.run_profile_figure(data, y_max=max(values, default=1.0))


def _comparison(rec: Mapping[str, Any], base: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Rows metric | baseline | this | change; ``good`` True/False/None colours the change."""
    b = base or {}

    def ratio(key: str) -> tuple[str, bool | None]:
        r = rec.get(f"{key}_ratio")
        return (f"{fmt_ratio(r)} ({fmt_change(r)})", r < 1.0) if r is not None else ("—", None)

    def delta(key: str, digits: int = 3) -> tuple[str, bool | None]:
        x, y = rec.get(key), b.get(key)
        if x is None or y is None:
            return "—", None
        if key.endswith("accuracy"):
            return fmt_points(x - y), (x >= y)
        return f"{x - y:+.{digits}f}", (x >= y)

    tail_now, tail_base = len(rec.get("tail") or []), len(b.get("tail") or [])
    c = rec.get("comparison") or {}
    # Green or red only when the paired interval excludes 0; a tie stays uncoloured.
    sign = {"more accurate": True, "less accurate": False}.get(str(c.get("accuracy")))
    paired = (
        (f"{fmt_points(c.get('mean'))} {fmt_interval(c.get('low'), c.get('high'))}", sign)
        if c.get("n")
        else ("—", None)
    )
    test = delta("test_accuracy")
    rows = [
        ("val accuracy (chooses)", fmt_spread(b), fmt_spread(rec), paired),
        ("val per seed", per_seed(b), per_seed(rec), ("paired by seed", None)),
        ("test accuracy (reported only)", fmt_spread(b, "test"), fmt_spread(rec, "test"),
         (test[0], None)),
        ("MACs / image", fmt_count(b.get("macs")), fmt_count(rec.get("macs")), ratio("macs")),
        ("parameters", fmt_count(b.get("params")), fmt_count(rec.get("params")), ratio("params")),
        ("proxy accuracy", fmt_percent(b.get("proxy_accuracy")),
         fmt_percent(rec.get("proxy_accuracy")), delta("proxy_accuracy")),
        ("tail layers", str(tail_base) if base else "—", str(tail_now),
         (f"{tail_now - tail_base:+d}", tail_now <= tail_base) if base else ("—", None)),
        ("evenness", fmt_fraction(b.get("evenness")), fmt_fraction(rec.get("evenness")),
         delta("evenness")),
    ]  # fmt: skip
    return [
        {"metric": m, "before": x, "after": y, "change": c[0], "good": c[1]} for m, x, y, c in rows
    ]


def _recommendation(
    rec: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    number: int,
    settings: Mapping[str, Any],
    s: Mapping[str, Any],
) -> dict[str, Any]:
    knobs: Mapping[str, Any] = rec.get("knobs") or {}
    base_knobs: Mapping[str, Any] = (baseline or {}).get("knobs") or {}
    after = _profile_figure(rec, baseline)
    before = _profile_figure(baseline, rec)
    badges = []
    verdict = str(rec.get("verdict") or "not confirmed")
    badges.append((VERDICT_BADGE.get(verdict, "unconfirmed"), verdict))
    if rec.get("macs_ratio") is not None and rec["macs_ratio"] < 1.0:
        badges.append(("good", "fewer MACs"))
    # Never "more accurate" without a confirmed interval above 0.
    if rec.get("confirmed") and (rec.get("comparison") or {}).get("accuracy") == "more accurate":
        badges.append(("good", "more accurate"))
    elif (rec.get("comparison") or {}).get("accuracy") == "tie":
        badges.append(("tie", "accuracy: tie"))
    model = settings.get("model")
    analyze = ["satadvisor", "analyze", *([shlex.quote(str(model))] if model else [])]
    if settings.get("dataset"):
        analyze += ["--dataset", shlex.quote(str(settings["dataset"]))]
    return {
        "anchor": f"rec-{number}",
        "number": number,
        "confirmed": bool(rec.get("confirmed")),
        "verdict": verdict,
        "reason": verdict_reason(rec, float(s.get("tolerance") or 0.005)),
        "trial": rec.get("trial"),
        "source": rec.get("source"),
        "knobs": [
            (k, fmt_value(v), k in base_knobs and base_knobs[k] != v) for k, v in knobs.items()
        ],
        "badges": badges,
        "rows": _comparison(rec, baseline),
        "set_line": set_line(knobs),
        "snippet": model_snippet(knobs),
        "command": " ".join([*analyze, set_line(knobs)]),
        "before": before,
        "after": after,
    }


def _figures(s: Mapping[str, Any]) -> dict[str, dict[str, Any] | None]:
    pareto = _plots_study.pareto_data(s)
    history = _plots_study.history_data(s)
    importance = _plots_study.importance_data(s)
    return {
        "pareto": _plots_study.pareto_figure(pareto) if pareto else None,
        "history": _plots_study.history_figure(history) if history else None,
        "importance": _plots_study.importance_figure(importance) if importance else None,
    }


def _importance_note(s: Mapping[str, Any]) -> str:
    complete = [t for t in s.get("trials") or [] if t.get("state") == "complete"]
    return (
        f"Not enough to estimate importances: {len(complete)} complete trial"
        f"{'' if len(complete) == 1 else 's'}; at least 3 with different accuracies and a knob "
        "that takes two or more values are needed."
    )


def _trial_rows(
    s: Mapping[str, Any],
    recommended: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    trials = sorted(s.get("trials") or [], key=lambda t: int(t.get("number", 0)))
    names = knob_names(trials)
    front = {int(n) for n in s.get("pareto") or []}
    validated = {r.get("trial") for r in records}
    chosen = {r.get("trial") for r in recommended}
    rows = []
    for t in trials:
        knobs = t.get("knobs") or {}
        rows.append(
            {
                "t": t,
                "state": _state(t),
                "knobs": [fmt_value(knobs[k]) if k in knobs else "—" for k in names],
                "front": t.get("number") in front,
                "validated": t.get("number") in validated,
                "recommended": t.get("number") in chosen,
                "note": _reason(t) or "",
            }
        )
    return rows


def _validation_rows(
    records: Sequence[Mapping[str, Any]], recommended: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    chosen = {r.get("trial"): r for r in recommended}
    rows = []
    for r in records:
        rec = chosen.get(r.get("trial"))
        if r.get("baseline"):
            role, verdict = "baseline", ""
        elif rec is not None:
            role = "recommended" if rec.get("confirmed") else "candidate"
            verdict = str(rec.get("verdict") or "")
        else:
            role, verdict = "validated", ""
        c = r.get("comparison") or {}
        rows.append(
            {
                "r": r,
                "role": role,
                "knobs": _plots_study.knobs_text(r.get("knobs")),
                "val": fmt_spread(r),
                "per_seed": per_seed(r),
                "test": fmt_spread(r, "test"),
                "paired": fmt_points(c.get("mean")) if c.get("n") else "—",
                "interval": fmt_interval(c.get("low"), c.get("high")) if c.get("n") else "—",
                "accuracy": c.get("accuracy") or "",
                "verdict": verdict,
                "verdict_badge": VERDICT_BADGE.get(verdict, "unconfirmed"),
            }
        )
    return rows


def _selection_note(records: Sequence[Mapping[str, Any]]) -> str:
    """How the full runs were scored and compared (what chose, what is only reported)."""
    seeds = max((len(r.get("seeds") or []) for r in records), default=0)
    first = records[0] if records else {}
    sizes = ", ".join(
        f"{fmt_count(first.get(key))} {name}"
        for key, name in (("train_images", "train"), ("val_images", "val"), ("test_images", "test"))
        if first.get(key) is not None
    )
    text = (
        "Each full run trains on the training set minus a validation split held out of it; the "
        "validation accuracy alone chooses and orders the recommendations, paired by seed with "
        "the baseline's (the same split for every run). The test set is evaluated once per run "
        "and only reported."
    )
    if sizes:
        text += f" Images per run: {sizes}."
    if seeds == 1:
        text += (
            " These runs used one seed: there is no interval, so no difference is confirmed "
            "(rerun with --validate-seeds 3 or more)."
        )
    elif seeds > 1:
        text += (
            f" {seeds} seeds per configuration: Δ is the mean paired difference of validation "
            "accuracy to the baseline, with its 95 % t-interval."
        )
    return text


def _agreement(rho: float | None, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Spearman's ρ of proxy vs full-run validation accuracy, and what it means here."""
    n = sum(
        1
        for r in records
        if r.get("proxy_accuracy") is not None and r.get("val_accuracy") is not None
    )
    compared = [
        (r.get("comparison") or {}).get("accuracy") for r in records if not r.get("baseline")
    ]
    ties = bool(compared) and all(a == "tie" for a in compared)
    if rho is None:
        text = (
            f"Not computed: it needs at least 3 validated configurations with both accuracies "
            f"and not all equal (this study has {n})."
        )
    elif ties:
        text = "Every validated configuration ties with the baseline within its seed interval, so ρ ranks noise: the proxy ranking cannot be judged from these full runs."
    elif rho >= 0.8:
        text = "The proxy ranking carried over to the full runs: the short trainings ranked these configurations as the full ones did."
    elif rho >= 0.4:
        text = "The proxy ranking carried over only partly: treat configurations whose proxy accuracies are close as ties."
    else:
        text = "The proxy ranking did not carry over: the proxy trainings may be too short to rank these configurations (raise --epochs), or the full runs differ by less than their seed spread."
    if rho is not None and n <= 4:
        text += f" With {n} configurations ρ can take only a few values; read it as a rough check."
    return {"rho": rho, "n": n, "text": text}


def _reproduce(s: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    settings = s.get("settings") or {}
    train = settings.get("train") or {}
    fixed = _fixed_knobs(s)
    name = str(s.get("study_name") or "STUDY")
    storage = s.get("storage") or (s.get("settings_used") or {}).get("storage_url")
    space = s.get("space") or {}
    facts = [
        ("study", name),
        ("model", _model_label(settings.get("model"))),
        ("dataset", settings.get("dataset") or "—"),
        ("strategy", settings.get("strategy") or "—"),
        ("objectives", ", ".join(s.get("objectives") or []) or "—"),
        ("budget", f"{s.get('budget', '—')} trials ({s.get('counted_trials', 0)} counted)"),
        ("storage", storage or "—"),
        ("search space", "; ".join(f"{k} ∈ {fmt_value(list(v))}" for k, v in space.items()) or "—"),
        ("pinned knobs", " ".join(f"{k}={fmt_value(v)}" for k, v in fixed.items()) or "none"),
        ("proxy training", ", ".join(f"{k}={fmt_value(v)}" for k, v in train.items()) or "—"),
    ]  # fmt: skip
    full = _full_epochs(records)
    if full is not None:
        seeds = _seeds(s, records)
        facts.append(
            (
                "full runs",
                f"{full} epochs, {len(records)} configurations × {seeds} seed"
                f"{'' if seeds == 1 else 's'}; chosen on validation accuracy, tested once",
            )
        )
    report = ["satadvisor", "report", shlex.quote(name)]
    if storage:
        report += ["--storage", shlex.quote(str(storage))]
    return {
        "facts": facts,
        "optimize": s.get("command") or _optimize_command(s, fixed, storage, records),
        "reconstructed": not s.get("command"),
        "report": " ".join(report),
        "redacted": bool(storage and "***" in str(storage)),
    }


def _fixed_knobs(s: Mapping[str, Any]) -> dict[str, Any]:
    """Pinned knobs: from the settings when recorded, else knobs outside the space that never
    change over the trials (a configuration is the sampled knobs plus the pinned ones)."""
    used = ((s.get("settings_used") or {}).get("space") or {}).get("fixed")
    if isinstance(used, Mapping):
        return dict(used)
    space = s.get("space") or {}
    seen: dict[str, set[str]] = {}
    first: dict[str, Any] = {}
    for t in s.get("trials") or []:
        for k, v in (t.get("knobs") or {}).items():
            if k not in space:
                seen.setdefault(k, set()).add(fmt_value(v))
                first.setdefault(k, v)
    return {k: first[k] for k, values in seen.items() if len(values) == 1}


def _seeds(s: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> int:
    """Seeds per validated configuration: as requested, else as many as the records hold."""
    if s.get("validate_seeds"):
        return int(s["validate_seeds"])
    return max((len(r.get("seeds") or []) for r in records), default=1) or 1


def _full_epochs(records: Sequence[Mapping[str, Any]]) -> int | None:
    # A diverged run stops early: the longest run shows the requested number of epochs.
    epochs = [int(r["epochs"]) for r in records if r.get("epochs") is not None]
    return max(epochs) if epochs else None


def _optimize_command(
    s: Mapping[str, Any],
    fixed: Mapping[str, Any],
    storage: Any,
    records: Sequence[Mapping[str, Any]],
) -> str:
    """``satadvisor optimize …`` rebuilt from the stored settings (the study keeps no argv)."""
    settings = s.get("settings") or {}
    train = settings.get("train") or {}
    used = s.get("settings_used") or {}
    q = shlex.quote
    parts = ["satadvisor", "optimize"]
    if settings.get("model"):
        parts.append(q(str(settings["model"])))
    if s.get("budget") is not None:
        parts += ["--budget", str(s["budget"])]
    if settings.get("strategy"):
        parts += ["--strategy", q(str(settings["strategy"]))]
    if s.get("objectives"):
        parts += ["--objectives", q(",".join(s["objectives"]))]
    parts += ["--study-name", q(str(s.get("study_name") or "STUDY"))]
    if storage:
        parts += ["--storage", q(str(storage))]
    if settings.get("dataset"):
        parts += ["--dataset", q(str(settings["dataset"]))]
    if used.get("data_dir"):
        parts += ["--data-dir", q(str(used["data_dir"]))]
    if used.get("download"):
        parts.append("--download")
    for option, key in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr"),
                        ("--seed", "seed")):  # fmt: skip
        if train.get(key) is not None:
            parts += [option, fmt_value(train[key])]
    if train.get("device") not in (None, "auto"):
        parts += ["--device", q(str(train["device"]))]
    if set_line(fixed):
        parts.append(set_line(fixed))
    full = _full_epochs(records)
    if full is not None:
        parts += ["--full-epochs", str(full)]
        picks = sum(1 for r in records if not r.get("baseline"))
        if picks and picks != DEFAULT_VALIDATE_TOP:  # 0 picks: --validate-top 0 would skip all
            parts += ["--validate-top", str(picks)]
        seeds = _seeds(s, records)
        if seeds != DEFAULT_VALIDATE_SEEDS:
            parts += ["--validate-seeds", str(seeds)]
    if used.get("timeout"):
        parts += ["--timeout", fmt_value(used["timeout"])]
    return " ".join(parts)
