"""The analysis page: analysis record → view context → ``index.html`` + JSON + CSV.

Every entry point takes what ``satadvisor.analyze`` returns (an
:class:`~satadvisor.advisor.Analysis`), its :class:`~satadvisor.analysis_record.AnalysisRecord`,
or a loaded ``analysis.json`` dict (read with ``AnalysisRecord.from_dict``), and renders the
record: the dict form exists only on disk.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from satadvisor._flags import OPTIONS, SHORT_OPTIONS, flag, set_args
from satadvisor.analysis_record import SCHEMA, AnalysisRecord, LayerRow, TrainingSummary
from satadvisor.errors import UsageError
from satadvisor.report import _plots_analysis
from satadvisor.report._page import finite, fmt_value, render_page, to_json, write_bundle
from satadvisor.rules import Cost, Finding, Recommendation

__all__ = [
    "LAYER_COLUMNS",
    "SCHEMA",
    "as_record",
    "layers_csv",
    "recommendation_args",
    "render_analysis",
    "try_command",
    "with_commands",
    "write_analysis",
]

LAYER_COLUMNS = (
    "name",
    "type",
    "width",
    "saturation",
    "saturation_se",
    "intrinsic_dimension",
    "samples",
    "r_min",
    "r_max",
    "unproductive",
    "critical",
    "tail",
    "label",
)
"""Columns of ``layers.csv``, in order (``label``, the readable name, last)."""


def as_record(analysis: Any) -> AnalysisRecord:
    """The record of an :class:`~satadvisor.advisor.Analysis`, an ``AnalysisRecord`` or an
    ``analysis.json`` dict, with every NaN/±inf number as None (as ``analysis.json`` holds it,
    so a page rendered now and one rendered from the file later are the same). A dict of
    another schema is a one-line :class:`~satadvisor.errors.UsageError`."""
    if hasattr(analysis, "record"):
        analysis = analysis.record()
    if isinstance(analysis, AnalysisRecord):
        analysis = analysis.to_dict()
    if not isinstance(analysis, Mapping):
        raise UsageError(
            f"cannot write an analysis report of {type(analysis).__name__}: pass what "
            "satadvisor.analyze returned"
        )
    return AnalysisRecord.from_dict(finite(analysis))


def write_analysis(
    analysis: Any, out_dir: str | os.PathLike[str], *, single_file: bool = False
) -> Path:
    """Write the report of one analysis into ``out_dir``; return ``out_dir/index.html``.

    ``analysis``: see :func:`as_record`. Writes ``index.html``, ``analysis.json`` (the record's
    dict with each recommendation's ``command``, indent 2, NaN/inf as null), ``layers.csv``
    (:data:`LAYER_COLUMNS`) and ``plotly.min.js`` (``single_file``: plotly is inlined into
    ``index.html`` instead, which then opens on its own). The page is rendered in memory first
    and the directory is replaced in one atomic swap, so a failure leaves the previous report
    as it was. Raises :class:`~satadvisor.errors.UsageError` for a dict of another schema and
    :class:`~satadvisor.errors.OutputError` when ``out_dir`` cannot be written.
    """
    record = as_record(analysis)
    files = {
        "index.html": render_analysis(record, single_file=single_file),
        "analysis.json": to_json(with_commands(record), indent=2) + "\n",
        "layers.csv": layers_csv(record.layers),
    }
    return write_bundle(out_dir, files, single_file=single_file)


def render_analysis(analysis: Any, *, single_file: bool = False) -> str:
    """The HTML of the analysis page (references ``plotly.min.js`` next to it, or holds it:
    ``single_file``); ``analysis``: see :func:`as_record`."""
    context = analysis_context(as_record(analysis))
    return render_page("analysis.html", context, single_file=single_file)


def with_commands(analysis: Any) -> dict[str, Any]:
    """What ``analysis.json`` holds: the record's dict with each recommendation's ``command``
    (:func:`try_command`; empty for a change without knob settings)."""
    record = as_record(analysis)
    out = record.to_dict()
    out["recommendations"] = [
        {**d, "command": try_command(record, r, number)}
        for number, (d, r) in enumerate(
            zip(out["recommendations"], record.recommendations, strict=True), 1
        )
    ]
    return out


def layers_csv(layers: Sequence[LayerRow]) -> str:
    """The layer table as CSV: booleans ``true``/``false``, missing values empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LAYER_COLUMNS)
    for layer in layers:
        writer.writerow([_csv_cell(getattr(layer, column)) for column in LAYER_COLUMNS])
    return buf.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ""
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.startswith(_FORMULA_START):
        # A spreadsheet would run it as a formula (CSV injection): a leading apostrophe makes
        # it text there, and says so to anyone reading the file.
        return "'" + text
    return text


