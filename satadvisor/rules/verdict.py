"""The verdict: the main finding and the top move in one or two sentences."""

from __future__ import annotations

from collections.abc import Sequence

from satadvisor import _flags
from satadvisor.rules.records import Finding, Recommendation

_ORDER = ("tail", "early_underuse", "too_narrow", "too_wide", "even")


def verdict(
    findings: Sequence[Finding],
    recommendations: Sequence[Recommendation],
    *,
    lead: Sequence[str] = (),
) -> str:
    """Plain sentences for the top of a report: ``lead`` (what the advice rests on, when that
    needs saying), the main finding and the top move. A move that rests on the receptive field
    alone, or on a provisional finding, says so."""
    head = " ".join(lead)
    if not findings:
        body = "Nothing to judge: no usable saturation profile and no receptive-field analysis."
        return f"{head} {body}".strip()
    main = min(findings, key=lambda f: _ORDER.index(f.kind))
    first = main.message
    if main.provisional is not None:
        first = f"Provisional: {first[0].lower()}{first[1:]}"
    moves = [r for r in recommendations if r.kind != "none"]
    if not moves:
        if main.kind == "even":
            return f"{head} {first}".strip()
        return (
            f"{head} {first} No change of the model's knobs could be built to address it.".strip()
        )
    top = moves[0]
    second = f"Suggested: {top.title[0].lower()}{top.title[1:]}"
    if top.cost is not None:
        second += f" ({top.cost.macs_ratio:.2f}× MACs)"
    if top.settings:
        second += f" — {top.model + ' ' if top.model else ''}{_flags.set_args(top.settings)}"
    if len(moves) > 1:
        second += f"; {len(moves) - 1} more below"
    return f"{head} {first} {second}.".strip()
