"""The terminal text of the commands: the analysis summary (:func:`format_summary`), the study
summary (:func:`format_study`), and the progress lines and bar on stderr.

The summaries read the typed records the library returns (:class:`~satadvisor.analysis_record.
AnalysisRecord`, :class:`~satadvisor.search.study_record.StudySummary`); torch, tqdm and the
report are imported only when a line is made, so ``--help`` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from satadvisor._flags import flag, set_args

if TYPE_CHECKING:
    from satadvisor.analysis_record import AnalysisRecord
    from satadvisor.search.study_record import Recommendation, StudySummary, ValidatedConfig

BAR_WIDTH = 30


def human(n: float | None) -> str:
    """14858600 → "14.9 M": the report's count format, for the terminal."""
    from satadvisor.report._page import fmt_count

    return fmt_count(n)


def minutes(seconds: float) -> str:
    """``0 s`` only when nothing is left; a few seconds with a decimal (a tiny validation run
    must not read as done); whole seconds to 90 s, then minutes."""
    if seconds <= 0:
        return "0 s"
    if seconds < 10:
        return f"{max(seconds, 0.1):.1f} s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def accuracy(value: float | None) -> str:
    """An accuracy, or '—' for a run that has none (it diverged)."""
    return "—" if value is None else f"{value:.3f}"


def knobs_text(knobs: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in knobs.items())


def stderr_line(text: str) -> None:
    """A line on stderr that does not break a progress bar drawn there."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        click.echo(text, err=True)


# ---------------------------------------------------------------------------------------------
# satadvisor analyze


@contextmanager
def progress_bar(*, enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """A tqdm bar on a terminal (epoch i/N, step, ETA); nothing when piped."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar: tqdm[Any] | None = None

    def update(p: Any) -> None:
        nonlocal bar
        if bar is None or bar.total != p.epochs * p.steps:
            if bar is not None:
                bar.close()
            bar = tqdm(total=p.epochs * p.steps, unit="step", leave=False, file=sys.stderr)
        bar.set_description(f"epoch {p.epoch}/{p.epochs}")
        bar.n = (p.epoch - 1) * p.steps + p.step
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


class EpochLines:
    """One line per proxy epoch on stderr: accuracy, whether the proxy learned, how far the
    profile still moves (it settles at ≤ the tolerance), and the ETA. Above the bar on a
    terminal; plain lines when piped (a long run in the background is not silent)."""

    def __init__(self, config: Any) -> None:
        import time

        from satadvisor.integrations import SaturationWatch

        self._clock = time.monotonic
        self._start = self._clock()
        self._watch = SaturationWatch()
        self._config = config

    def __call__(self, result: Any) -> None:
        from satadvisor import trust

        record = result.epochs[-1]
        history = [ep.get("train", []) for ep in result.saturation]
        state = self._watch.update(history[-1]) if history else None
        done, cap = record.epoch, self._config.epochs
        per_epoch = (self._clock() - self._start) / done
        parts = [f"epoch {done}/{cap}{' (at most)' if self._config.auto_epochs else ''}"]
        parts.append(f"val acc {record.eval_accuracy:.3f}, loss {record.train_loss:.3f}")
        parts.append("learned" if result.learned else "not learned yet")
        if state is not None and state.max_change is not None:
            moved = f"profile moved {state.max_change:.3f}"
            settled = "settled" if state.settled else f"settles at ≤ {trust.SETTLE_TOLERANCE:g}"
            parts.append(f"{moved} ({settled})")
        left = (cap - done) * per_epoch
        if done < cap:
            parts.append(f"ETA {'≤ ' if self._config.auto_epochs else ''}{minutes(left)}")
        stderr_line(", ".join(parts))
        return None


def bar(value: float | None) -> str:
    if value is None:
        return " " * BAR_WIDTH
    filled = max(0, min(BAR_WIDTH, round(value * BAR_WIDTH)))
    return "█" * filled + "·" * (BAR_WIDTH - filled)


