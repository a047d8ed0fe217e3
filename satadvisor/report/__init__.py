"""Self-contained HTML reports (jinja2, autoescaped) with plotly charts, plus JSON and CSV.

``write_analysis(analysis, out_dir)`` turns one ``satadvisor analyze`` run into a report folder:
its :class:`~satadvisor.advisor.Analysis`, that analysis's frozen
:class:`~satadvisor.analysis_record.AnalysisRecord` (``Analysis.record()``, what the page
renders), or a loaded ``analysis.json`` dict (read back with ``AnalysisRecord.from_dict``)::

    out_dir/index.html      the page (CSS and JS inline; charts drawn by plotly.min.js)
    out_dir/analysis.json   the record's dict, indent 2 (NaN/inf written as null)
    out_dir/layers.csv      name,type,width,saturation,saturation_se,intrinsic_dimension,samples,r_min,
                            r_max,unproductive,critical,tail,label   (booleans true/false,
                            missing = empty)
    out_dir/plotly.min.js   plotly.js of the installed plotly package

The page loads ``plotly.min.js`` by relative path rather than inlining its 5 MB, so the folder
opens from ``file://`` with no network; copied without that file, the page still reads (tables,
text) and says where the charts went. Each folder carries its own copy (4.8 MB), so a folder
moved or sent on its own still draws its charts; ``single_file=True`` (``--single-file``)
inlines plotly into ``index.html`` instead, and that one file is the report to share. The folder is replaced atomically (see
:func:`satadvisor._io.staged_dir`); an existing ``out_dir`` must be empty or an earlier report.

Schema ``satadvisor.analysis/2`` (``AnalysisRecord.to_dict()`` plus each recommendation's
``command``: :func:`with_commands`; units in brackets)::

    {"schema": "satadvisor.analysis/2",
     "name": str,                     # report name, e.g. "vgg16-cifar10"
     "command": str,                  # the command line that produced it
     "seed": int,
     "model": {"name": str, "source": str},   # source: the MODEL argument (file or built-in)
     "knobs": {str: value},           # architecture knobs of the analysed configuration
     "dataset": str, "resolution": int [px],
     "num_classes": int, "in_channels": int,
     "profile_phase": "train" | "eval",   # which phase's saturation the rules read
     "advice_basis": "measured" | "receptive_field" | "none",  # what the findings rest on
     "lead": [str, …],                # sentences before the verdict's finding: did not learn,
                                      # not settled, the two witnesses disagree
     "training": null | {             # null: --no-train
         "status": "completed" | "not_learned" | "diverged" | "pruned" | …,
         "reason": str | null,
         "epochs": int,                   # epochs run
         "auto_epochs": bool, "max_epochs": int,  # --epochs auto: max_epochs is the cap
         "learned": bool,                 # accuracy significantly above the majority class
         "settled": bool, "settled_epoch": int | null,  # profile stopped moving (from epoch)
         "learning": null | {"learned": bool, "accuracy": float, "eval_images": int,
                             "majority_rate": float, "required_accuracy": float,
                             "p_value": float, "alpha": float, "initial_loss": float,
                             "final_loss": float, "loss_fell": bool, "reason": str | null},
         "settling": null | {"settled": bool, "epoch": int | null, "epochs": int,
                             "max_change": float | null, "moving_layer": str | null,
                             "pattern_changed": bool | null, "tolerance": float,
                             "reason": str | null},
         "eval_name": "val",              # every run scores the validation split
         "accuracy": float [0, 1],        # validation accuracy (what selection reads)
         "test_accuracy": float [0, 1] | null,  # full runs only, evaluated once; null: proxy
         "params": int, "macs": int,
         "wall_time": float [s], "images_per_second": float, "device": str,
         "history": [{"epoch": int, "train_loss": float, "train_accuracy": float [0, 1],
                      "eval_loss": float, "eval_accuracy": float [0, 1], "lr": float,
                      "seconds": float}, …],
         "saturation_history": [{"epoch": int, "layers": {layer_name: float [0, 1]}}, …],
         "tracking": {                    # how the saturation was read
             "positions": "auto" | "all" | int,   # --positions
             "rows_per_batch": str,       # e.g. "max(8 × width, 4096) positions, drawn per example"
             "groups": int,               # batch groups behind each saturation_se
             "z": float,                  # the rules call no difference under z standard errors
             "stated_error": null | {     # "auto" only: measured error against every position
                 "saturation": float, "k": int, "measured_on": str, "see": str}}},
     "cost": {"macs": int [per image], "params": int},
     "layers": [{"name": str,                 # qualified module name, e.g. "features.17"
                 "label": str,                # what verdicts, terminal and page call it:
                                              # "conv8", or "Conv2d #5 (features.17)" for
                                              # an unnamed nn.Sequential child
                 "type": str, "width": int,       # forward order
                 "saturation": float [0, 1] | null, "intrinsic_dimension": int | null,
                 "saturation_se": float | null,  # standard error (batch-group jackknife);
                                              # the rules call no difference under 2 SE
                 "samples": int | null,      # rows behind the saturation (profiled epoch)
                 "r_min": int [px] | null, "r_max": int [px] | null,
                 "unproductive": bool, "critical": bool, "tail": bool}, …],
     "receptive_field": {"supported": bool, "reason": str | null,
                         "feasible_range": [lo, hi] [px] | null, "border_layer": str | null},
     "findings": [{"kind": "tail" | "early_underuse" | "too_narrow" | "too_wide" | "even",
                   "layers": [str, …], "message": str, "evidence": {str: value},
                   "predicted": bool,               # from the RF analysis alone
                   "basis": "measured" | "receptive_field",
                   "provisional": bool,             # from a profile that had not settled
                   "provisional_reason": str | null}, …],
     "recommendations": [{"kind": str, "title": str, "changes": {str: value},
                          "knobs": {str: value}, "resolution": int [px], "rationale": str,
                          "cost": null | {"macs": int, "params": int,
                                          "macs_ratio": float, "params_ratio": float},
                          "unproductive_after": int | null,
                          "model": str | null,      # the model the change applies to when
                                                    # it is not the analysed one (a family)
                          "pins": {str: value},     # with "model": every knob setting that
                                                    # builds the changed model from its defaults
                          "set_args": str,          # e.g. "--set depth=7 --set resolution=48"
                          "command": str}, …],      # the analysed run's command + set_args
                                                    # (written by write_analysis)
     "verdict": str,
     "environment": {"versions": {str: str}, "device": str, "device_name": str,
                     "platform": str, "time": str (ISO 8601)}}

``set_args`` is what follows ``satadvisor analyze MODEL`` to try a recommendation (MODEL being
its ``model`` when that is set); both it and ``command`` are renderings of the record, which
``AnalysisRecord.from_dict`` reads past. ``command`` reproduces the analysed
run with the change: its own command line (data source, data dir, epochs, subset, batch size,
learning rate, seed, device, ``--set`` pins) plus ``set_args`` and ``--name NAME-tryN``, so the
original report stays; for an analysis run from Python it is built from model, dataset and
resolution. Every string of the dict is escaped
in the page, also inside the chart JSON.

``write_study(summary, out_dir)`` does the same for a study (``satadvisor optimize`` /
``satadvisor report STUDY``): ``index.html``, ``study.json`` (``to_dict()`` of the
:class:`~satadvisor.search.study_record.StudySummary` that
:func:`satadvisor.search.summary.study_summary` returns, schema ``satadvisor.study/2``; a loaded
``study.json`` dict is read back with ``StudySummary.from_dict``), ``trials.csv``
(number,state,source,<one column per knob>,accuracy,macs,params,tail_length,evenness,reason)
and ``plotly.min.js``. The page leads with the recommended configurations (``--set`` line,
model-file snippet, full-run numbers against the baseline, saturation before/after) or says to
keep the baseline, then the Pareto front, the optimisation history, parameter importances
(:func:`param_importances`, one-way ANOVA η²), all trials, the proxy-vs-full rank agreement and
how to reproduce the study.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from satadvisor.analysis_record import AnalysisRecord
from satadvisor.errors import UsageError
from satadvisor.report._analysis import (
    LAYER_COLUMNS,
    SCHEMA,
    render_analysis,
    try_command,
    with_commands,
    write_analysis,
)
from satadvisor.report._plots_study import param_importances
from satadvisor.report._study import STUDY_SCHEMA, render_study, trials_csv, write_study
from satadvisor.search.study_record import StudySummary


def write_report(
    result: Any, out_dir: str | os.PathLike[str], *, single_file: bool = False
) -> Path:
    """Write the report of ``result`` into ``out_dir`` and return its ``index.html``.

    ``result``: an :class:`~satadvisor.advisor.Analysis` (what ``satadvisor.analyze`` returns),
    its :class:`~satadvisor.analysis_record.AnalysisRecord` or ``to_dict()`` (a loaded
    ``analysis.json``), or a study summary (what ``satadvisor.optimize`` returns). The folder is
    written as ``satadvisor analyze`` / ``optimize`` write theirs: staged, then swapped into place,
    so a failed write leaves the previous report as it was. ``single_file``: plotly.js is
    inlined into ``index.html`` (no ``plotly.min.js`` beside it), so that one file is the whole
    report to share: it opens anywhere, offline, without the folder.
    """
    if hasattr(result, "record") or isinstance(result, AnalysisRecord):
        return write_analysis(result, out_dir, single_file=single_file)
    if isinstance(result, StudySummary):
        return write_study(result, out_dir, single_file=single_file)
    data = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(data, Mapping):
        raise UsageError(
            f"cannot write a report of {type(result).__name__}: pass what satadvisor.analyze "
            "or satadvisor.optimize returned"
        )
    if str(data.get("schema", "")).startswith("satadvisor.study/"):
        return write_study(StudySummary.from_dict(data), out_dir, single_file=single_file)
    return write_analysis(data, out_dir, single_file=single_file)


__all__ = [
    "LAYER_COLUMNS",
    "SCHEMA",
    "STUDY_SCHEMA",
    "param_importances",
    "render_analysis",
    "render_study",
    "trials_csv",
    "try_command",
    "with_commands",
    "write_analysis",
    "write_report",
    "write_study",
]