#: What makes a spreadsheet cell a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---------------------------------------------------------------------------------------------
# The "try it" command of a recommendation.

#: Options of ``analyze`` that take a value (the word after them is not the MODEL argument).
_TAKES_VALUE = frozenset(
    flag(name)
    for name in (
        "dataset",
        "data_dir",
        "resolution",
        "epochs",
        "max_epochs",
        "subset",
        "batch_size",
        "lr",
        "device",
        "seed",
        "positions",
        "set",
        "out",
        "name",
    )
)

#: Options of the analysed run a "try it" command leaves out (-> how many values follow): the
#: report name (the try gets its own folder) and what only changes the output's form.
_NOT_REPEATED = {
    spelling: 1 if name == "name" else 0
    for name in ("name", "json", "quiet", "no_train")
    for spelling in (OPTIONS[name], SHORT_OPTIONS.get(name))
    if spelling is not None
}


def recommendation_args(rec: Recommendation) -> str:
    """What follows ``satadvisor analyze`` to try ``rec``: its model when it is another one (a
    preset's family), then its knob settings as ``--set`` arguments; empty for a change made by
    hand."""
    args = set_args(rec.settings)
    return f"{rec.model} {args}" if rec.model and args else args


def try_command(record: AnalysisRecord, rec: Recommendation, number: int = 1) -> str:
    """``satadvisor analyze …`` for recommendation ``number`` (1-based) of ``record``: the
    analysed run's own command (same data source, data dir, epochs, subset, batch size,
    learning rate, seed, device and ``--set`` pins) with the recommendation's settings added
    (a later ``--set`` of a knob wins) and its own report folder, so the original report is
    kept to compare with. Empty for a change without knob settings.

    When the analysis was not started from the CLI (the Python API), the command is built from
    what the record holds: model, dataset and resolution.

    ``rec.model``: the recommendation is for another model (the family of a preset): it
    replaces the MODEL argument, and the run's own ``--set`` pins are dropped (they are the
    analysed model's knobs; the recommendation's settings pin every family knob it needs).
    """
    settings = rec.settings
    if not settings:
        return ""
    args = set_args(settings)
    sets_resolution = "resolution" in settings
    model = rec.model
    try:
        words = shlex.split(record.command)
    except ValueError:
        words = []
    if len(words) >= 2 and words[0] == "satadvisor" and words[1] == "analyze":
        kept: list[str] = []
        skip = 0
        value = False  # the word is the value of the option before it
        replaced = model is None
        for word in words[2:]:
            if skip:
                skip -= 1
                continue
            option, inline = word.split("=", 1)[0], "=" in word
            drop: int | None = None  # values to skip when the option is left out
            if option in _NOT_REPEATED:
                drop = _NOT_REPEATED[option]
            elif (model is not None and option == flag("set")) or (
                sets_resolution and option == flag("resolution")
            ):
                drop = 1  # the analysed model's pins / a resolution the change sets
            if drop is not None:
                skip, value = (0 if inline else drop), False
                continue
            if model is not None and not value and not word.startswith("-"):
                word, replaced = model, True  # the MODEL argument
            value = word in _TAKES_VALUE
            kept.append(word)
        if not replaced:  # the embedded default: no MODEL argument was given
            kept.insert(0, str(model))
        name = f"{record.name or 'model'}-try{number}"
        parts = ["satadvisor", "analyze", *(shlex.quote(w) for w in kept)]
        return " ".join([*parts, args, flag("name"), shlex.quote(name)])
    source = model or record.model_source or "MODEL"
    parts = ["satadvisor", "analyze", shlex.quote(source)]
    parts += [flag("dataset"), shlex.quote(record.dataset)]
    if not sets_resolution:
        parts += [flag("resolution"), str(record.resolution)]
    return " ".join([*parts, args])


