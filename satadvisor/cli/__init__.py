"""The ``satadvisor`` command: parses options, calls the library, prints. The only place that
prints or exits.

- :mod:`~satadvisor.cli.analyze`, :mod:`~satadvisor.cli.optimize`, :mod:`~satadvisor.cli.report`
  — the three commands, each a thin layer over the library function it names;
- :mod:`~satadvisor.cli.options` — the options and parameter types they share;
- :mod:`~satadvisor.cli.guard` — how a command ends: one error line, held warnings, Ctrl-C;
- :mod:`~satadvisor.cli.terminal` — the terminal text, read from the library's typed records.

Heavy imports (torch) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import click

from satadvisor.cli import analyze, optimize, report
from satadvisor.cli.guard import Main
from satadvisor.cli.options import CONTEXT
from satadvisor.cli.terminal import format_study, format_summary


@click.group(cls=Main, context_settings=CONTEXT)
@click.version_option(package_name="satadvisor")
def main() -> None:
    """Is my CNN the right shape? Layer saturation + receptive fields -> concrete changes."""


main.add_command(analyze.analyze)
main.add_command(optimize.optimize)
main.add_command(report.report)

__all__ = ["format_study", "format_summary", "main"]
