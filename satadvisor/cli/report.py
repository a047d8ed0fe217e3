"""``satadvisor report``: re-render a study's report from its storage."""

from __future__ import annotations

from pathlib import Path

import click

from satadvisor._flags import flag
from satadvisor._io import plain_folder_name
from satadvisor.cli.guard import deferred_interrupts, errors
from satadvisor.cli.options import (
    CONTEXT,
    debug_option,
    folder_name,
    in_memory_storage,
    single_file_option,
)
from satadvisor.cli.terminal import format_study
from satadvisor.errors import UsageError


@click.command(context_settings=CONTEXT)
@click.argument("study")
@click.option("--storage", default=None, metavar="URL", help="Default: studies/<STUDY>.db.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Directory the report folder is written into.",
)
@click.option(
    "--name",
    default=None,
    callback=lambda ctx, param, value: folder_name(param, value),
    help="Report folder name. Default: STUDY.",
)
@single_file_option
@debug_option
def report(
    study: str,
    storage: str | None,
    out: Path,
    name: str | None,
    single_file: bool,
    debug: bool,
) -> None:
    """Re-render the report of STUDY from its storage.

    STUDY names the report folder unless --name is given; a study name that is not a plain
    folder name (one with '/', or '..') needs --name, and --storage as it has no default file.
    """
    with errors(debug), deferred_interrupts() as interrupts:
        from satadvisor._io import check_output_dir

        if storage is None and not plain_folder_name(study):
            raise UsageError(
                f"no study {study!r} under studies/: only a plain name (no '/', not '', '.' "
                f"or '..') has a default storage there; pass the {flag('storage')} it used (and "
                f"{flag('name')} for its folder)"
            )
        if in_memory_storage(storage):
            raise UsageError(
                f"{flag('storage')} {storage}: an in-memory database is empty when it is opened, "
                f"so it holds no study; pass the {flag('storage')} optimize used"
            )
        folder = name or study
        if not plain_folder_name(folder):
            raise UsageError(
                f"study {study!r} is not a plain folder name, so it cannot name the report "
                f"folder; pass {flag('name')} with one, e.g. {flag('name')} my-study"
            )
        check_output_dir(out / folder)
        interrupts.checkpoint()

        from satadvisor.report import write_study
        from satadvisor.search import load_summary

        summary = load_summary(study, storage=storage)
        interrupts.checkpoint()
        index = write_study(summary, out / folder, single_file=single_file)
        interrupts.checkpoint()
        click.echo(format_study(summary, index))