# ---------------------------------------------------------------------------------------------
# View context: everything the template shows, computed here so the template stays logic-free.


def analysis_context(a: AnalysisRecord) -> dict[str, Any]:
    """The template context of the analysis page, from the analysis record."""
    training = a.training
    lead = " ".join(a.lead)
    verdict = a.verdict
    rf = a.receptive_field
    border = a.row(rf.border_layer)
    return {
        "lead": lead,
        "verdict_body": verdict[len(lead) :].strip()
        if lead and verdict.startswith(lead)
        else verdict,
        "not_learned": training is not None and training.learned is False,
        "title": f"{a.model_name} · satadvisor analysis",
        "page_kind": "analysis",
        "a": a,
        "knobs": [(k, fmt_value(v)) for k, v in a.knobs.items()],
        "training": training,
        "training_note": _training_note(training),
        "stats": _stats(a),
        "findings": [_finding(f, verdict) for f in a.findings],
        "recommendations": [_recommendation(r, a, i) for i, r in enumerate(a.recommendations, 1)],
        "layers": _layer_rows(a),
        "has_tail": any(layer.tail for layer in a.layers),
        "rf": rf,
        "repeats_run": a.command.split()[:2] == ["satadvisor", "analyze"],
        "border_label": border.label if border is not None else rf.border_layer,
        "figures": _figures(a),
        "versions": list((a.environment.get("versions") or {}).items()),
        "environment": a.environment,
        "set_option": flag("set"),
    }


def _training_note(training: TrainingSummary | None) -> str | None:
    if training is None:
        return (
            f"Not trained ({flag('no_train')}): saturation is measured during a proxy training, "
            "so the saturation profile, its evolution and the training curves are missing. The "
            "receptive-field analysis needs no training; findings marked “predicted” come from it."
        )
    status = training.status or "completed"
    if status in ("completed", "not_learned"):  # not_learned leads the page (see "lead")
        return None
    reason = training.reason
    return (
        f"Training {status}"
        + (f": {reason}." if reason else ".")
        + (" The numbers below come from the epochs that ran.")
    )


def _stats(a: AnalysisRecord) -> list[dict[str, Any]]:
    """The key figures under the header: accuracy, cost, tail, feasible range, time."""
    training = a.training
    layers = a.layers
    stats: list[dict[str, Any]] = []
    if training:
        stats.append(
            {
                "label": f"{training.eval_name} accuracy",
                "value": ("percent", training.accuracy),
                "sub": f"after {training.epochs} epochs",
            }
        )
    stats.append(
        {
            "label": "MACs / image",
            "value": ("count", a.macs),
            "sub": f"at {a.resolution} px",
            "exact": a.macs,
        }
    )
    stats.append(
        {
            "label": "parameters",
            "value": ("count", a.params),
            "sub": "trainable",
            "exact": a.params,
        }
    )
    if training and training.learned is False:
        stats.append(
            {
                "label": "measured tail",
                "value": ("text", "—"),
                "sub": "not read: the proxy did not learn",
                "warn": True,
            }
        )
    elif training:
        tail = [layer.label for layer in layers if layer.tail]
        settled = training.settled_epoch
        stats.append(
            {
                "label": "measured tail",
                "value": ("text", f"{len(tail)} of {len(layers)}"),
                "sub": (f"from {tail[0]}" if tail else "no tail")
                + (f"; settled at epoch {settled}" if settled else "; not settled"),
                "warn": bool(tail),
            }
        )
    unproductive = [layer.label for layer in layers if layer.unproductive]
    stats.append(
        {
            "label": "unproductive (RF)",
            "value": ("text", f"{len(unproductive)} of {len(layers)}"),
            "sub": f"from {unproductive[0]}" if unproductive else "none",
            "warn": bool(unproductive),
        }
    )
    feasible = a.receptive_field.feasible_range
    stats.append(
        {
            "label": "feasible input",
            "value": ("text", f"{feasible[0]}–{feasible[1]} px" if feasible else "—"),
            "sub": f"now {a.resolution} px",
        }
    )
    if training:
        stats.append(
            {
                "label": "training time",
                "value": ("seconds", training.wall_time),
                "sub": f"{fmt_value(round(training.images_per_second or 0))} img/s "
                f"on {training.device}",
            }
        )
    return [{"warn": False, "exact": None, **s} for s in stats]


