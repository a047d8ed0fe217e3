"""The analysis page: analysis dict → view context → ``index.html`` + JSON + CSV."""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from satadvisor.advisor import SCHEMA  # one schema constant, defined where the dict is made
from satadvisor.errors import UsageError
from satadvisor.report import _plots_analysis
from satadvisor.report._page import finite, fmt_value, render_page, to_json, write_bundle

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


def write_analysis(
    analysis: Mapping[str, Any], out_dir: str | os.PathLike[str], *, single_file: bool = False
) -> Path:
    """Write the report of one analysis into ``out_dir``; return ``out_dir/index.html``.

    Writes ``index.html``, ``analysis.json`` (the dict, indent 2, NaN/inf as null),
    ``layers.csv`` (:data:`LAYER_COLUMNS`) and ``plotly.min.js`` (``single_file``: plotly is
    inlined into ``index.html`` instead, which then opens on its own). The page is rendered in
    memory first and the directory is replaced in one atomic swap, so a failure leaves the
    previous report as it was. Raises :class:`~satadvisor.errors.UsageError` for a dict of
    another schema and :class:`~satadvisor.errors.OutputError` when ``out_dir`` cannot be
    written.
    """
    schema = analysis.get("schema")
    if schema != SCHEMA:
        raise UsageError(
            f"analysis schema {schema!r} is not supported (expected {SCHEMA!r}); "
            "re-run satadvisor analyze with this version"
        )
    analysis = with_commands(analysis)
    files = {
        "index.html": render_analysis(analysis, single_file=single_file),
        "analysis.json": to_json(analysis, indent=2) + "\n",
        "layers.csv": layers_csv(analysis["layers"]),
    }
    return write_bundle(out_dir, files, single_file=single_file)


def render_analysis(analysis: Mapping[str, Any], *, single_file: bool = False) -> str:
    """The HTML of the analysis page (references ``plotly.min.js`` next to it, or holds it:
    ``single_file``)."""
    return render_page("analysis.html", analysis_context(analysis), single_file=single_file)


def layers_csv(layers: Sequence[Mapping[str, Any]]) -> str:
    """The layer table as CSV: booleans ``true``/``false``, missing values empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LAYER_COLUMNS)
    for layer in layers:
        row = {**layer, "label": layer_label(layer)}
        writer.writerow([_csv_cell(row.get(column)) for column in LAYER_COLUMNS])
    return buf.getvalue()


def layer_label(layer: Mapping[str, Any]) -> str:
    """The readable name of a layer row (its ``label``; the name in dicts made before labels)."""
    return str(layer.get("label") or layer.get("name") or "")


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
# View context: everything the template shows, computed here so the template stays logic-free.


def analysis_context(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The template context of the analysis page, from the analysis dict."""
    a: dict[str, Any] = finite(analysis)
    training = a.get("training")
    lead = " ".join(a.get("lead") or [])
    verdict = str(a.get("verdict") or "")
    return {
        "lead": lead,
        "verdict_body": verdict[len(lead) :].strip()
        if lead and verdict.startswith(lead)
        else verdict,
        "not_learned": training is not None and training.get("learned") is False,
        "title": f"{a['model']['name']} · satadvisor analysis",
        "page_kind": "analysis",
        "a": a,
        "knobs": [(k, fmt_value(v)) for k, v in (a.get("knobs") or {}).items()],
        "training": training,
        "training_note": _training_note(training),
        "stats": _stats(a),
        "findings": [_finding(f, verdict) for f in a.get("findings") or []],
        "recommendations": [
            _recommendation(r, a, i) for i, r in enumerate(a.get("recommendations") or [], 1)
        ],
        "layers": _layer_rows(a),
        "has_tail": any(layer.get("tail") for layer in a["layers"]),
        "rf": a.get("receptive_field") or {"supported": False, "reason": None},
        "repeats_run": str(a.get("command") or "").split()[:2] == ["satadvisor", "analyze"],
        "border_label": _label_of(a, (a.get("receptive_field") or {}).get("border_layer")),
        "figures": _figures(a),
        "versions": list(((a.get("environment") or {}).get("versions") or {}).items()),
        "environment": a.get("environment") or {},
    }


def _label_of(a: Mapping[str, Any], name: str | None) -> str | None:
    """The label of the layer ``name`` (the name itself when no row has it)."""
    if name is None:
        return None
    row = next((layer for layer in a["layers"] if layer.get("name") == name), None)
    return layer_label(row) if row is not None else name


def _training_note(training: Mapping[str, Any] | None) -> str | None:
    if training is None:
        return (
            "Not trained (--no-train): saturation is measured during a proxy training, so the "
            "saturation profile, its evolution and the training curves are missing. The "
            "receptive-field analysis needs no training; findings marked “predicted” come from it."
        )
    status = training.get("status") or "completed"
    if status in ("completed", "not_learned"):  # not_learned leads the page (see "lead")
        return None
    reason = training.get("reason")
    return (
        f"Training {status}"
        + (f": {reason}." if reason else ".")
        + (" The numbers below come from the epochs that ran.")
    )


