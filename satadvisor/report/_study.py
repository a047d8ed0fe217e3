"""The study page: study summary (``satadvisor.study/1``) → view context → ``index.html`` + JSON + CSV.

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

STUDY_SCHEMA = "satadvisor.study/1"

TRIAL_HEAD = ("number", "state", "source")
TRIAL_TAIL = ("accuracy", "macs", "params", "tail_length", "evenness", "reason")
"""``trials.csv`` columns: :data:`TRIAL_HEAD`, one column per knob, then :data:`TRIAL_TAIL`."""

#: Default of ``satadvisor optimize --validate-top`` (left out of the reconstructed command).
DEFAULT_VALIDATE_TOP = 3


def write_study(summary: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write the report of one study into ``out_dir``; return ``out_dir/index.html``.

    Writes ``index.html``, ``study.json`` (the summary, indent 2, NaN/inf as null),
    ``trials.csv`` (see :func:`trials_csv`) and ``plotly.min.js``, rendered in memory and swapped
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
        "index.html": render_study(summary),
        "study.json": to_json(summary, indent=2) + "\n",
        "trials.csv": trials_csv(summary),
    }
    return write_bundle(out_dir, files)


def render_study(summary: Mapping[str, Any]) -> str:
    """The HTML of the study page (references ``plotly.min.js`` next to it)."""
    return render_page("study.html", study_context(summary))


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
    """Why a trial has no result: its failure reason, or why it was skipped or interrupted."""
    if t.get("reason"):
        return str(t["reason"])
    if t.get("skipped"):
        return f"skipped: {t['skipped']}"
    if t.get("interrupted"):
        return f"interrupted: {t['interrupted']}"
    return None


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


def _state(t: Mapping[str, Any]) -> str:
    state = str(t.get("state") or "")
    if state == "fail":
        if t.get("skipped"):
            return "skipped"
        return "interrupted" if t.get("interrupted") else "failed"
    return state


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
        f"{states[k]} {k}" for k in ("failed", "pruned", "skipped", "interrupted") if states.get(k)
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
    if baseline is not None:
        stats.append(
            {
                "label": "baseline test accuracy",
                "value": ("percent", baseline.get("test_accuracy")),
                "sub": f"full run, {baseline.get('epochs')} epochs",
            }
        )
    rho = s.get("rank_agreement")
    stats.append(
        {
            "label": "rank agreement",
            "value": ("text", "—" if rho is None else f"{rho:.2f}"),
            "sub": "Spearman, proxy vs full",
        }
    )
    return [{"warn": False, "exact": None, **item} for item in stats]


def _verdict(
    s: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    recommended: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
) -> dict[str, str]:
    """The headline: adopt, keep the baseline, or why there is nothing to decide yet."""
    if recommended:
        top = recommended[0]
        more = f" ({len(recommended)} configurations qualify, cheapest first)" * (
            len(recommended) > 1
        )
        return {
            "kind": "adopt",
            "text": (
                f"Adopt {_plots_study.knobs_text(top.get('knobs'))}{more}: in a full run it reached "
                f"{fmt_percent(top.get('test_accuracy'))} test accuracy against the baseline's "
                f"{fmt_percent((baseline or {}).get('test_accuracy'))} "
                f"({fmt_points(top.get('accuracy_delta'))}) with "
                f"{fmt_ratio(top.get('macs_ratio'))} the MACs and "
                f"{fmt_ratio(top.get('params_ratio'))} the parameters."
            ),
        }
    if baseline is not None and baseline.get("test_accuracy") is not None:
        alternatives = len(records) - 1
        return {
            "kind": "keep",
            "text": (
                f"Keep the baseline ({_plots_study.knobs_text(baseline.get('knobs'))}): "
                f"{fmt_percent(baseline.get('test_accuracy'))} test accuracy, "
                f"{fmt_count(baseline.get('macs'))} MACs and "
                f"{fmt_count(baseline.get('params'))} parameters in a full run. "
                + (
                    f"None of the {alternatives} validated alternatives matched its accuracy "
                    "with fewer MACs or beat it."
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


def _baseline_rows(baseline: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("test accuracy", fmt_percent(baseline.get("test_accuracy"))),
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
    rows = [
        ("test accuracy", fmt_percent(b.get("test_accuracy")), fmt_percent(rec.get("test_accuracy")),
         delta("test_accuracy")),
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
    if rec.get("macs_ratio") is not None and rec["macs_ratio"] < 1.0:
        badges.append(("good", "fewer MACs"))
    if (rec.get("accuracy_delta") or 0.0) > 0:
        badges.append(("good", "more accurate"))
    model = settings.get("model")
    analyze = ["satadvisor", "analyze", *([shlex.quote(str(model))] if model else [])]
    if settings.get("dataset"):
        analyze += ["--dataset", shlex.quote(str(settings["dataset"]))]
    return {
        "anchor": f"rec-{number}",
        "number": number,
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
    chosen = {r.get("trial") for r in recommended}
    return [
        {
            "r": r,
            "role": "baseline"
            if r.get("baseline")
            else ("recommended" if r.get("trial") in chosen else "validated"),
            "knobs": _plots_study.knobs_text(r.get("knobs")),
        }
        for r in records
    ]


def _agreement(rho: float | None, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Spearman's ρ of proxy vs full-run accuracy, and what it means for this study."""
    n = sum(
        1
        for r in records
        if r.get("proxy_accuracy") is not None and r.get("test_accuracy") is not None
    )
    if rho is None:
        text = (
            f"Not computed: it needs at least 3 validated configurations with both accuracies "
            f"and not all equal (this study has {n})."
        )
    elif rho >= 0.8:
        text = "The proxy ranking carried over to the full runs: the short trainings ranked these configurations as the full ones did."
    elif rho >= 0.4:
        text = "The proxy ranking carried over only partly: treat configurations whose proxy accuracies are close as ties."
    else:
        text = "The proxy ranking did not carry over: the proxy trainings are too short to rank these configurations; raise --epochs."
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
        facts.append(("full runs", f"{full} epochs, {len(records)} configurations"))
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
    if used.get("timeout"):
        parts += ["--timeout", fmt_value(used["timeout"])]
    return " ".join(parts)