def format_summary(analysis: AnalysisRecord, index: Path) -> str:
    """The compact terminal summary of an analysis record: saturation bars with the tail
    marked, the advice with each change's "try it" command, the report's path."""
    from satadvisor.report import try_command

    lines = []
    training = analysis.training
    head = (
        f"{analysis.model_name} on {analysis.dataset} at {analysis.resolution} px"
        f" — {human(analysis.macs)} MACs, {human(analysis.params)} params"
    )
    lead = list(analysis.lead)
    verdict = analysis.verdict
    if training is not None:
        head += f", {training.eval_name} accuracy {accuracy(training.accuracy)}"
        head += f" after {training.epochs} epoch{'s' if training.epochs != 1 else ''}"
        if training.status not in ("completed", "not_learned"):
            head += f" ({training.status}: {training.reason})"
        elif training.settled_epoch:
            head += f", settled from epoch {training.settled_epoch}"
    lines.append(head)
    if lead and training is not None and not training.learned:
        # A proxy that learned nothing: say so before any number that could be read as advice.
        lines.append("DID NOT LEARN: " + " ".join(lead))
        verdict = verdict[len(" ".join(lead)) :].strip()
    width = max((len(row.label or row.name) for row in analysis.layers), default=4)
    for row in analysis.layers:
        sat = row.saturation
        marks = []
        if row.tail:
            marks.append("tail")
        if row.unproductive:
            marks.append("unproductive")
        elif row.critical:
            marks.append("critical")
        value = f"{sat:5.2f}" if sat is not None else "  -  "
        r_min = f"r={row.r_min}" if row.r_min is not None else ""
        lines.append(
            f"  {row.label or row.name:<{width}}  {bar(sat)} {value}  {r_min:<7} "
            f"{' '.join(marks)}".rstrip()
        )
    lines.append("")
    lines.append(verdict)
    for i, rec in enumerate(analysis.recommendations, 1):
        cost = rec.cost
        effect = ""
        if cost is not None:
            effect = f" ({cost.macs_ratio:.2f}× MACs, {cost.params_ratio:.2f}× params)"
        lines.append(f"  {i}. {rec.title}{effect}")
        command = try_command(analysis, rec, i)  # empty for a change made by hand
        if command:
            lines.append(f"     try: {command}")
    lines.append("")
    lines.append(f"report: {index}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# satadvisor optimize / report


def eta_text(progress: Any) -> str:
    """``ETA 4.1 min (search 1.5 min + validation ≥ 2.6 min)``; the parts only while both go on."""
    at_least = "≥ " if progress.at_least else ""
    if progress.eta is None:
        if progress.search_left is None:
            return "ETA: timing the first trials"
        return f"search ETA {minutes(progress.search_left)}; validation not timed yet"
    text = f"ETA {at_least}{minutes(progress.eta)}"
    if progress.search_left and progress.validation_left:
        text += (
            f" (search {minutes(progress.search_left)} + validation {at_least}"
            f"{minutes(progress.validation_left)}, {progress.runs_left} full runs)"
        )
    return text


def print_progress(progress: Any) -> None:
    """One line per finished trial and per full run on stderr (above nothing: no bar), with
    the ETA over the search and the validation runs; plain when piped."""
    if progress.trial is not None:
        event = progress.trial
        result = ""
        if event.accuracy is not None:
            result = f"acc {event.accuracy:.3f}, {human(event.macs or 0)} MACs"
            if event.state == "pruned" and event.reason:
                result += f" after {event.epochs} epoch(s): {event.reason}"
        elif event.reason:
            result = event.reason
        stderr_line(
            f"trial {event.done}/{event.budget} #{event.number} [{event.source}] "
            f"{knobs_text(event.knobs)}: {event.state} {result} ({eta_text(progress)})"
        )
    elif progress.run is not None:
        record = progress.run
        label = "baseline" if record.baseline else f"trial #{record.trial}"
        status = "" if record.status == "completed" else f" ({record.status})"
        stderr_line(
            f"full run {progress.done}/{progress.total} {label} seed {record.seed} "
            f"{knobs_text(record.knobs)}: val acc {accuracy(record.val_accuracy)}, "
            f"test acc {accuracy(record.test_accuracy)} (reported only){status} "
            f"({eta_text(progress)})"
        )
    elif progress.total:
        stderr_line(
            f"search done; validation: {progress.total} full run"
            f"{'' if progress.total == 1 else 's'} ({eta_text(progress)})"
        )


def spread(config: ValidatedConfig) -> str:
    """Mean validation accuracy with its spread over seeds: ``0.958 ± 0.004 (3 seeds)``."""
    n = len(config.seeds)
    std = f" ± {config.val_std:.3f}" if config.val_std is not None else ""
    return f"{accuracy(config.val_accuracy)}{std} ({n} seed{'' if n == 1 else 's'})"


def paired_text(rec: Recommendation, tolerance: float) -> str:
    """``Δ val +0.002, 95 % interval [-0.003, +0.007]: confirmed, accuracy tie`` (or why not)."""
    cmp = rec.comparison
    delta = f"Δ val {rec.accuracy_delta:+.3f}"
    verdict = rec.verdict
    if cmp is None or cmp.low is None or cmp.high is None:
        why = "one seed, no interval" if rec.basis == "one seed" else "runs missing"
        return f"{delta}: {verdict} ({why})"
    interval = f"{round(100 * cmp.level)} % interval [{cmp.low:+.3f}, {cmp.high:+.3f}]"
    if rec.basis == "missing runs":
        why = f"{cmp.missing} runs missing or unscored"
    elif verdict == "tie":
        why = "the interval contains 0"
    elif verdict == "confirmed":
        why = (
            "more accurate"
            if cmp.accuracy == "more accurate"
            else f"accuracy {cmp.accuracy}, within the {-tolerance:+.3f} tolerance"
        )
    elif rec.claim == "cheaper":
        why = f"the interval reaches below {-tolerance:+.3f}"
    else:
        why = "the interval does not lie above 0"
    return f"{delta}, {interval}: {verdict} ({why})"


def format_study(summary: StudySummary, index: Path) -> str:
    """Terminal summary of a study: the recommended configurations against the baseline.

    Validation accuracy (what chose) with its spread over seeds, the paired difference to the
    baseline with its 95 % interval and the verdict, and a confirmed pick's ``--set`` arguments;
    test accuracy is shown as reported only.
    """
    head = (
        f"study {summary.study_name}: {summary.counted_trials} trials "
        f"(budget {summary.budget}), {len(summary.pareto)} on the Pareto front"
    )
    missed = summary.not_learned
    if missed:
        head += f"; {missed} prox{'y' if missed == 1 else 'ies'} did not learn (left out)"
    lines = [head]
    base = summary.baseline
    if base is not None:
        lines.append(
            f"  baseline   {knobs_text(base.knobs)}: val acc {spread(base)}, test acc "
            f"{accuracy(base.test_accuracy)} (reported only), {human(base.macs)} MACs"
        )
    for rec in summary.recommended:
        word = "recommend " if rec.confirmed else "candidate "
        lines.append(
            f"  {word} {knobs_text(rec.knobs)}: val acc {spread(rec)}, test acc "
            f"{accuracy(rec.test_accuracy)} (reported), {rec.macs_ratio:.2f}× MACs"
        )
        lines.append(f"             {paired_text(rec, summary.tolerance)}")
        if rec.confirmed:
            lines.append(f"             {set_args(rec.knobs)}")
    if base is not None and not any(r.confirmed for r in summary.recommended):
        if len(summary.validation) < 2:
            lines.append("  no other configuration was validated: keep the baseline")
        elif not summary.recommended:
            lines.append("  no validated configuration beats the baseline: keep it")
        elif len(base.seeds) < 2:
            lines.append(
                "  nothing is confirmed with one seed: keep the baseline, or rerun with "
                f"{flag('validate_seeds')} 3 (or more)"
            )
        else:
            lines.append("  no candidate is confirmed over the seeds: keep the baseline")
    if summary.rank_agreement is not None:
        lines.append(
            f"  proxy vs full-run validation rank agreement (Spearman): "
            f"{summary.rank_agreement:.2f}"
        )
    lines.append(f"report: {index}")
    return "\n".join(lines)
