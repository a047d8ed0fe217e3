"""``satadvisor optimize``: search a model's knobs, validate the best in full, write the study
report, print its summary."""

from __future__ import annotations

from pathlib import Path

import click

from satadvisor._flags import flag
from satadvisor.cli.guard import deferred_interrupts, errors
from satadvisor.cli.options import (
    CONTEXT,
    check_device,
    debug_option,
    folder_name,
    in_memory_storage,
    single_file_option,
    training_options,
)
from satadvisor.cli.terminal import format_study, print_progress
from satadvisor.errors import OutputError, UsageError


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False)
@click.option(
    "--budget",
    type=click.IntRange(1, 100_000),
    required=True,
    help="Proxy trials in the study in total (a rerun resumes up to this number).",
)
@click.option(
    "--strategy",
    type=click.Choice(["guided", "tpe", "random"]),
    default="guided",
    show_default=True,
    help=(
        "guided: TPE steered by saturation (rule moves, early stops of settled tails and "
        "dominated trials) and receptive fields (no draws with unproductive layers); "
        "tpe or random: Optuna's sampler alone."
    ),
)
@click.option(
    "--objectives",
    default="accuracy,macs",
    show_default=True,
    help="accuracy, optionally with macs and/or params (comma-separated).",
)
@click.option(
    "--study-name",
    default=None,
    callback=lambda ctx, param, value: folder_name(param, value),
    help="Default: <model>-<dataset>.",
)
@click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Optuna storage: sqlite:///f.db (default studies/<study>.db), postgresql://…, "
    "mysql://…, journal:f.log.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Local worker processes (one GPU each when several are visible).",
)
@click.option(
    "--validate-top",
    type=click.IntRange(0, 100),
    default=3,
    show_default=True,
    help="Pareto-optimal configurations retrained in full (with the baseline); 0 skips.",
)
@click.option(
    "--validate-seeds",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    metavar="N",
    help="Seeds of each full run: a pick is confirmed only when its paired 95 % interval over "
    "the seeds supports it (1: nothing is confirmed). GPU: 5 or more.",
)
@click.option(
    "--full-epochs",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Epochs of each full validation run. Default: 4× --epochs.",
)
@click.option(
    "--full-subset",
    type=click.IntRange(1, None),
    default=None,
    metavar="N",
    help="Cap each split of the full validation runs at N images. Default: all.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop drawing new trials after this many seconds.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress on stderr (by default one line per trial and per full run, with one ETA "
    "over the search and the validation runs).",
)
@single_file_option
@training_options
@debug_option
def optimize(
    model: str | None,
    budget: int,
    strategy: str,
    objectives: str,
    study_name: str | None,
    storage: str | None,
    workers: int,
    validate_top: int,
    validate_seeds: int,
    full_epochs: int | None,
    full_subset: int | None,
    timeout: float | None,
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
    single_file: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Search depth, kernel size, resolution and width of MODEL; validate the best in full.

    Rerunning the same command resumes the study. Start the same command on several machines
    with one --storage (PostgreSQL, MySQL) and they share the work.
    """
    with errors(debug), deferred_interrupts() as interrupts:
        from satadvisor import spec as spec_mod
        from satadvisor._io import check_output_dir
        from satadvisor.config import TrainConfig
        from satadvisor.report import write_study
        from satadvisor.search import optimize as run_search
        from satadvisor.search.study import parse_objectives

        check_device(device)
        if in_memory_storage(storage):
            raise UsageError(
                f"{flag('storage')} {storage}: an in-memory database is lost when the run ends "
                f"(and each worker would get its own); pass a file, e.g. {flag('storage')} "
                "sqlite:///studies/NAME.db"
            )
        if epochs == "auto":
            raise UsageError(
                f"{flag('epochs')} auto is for analyze: a search compares its proxies at one "
                f"fixed number of epochs; pass {flag('epochs')} N (e.g. the epochs analyze "
                f"{flag('epochs')} auto took)"
            )
        parse_objectives(objectives)
        spec = spec_mod.load(model)
        pinned = spec.parse_set(list(set_items))
        if study_name is None:
            # the name optimize() would choose (see search.study.optimize); a dataset such as
            # imagefolder:data/pets would put a '/' into it, and so the report and the default
            # storage into nested folders below reports/ and studies/
            study_name = f"{spec.name}-{dataset or spec.dataset or 'digits'}"
            study_name = "".join("_" if c in "/\\\0" else c for c in study_name)
        check_output_dir(out / study_name)
        interrupts.checkpoint()
        config = TrainConfig(
            epochs=5 if epochs is None else int(epochs),
            batch_size=batch_size,
            lr=lr,
            device=device,
            seed=seed,
            positions=positions,  # type: ignore[arg-type]  # _Positions gives auto, all or int
        )
        with interrupts.paused():  # the search defers Ctrl-C itself (search/_signals.py)
            summary = run_search(
                model,
                budget=budget,
                strategy=strategy,
                objectives=objectives,
                study_name=study_name,
                storage=storage,
                workers=workers,
                validate_top=validate_top,
                validate_seeds=validate_seeds,
                full_epochs=full_epochs,
                config=config,
                dataset=dataset,
                resolution=resolution,
                data_dir=data_dir,
                download=download,
                pinned=pinned,
                timeout=timeout,
                subset=subset,
                full_subset=full_subset,
                on_progress=None if quiet else print_progress,
            )
        try:
            index = write_study(summary, out / study_name, single_file=single_file)
        except OutputError as exc:  # a full disk after hours of search: the study is kept
            raise OutputError(study_kept(str(exc), study_name, storage, out)) from exc
        interrupts.checkpoint()
        click.echo(format_study(summary, index))


def study_kept(message: str, study_name: str, storage: str | None, out: Path) -> str:
    """A report write that failed after the search: its problem, and that the study is saved
    (rerunning ``optimize`` would refuse, the budget being spent; ``report`` writes it)."""
    from satadvisor.search.storage import redact

    where = f" {flag('storage')} {redact(storage)}" if storage else ""
    where += f" {flag('out')} {out}" if out != Path("reports") else ""
    return (
        f"{message.split('; ')[0]}; the study is saved: make room (or pass {flag('out')} with a "
        f"writable directory) and run `satadvisor report {study_name}{where}` to write its "
        "report"
    )