def _stats(a: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The key figures under the header: accuracy, cost, tail, feasible range, time."""
    training = a.get("training")
    cost = a.get("cost") or {}
    layers = a["layers"]
    stats: list[dict[str, Any]] = []
    if training:
        stats.append(
            {
                "label": f"{training.get('eval_name', 'val')} accuracy",
                "value": ("percent", training.get("accuracy")),
                "sub": f"after {training.get('epochs')} epochs",
            }
        )
    stats.append(
        {
            "label": "MACs / image",
            "value": ("count", cost.get("macs")),
            "sub": f"at {a['resolution']} px",
            "exact": cost.get("macs"),
        }
    )
    stats.append(
        {
            "label": "parameters",
            "value": ("count", cost.get("params")),
            "sub": "trainable",
            "exact": cost.get("params"),
        }
    )
    if training and training.get("learned") is False:
        stats.append(
            {
                "label": "measured tail",
                "value": ("text", "—"),
                "sub": "not read: the proxy did not learn",
                "warn": True,
            }
        )
    elif training:
        tail = [layer_label(layer) for layer in layers if layer.get("tail")]
        settled = training.get("settled_epoch")
        stats.append(
            {
                "label": "measured tail",
                "value": ("text", f"{len(tail)} of {len(layers)}"),
                "sub": (f"from {tail[0]}" if tail else "no tail")
                + (f"; settled at epoch {settled}" if settled else "; not settled"),
                "warn": bool(tail),
            }
        )
    unproductive = [layer_label(layer) for layer in layers if layer.get("unproductive")]
    stats.append(
        {
            "label": "unproductive (RF)",
            "value": ("text", f"{len(unproductive)} of {len(layers)}"),
            "sub": f"from {unproductive[0]}" if unproductive else "none",
            "warn": bool(unproductive),
        }
    )
    feasible = (a.get("receptive_field") or {}).get("feasible_range")
    stats.append(
        {
            "label": "feasible input",
            "value": ("text", f"{feasible[0]}–{feasible[1]} px" if feasible else "—"),
            "sub": f"now {a['resolution']} px",
        }
    )
    if training:
        stats.append(
            {
                "label": "training time",
                "value": ("seconds", training.get("wall_time")),
                "sub": f"{fmt_value(round(training.get('images_per_second') or 0))} img/s "
                f"on {training.get('device', '?')}",
            }
        )
    return [{"warn": False, "exact": None, **s} for s in stats]


def _finding(f: Mapping[str, Any], verdict: str) -> dict[str, Any]:
    message = str(f.get("message", ""))
    # The verdict leads with its main finding (lower-cased after "Provisional: "): the list
    # below it points at that one instead of saying it again.
    return {
        "kind": f.get("kind", ""),
        "message": message,
        "in_verdict": len(message) > 1 and message[1:] in verdict,
        "layers": list(f.get("layers") or []),
        "predicted": bool(f.get("predicted")),
        "provisional": f.get("provisional_reason") if f.get("provisional") else None,
        "evidence": [(k, fmt_value(v)) for k, v in (f.get("evidence") or {}).items()],
    }


def _recommendation(r: Mapping[str, Any], a: Mapping[str, Any], number: int) -> dict[str, Any]:
    base_knobs: Mapping[str, Any] = a.get("knobs") or {}
    knobs: Mapping[str, Any] = r.get("knobs") or {}
    diff = [
        (k, fmt_value(base_knobs[k]) if k in base_knobs else "—", fmt_value(v))
        for k, v in knobs.items()
        if base_knobs.get(k) != v or k not in base_knobs
    ]
    resolution = r.get("resolution", a["resolution"])
    if resolution != a["resolution"]:
        diff.append(("resolution", f"{a['resolution']} px", f"{resolution} px"))
    cost = r.get("cost")
    base_cost = a.get("cost") or {}
    set_args = str(r.get("set_args") or "").strip()
    if set_args and not set_args.startswith("-"):
        set_args = f"--set {set_args}"
    model = r.get("model")
    return {
        "anchor": f"rec-{number}",
        "number": number,
        "kind": r.get("kind", ""),
        "title": r.get("title", ""),
        "rationale": r.get("rationale", ""),
        "diff": diff,
        "changes": [(k, fmt_value(v)) for k, v in (r.get("changes") or {}).items()],
        "cost": cost,
        "bars": _cost_bars(cost) if cost else None,
        "base_cost": base_cost,
        "unproductive_now": sum(1 for layer in a["layers"] if layer.get("unproductive")),
        "unproductive_after": r.get("unproductive_after"),
        "set_args": f"{model} {set_args}" if model and set_args else set_args,
        "model": model,
        "command": _try_command(a, set_args, number, model) if set_args else "",
    }


#: Options of ``analyze`` that take a value (the word after them is not the MODEL argument).
_TAKES_VALUE = frozenset(
    [
        "--dataset",
        "--data-dir",
        "--resolution",
        "--epochs",
        "--max-epochs",
        "--subset",
        "--batch-size",
        "--lr",
        "--device",
        "--seed",
        "--positions",
        "--set",
        "--out",
        "--name",
    ]
)

#: Options of the analysed run a "try it" command leaves out: the report name (the try gets
#: its own folder) and what only changes the output's form.
_NOT_REPEATED = {"--name": 1, "--json": 0, "--quiet": 0, "-q": 0, "--no-train": 0}


def _try_command(
    a: Mapping[str, Any], set_args: str, number: int = 1, model: str | None = None
) -> str:
    """``satadvisor analyze …`` for a recommendation: the analysed run's own command (same data
    source, data dir, epochs, subset, batch size, learning rate, seed, device and ``--set``
    pins) with the recommendation's ``--set`` added (a later ``--set`` of a knob wins) and
    its own report folder, so the original report is kept to compare with.

    When the analysis was not started from the CLI (the Python API), the command is built from
    what the analysis records: model, dataset and resolution.

    ``model``: the recommendation is for another model (the family of a preset): it replaces
    the MODEL argument, and the run's own ``--set`` pins are dropped (they are the analysed
    model's knobs; ``set_args`` pins every family knob the change needs).
    """
    recorded = str(a.get("command") or "")
    try:
        words = shlex.split(recorded)
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
            option = word.split("=", 1)[0]
            if option in _NOT_REPEATED:
                skip = _NOT_REPEATED[option] if "=" not in word else 0
                value = False
                continue
            if model is not None and option == "--set":
                skip = 0 if "=" in word else 1  # the analysed model's knobs
                value = False
                continue
            if option == "--resolution" and re.search(r"--set[ =]resolution=", set_args):
                skip = 0 if "=" in word else 1  # the recommendation sets the resolution
                value = False
                continue
            if model is not None and not value and not word.startswith("-"):
                word, replaced = model, True  # the MODEL argument
            value = word in _TAKES_VALUE
            kept.append(word)
        if not replaced:  # the embedded default: no MODEL argument was given
            kept.insert(0, str(model))
        name = f"{a.get('name') or 'model'}-try{number}"
        parts = ["satadvisor", "analyze", *(shlex.quote(w) for w in kept)]
        return " ".join([*parts, set_args, "--name", shlex.quote(name)])
    source = model or str((a.get("model") or {}).get("source") or "MODEL")
    parts = ["satadvisor", "analyze", shlex.quote(source)]
    parts += ["--dataset", shlex.quote(str(a["dataset"]))]
    if not re.search(r"--set[ =]resolution=", set_args):
        parts += ["--resolution", str(a["resolution"])]
    return " ".join([*parts, set_args])


def with_commands(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis with each recommendation's reproducing ``command`` (see
    :func:`_try_command`); recommendations without changes get none."""
    out = dict(analysis)
    recs = []
    for number, r in enumerate(analysis.get("recommendations") or [], 1):
        set_args = str(r.get("set_args") or "")
        if set_args and not set_args.startswith("--set"):
            set_args = f"--set {set_args}"
        command = _try_command(analysis, set_args, number, r.get("model")) if set_args else ""
        recs.append({**r, "command": command})
    out["recommendations"] = recs
    return out