def _finding(f: Finding, verdict: str) -> dict[str, Any]:
    # The verdict leads with its main finding (lower-cased after "Provisional: "): the list
    # below it points at that one instead of saying it again.
    return {
        "kind": f.kind,
        "message": f.message,
        "in_verdict": len(f.message) > 1 and f.message[1:] in verdict,
        "layers": list(f.layers),
        "predicted": f.predicted,
        "provisional": f.provisional,
        "evidence": [(k, fmt_value(v)) for k, v in f.evidence.items()],
    }


def _recommendation(r: Recommendation, a: AnalysisRecord, number: int) -> dict[str, Any]:
    diff = [
        (k, fmt_value(a.knobs[k]) if k in a.knobs else "—", fmt_value(v))
        for k, v in r.knobs.items()
        if k not in a.knobs or a.knobs[k] != v
    ]
    if r.resolution != a.resolution:
        diff.append(("resolution", f"{a.resolution} px", f"{r.resolution} px"))
    return {
        "anchor": f"rec-{number}",
        "number": number,
        "kind": r.kind,
        "title": r.title,
        "rationale": r.rationale,
        "diff": diff,
        "changes": [(k, fmt_value(v)) for k, v in r.changes.items()],
        "cost": r.cost,
        "bars": _cost_bars(r.cost) if r.cost else None,
        "unproductive_now": sum(1 for layer in a.layers if layer.unproductive),
        "unproductive_after": r.unproductive_after,
        "set_args": recommendation_args(r),
        "model": r.model,
        "command": try_command(a, r, number),
    }


def _cost_bars(cost: Cost) -> list[dict[str, Any]]:
    """Widths (percent) of baseline and predicted bars for MACs and params, longest = 100."""
    bars = []
    for key, ratio, value in (
        ("macs", cost.macs_ratio, cost.macs),
        ("params", cost.params_ratio, cost.params),
    ):
        if ratio is None:
            continue
        longest = max(1.0, ratio)
        bars.append(
            {
                "label": "MACs" if key == "macs" else "params",
                "baseline": round(100.0 / longest, 1),
                "predicted": round(100.0 * ratio / longest, 1),
                "ratio": ratio,
                "value": value,
                "cheaper": ratio < 1.0,
            }
        )
    return bars


def _layer_rows(a: AnalysisRecord) -> list[dict[str, Any]]:
    border = a.receptive_field.border_layer
    top = max((layer.saturation or 0.0 for layer in a.layers), default=0.0) or 1.0
    rows = []
    for i, layer in enumerate(a.layers, 1):
        flags = [name for name in ("tail", "unproductive", "critical") if getattr(layer, name)]
        saturation = layer.saturation
        rows.append(
            {
                "index": i,
                "layer": layer,
                "label": layer.label,
                # the qualified name beside a label that does not show it (conv8 for
                # features.conv8); "Conv2d #5 (features.17)" already does
                "qualified": layer.name if layer.name not in layer.label else None,
                "flags": flags,
                "border": layer.name == border,
                "bar": None if saturation is None else round(100.0 * saturation / top, 1),
            }
        )
    return rows


def _figures(a: AnalysisRecord) -> dict[str, dict[str, Any] | None]:
    """Figure dicts by page slot; None where the analysis has nothing to plot there."""
    profile = _plots_analysis.profile_data(a)
    evolution = _plots_analysis.evolution_data(a)
    curves = _plots_analysis.curves_data(a)
    rf = _plots_analysis.receptive_field_data(a)
    return {
        "profile": _plots_analysis.profile_figure(profile) if profile else None,
        "evolution": _plots_analysis.evolution_figure(evolution) if evolution else None,
        "loss": _plots_analysis.loss_figure(curves) if curves else None,
        "accuracy": _plots_analysis.accuracy_figure(curves) if curves else None,
        "rf": _plots_analysis.receptive_field_figure(rf) if rf else None,
    }
