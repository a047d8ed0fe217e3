"""The command lines of the study page: a recommendation as ``--set`` arguments, model-file code
and an ``analyze`` command; the ``optimize`` and ``report`` commands that reproduce the study.

A study's recommendations are data (knob values); only here do they become command lines, with
the option spellings of :mod:`satadvisor._flags`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from satadvisor._flags import flag, set_args
from satadvisor.report._page import fmt_value
from satadvisor.search.study_record import StudySummary, ValidatedConfig

#: Default of ``satadvisor optimize --validate-top`` (left out of the reconstructed command).
DEFAULT_VALIDATE_TOP = 3
#: Default of ``satadvisor optimize --validate-seeds`` (left out of the reconstructed command).
DEFAULT_VALIDATE_SEEDS = 3


def model_label(model: str | None) -> str:
    return str(model) if model else "default (./model.py, else the built-in network)"


def set_line(knobs: Mapping[str, Any]) -> str:
    """``--set depth=6 --set resolution=16``: every knob, quoted for a POSIX shell."""
    return set_args(knobs)


def model_snippet(knobs: Mapping[str, Any]) -> str:
    """The configuration as model-file code: a ``build_model(...)`` call and ``RESOLUTION``."""
    arch = {k: v for k, v in knobs.items() if k != "resolution"}
    lines = []
    if arch:
        lines.append("build_model(" + ", ".join(f"{k}={v!r}" for k, v in arch.items()) + ")")
    if "resolution" in knobs:
        lines.append(f"RESOLUTION = {knobs['resolution']!r}")
    return "\n".join(lines)


def analyze_command(s: StudySummary, knobs: Mapping[str, Any]) -> str:
    """``satadvisor analyze MODEL --dataset D --set …`` that trains ``knobs`` on its own."""
    model, dataset = s.settings.model, s.settings.dataset
    parts = ["satadvisor", "analyze", *([shlex.quote(str(model))] if model else [])]
    if dataset:
        parts += [flag("dataset"), shlex.quote(str(dataset))]
    return " ".join([*parts, set_line(knobs)])


def storage_of(s: StudySummary) -> str | None:
    return s.storage or (s.settings_used or {}).get("storage_url")


def reproduce(s: StudySummary) -> dict[str, Any]:
    """The facts of the study and the commands that run it again and re-render this report."""
    records = s.validation
    train = s.settings.train
    fixed = fixed_knobs(s)
    storage = storage_of(s)
    facts = [
        ("study", s.study_name),
        ("model", model_label(s.settings.model)),
        ("dataset", s.settings.dataset or "—"),
        ("strategy", s.settings.strategy or "—"),
        ("objectives", ", ".join(s.objectives) or "—"),
        ("budget", f"{'—' if s.budget is None else s.budget} trials ({s.counted_trials} counted)"),
        ("storage", storage or "—"),
        ("search space", "; ".join(f"{k} ∈ {fmt_value(list(v))}" for k, v in s.space.items()) or "—"),
        ("pinned knobs", " ".join(f"{k}={fmt_value(v)}" for k, v in fixed.items()) or "none"),
        ("proxy training", ", ".join(f"{k}={fmt_value(v)}" for k, v in train.items()) or "—"),
    ]  # fmt: skip
    full = full_epochs(records)
    if full is not None:
        seeds = seeds_of(s)
        facts.append(
            (
                "full runs",
                f"{full} epochs, {len(records)} configurations × {seeds} seed"
                f"{'' if seeds == 1 else 's'}; chosen on validation accuracy, tested once",
            )
        )
    report = ["satadvisor", "report", shlex.quote(s.study_name)]
    if storage:
        report += [flag("storage"), shlex.quote(str(storage))]
    return {
        "facts": facts,
        "optimize": s.command or optimize_command(s, fixed, storage, records),
        "reconstructed": not s.command,
        "report": " ".join(report),
        "redacted": bool(storage and "***" in str(storage)),
        "budget_flag": flag("budget"),
    }


def fixed_knobs(s: StudySummary) -> dict[str, Any]:
    """Pinned knobs: from the settings when recorded, else knobs outside the space that never
    change over the trials (a configuration is the sampled knobs plus the pinned ones)."""
    used = ((s.settings_used or {}).get("space") or {}).get("fixed")
    if isinstance(used, Mapping):
        return dict(used)
    seen: dict[str, set[str]] = {}
    first: dict[str, Any] = {}
    for t in s.trials:
        for k, v in t.knobs.items():
            if k not in s.space:
                seen.setdefault(k, set()).add(fmt_value(v))
                first.setdefault(k, v)
    return {k: first[k] for k, values in seen.items() if len(values) == 1}


def seeds_of(s: StudySummary) -> int:
    """Seeds per validated configuration: as requested, else as many as the records hold."""
    if s.validate_seeds:
        return s.validate_seeds
    return max((len(r.seeds) for r in s.validation), default=1) or 1


def full_epochs(records: Sequence[ValidatedConfig]) -> int | None:
    # A diverged run stops early: the longest run shows the requested number of epochs.
    return max((r.epochs for r in records), default=None)


def optimize_command(
    s: StudySummary,
    fixed: Mapping[str, Any],
    storage: str | None,
    records: Sequence[ValidatedConfig],
) -> str:
    """``satadvisor optimize …`` rebuilt from the stored settings (the study keeps no argv)."""
    settings, train = s.settings, s.settings.train
    used = s.settings_used or {}
    q = shlex.quote
    parts = ["satadvisor", "optimize"]
    if settings.model:
        parts.append(q(str(settings.model)))
    if s.budget is not None:
        parts += [flag("budget"), str(s.budget)]
    if settings.strategy:
        parts += [flag("strategy"), q(str(settings.strategy))]
    if s.objectives:
        parts += [flag("objectives"), q(",".join(s.objectives))]
    parts += [flag("study_name"), q(s.study_name)]
    if storage:
        parts += [flag("storage"), q(str(storage))]
    if settings.dataset:
        parts += [flag("dataset"), q(str(settings.dataset))]
    if used.get("data_dir"):
        parts += [flag("data_dir"), q(str(used["data_dir"]))]
    if used.get("download"):
        parts.append(flag("download"))
    for key in ("epochs", "batch_size", "lr", "seed"):
        if train.get(key) is not None:
            parts += [flag(key), fmt_value(train[key])]
    if train.get("device") not in (None, "auto"):
        parts += [flag("device"), q(str(train["device"]))]
    if fixed:
        parts.append(set_line(fixed))
    full = full_epochs(records)
    if full is not None:
        parts += [flag("full_epochs"), str(full)]
        picks = sum(1 for r in records if not r.baseline)
        if picks and picks != DEFAULT_VALIDATE_TOP:  # 0 picks: --validate-top 0 would skip all
            parts += [flag("validate_top"), str(picks)]
        seeds = seeds_of(s)
        if seeds != DEFAULT_VALIDATE_SEEDS:
            parts += [flag("validate_seeds"), str(seeds)]
    if used.get("timeout"):
        parts += [flag("timeout"), fmt_value(used["timeout"])]
    return " ".join(parts)