def _cost_bars(cost: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Widths (percent) of baseline and predicted bars for MACs and params, longest = 100."""
    bars = []
    for key in ("macs", "params"):
        ratio = cost.get(f"{key}_ratio")
        if ratio is None:
            continue
        longest = max(1.0, ratio)
        bars.append(
            {
                "label": "MACs" if key == "macs" else "params",
                "baseline": round(100.0 / longest, 1),
                "predicted": round(100.0 * ratio / longest, 1),
                "ratio": ratio,
                "value": cost.get(key),
                "cheaper": ratio < 1.0,
            }
        )
    return bars


def _layer_rows(a: Mapping[str, Any]) -> list[dict[str, Any]]:
    layers = a["layers"]
    border = (a.get("receptive_field") or {}).get("border_layer")
    top = max((layer.get("saturation") or 0.0 for layer in layers), default=0.0) or 1.0
    rows = []
    for i, layer in enumerate(layers, 1):
        flags = [flag for flag in ("tail", "unproductive", "critical") if layer.get(flag)]
        saturation = layer.get("saturation")
        label = layer_label(layer)
        rows.append(
            {
                "index": i,
                "layer": layer,
                "label": label,
                # the qualified name beside a label that does not show it (conv8 for
                # features.conv8); "Conv2d #5 (features.17)" already does
                "qualified": layer.get("name") if layer.get("name") not in label else None,
                "flags": flags,
                "border": layer.get("name") == border,
                "bar": None if saturation is None else round(100.0 * saturation / top, 1),
            }
        )
    return rows


def _figures(a: Mapping[str, Any]) -> dict[str, dict[str, Any] | None]:
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
