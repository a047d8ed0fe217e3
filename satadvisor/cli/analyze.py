"""``satadvisor analyze``: profile one model, write its report, print its summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from satadvisor._flags import flag
from satadvisor._io import plain_folder_name
from satadvisor.cli.guard import deferred_interrupts, errors, stdout_kept_for
from satadvisor.cli.options import (
    CONTEXT,
    check_device,
    debug_option,
    epochs_config,
    folder_name,
    single_file_option,
    training_options,
)
from satadvisor.cli.terminal import EpochLines, format_summary, progress_bar, stderr_line
from satadvisor.errors import UsageError


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False)
@training_options
@click.option(
    "--name",
    default=None,
    callback=lambda ctx, param, value: folder_name(param, value),
    help="Report folder name. Default: the model's name.",
)
@click.option(
    "--no-train", is_flag=True, help="Receptive-field analysis only (no training; seconds)."
)
@click.option("--json", "as_json", is_flag=True, help="Print analysis.json to stdout.")
@single_file_option
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress on stderr (by default one line per epoch: accuracy, settling, ETA).",
)
@debug_option
def analyze(
    model: str | None,
    dataset: str | None,
    data_dir: Path | None,
    download: bool,
    resolution: int | None,
    epochs: int | str | None,
    max_epochs: int,
    subset: int | None,
    batch_size: int,
    lr: float,
    device: str,
    seed: int,
    positions: int | str,
    set_items: tuple[str, ...],
    out: Path,
    name: str | None,
    no_train: bool,
    as_json: bool,
    single_file: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Profile MODEL, explain its saturation profile and receptive fields, recommend changes.

    MODEL is a model file (build_model(...) or model = ...), a built-in name (vgg, resnet,
    plain, vgg16, resnet18, ...), or omitted: ./model.py when present, else the embedded
    default (a VGG-style network on scikit-learn's digits).
    """
    with errors(debug), deferred_interrupts() as interrupts, stdout_kept_for(as_json) as stdout:
        from satadvisor import spec as spec_mod
        from satadvisor._io import check_output_dir
        from satadvisor.advisor import analyze as run_analysis
        from satadvisor.analysis_record import AnalysisRecord
        from satadvisor.config import TrainConfig
        from satadvisor.report import with_commands, write_analysis

        check_device(device)
        spec = spec_mod.load(model)
        knobs = spec.parse_set(list(set_items))
        folder = name or spec.name
        if not plain_folder_name(folder):
            raise UsageError(
                f"{model or spec.source}: the file's name gives the report folder {folder!r}, which "
                f"is not a plain folder name; pass {flag('name')} with one, e.g. "
                f"{flag('name')} mymodel"
            )
        check_output_dir(out / folder)
        interrupts.checkpoint()
        config = TrainConfig(
            **epochs_config(epochs, max_epochs),
            batch_size=batch_size,
            lr=lr,
            device=device,
            seed=seed,
            positions=positions,  # type: ignore[arg-type]  # _Positions gives auto, all or int
        )
        with progress_bar(enabled=not as_json and not quiet) as bar:

            def progress(p: Any) -> None:
                interrupts.checkpoint()  # Ctrl-C stops at the next training step
                if bar is not None:
                    bar(p)

            epochs_line = EpochLines(config) if not quiet else None
            analysis = run_analysis(
                spec,
                knobs=knobs,
                dataset=dataset,
                resolution=resolution,
                data_dir=data_dir,
                download=download,
                config=config,
                train=not no_train,
                name=folder,
                subset=subset,
                progress=progress,
                stop=epochs_line,
            )
        interrupts.checkpoint()
        # what analysis.json holds (NaN as null, each recommendation's "try it" command), and
        # its record: the report and the terminal show the same numbers
        payload = with_commands(analysis)
        record = AnalysisRecord.from_dict(payload)
        earlier = earlier_report(out / folder)
        index = write_analysis(record, out / folder, single_file=single_file)
        if earlier is not None and earlier != (
            record.model_source,
            record.dataset,
            record.resolution,
        ):
            src, data, res = earlier
            stderr_line(
                f"satadvisor: note: {out / folder} held the report of {src} on {data} at {res} px; "
                f"it was replaced (pass {flag('name')} to keep reports side by side)"
            )
        interrupts.checkpoint()
        if as_json:
            click.echo(json.dumps(payload, indent=2), file=stdout)
        else:
            click.echo(format_summary(record, index))


def report_identity(analysis: Mapping[str, Any]) -> tuple[str, str, Any]:
    """What the report of an ``analysis.json`` dict is of: model source, dataset and resolution
    (read from the dict: a report of another version may not be a record of this one)."""
    return (
        str((analysis.get("model") or {}).get("source")),
        str(analysis.get("dataset")),
        analysis.get("resolution"),
    )


def earlier_report(folder: Path) -> tuple[str, str, Any] | None:
    """What the report already in ``folder`` is of (None: none, or unreadable)."""
    try:
        earlier = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report_identity(earlier) if isinstance(earlier, dict) else None
