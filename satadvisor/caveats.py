"""The sentences that open a verdict: what the advice rests on.

A proxy that diverged or did not learn carries no measured advice (and the likely fixes are
named); a profile that has not settled makes the measured findings provisional; and when the
measured profile and the receptive field disagree on a tail, one sentence says which witness
the suggestion rests on (DESIGN.md, "When a profile can be read"). :func:`lead` returns them for
:func:`satadvisor.analyze`, which passes them to :func:`satadvisor.rules.verdict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from satadvisor import rules, trust
from satadvisor._flags import flag
from satadvisor.config import TrainConfig
from satadvisor.train import RunResult

if TYPE_CHECKING:
    from satadvisor.data import DataBundle
    from satadvisor.spec import ModelSpec

__all__ = ["lead"]


def _fixes(result: RunResult, *, spec: ModelSpec, config: TrainConfig, data: DataBundle) -> str:
    """The likely fixes for a proxy that did not learn, the most likely first."""
    learning = result.learning
    last = result.epochs[-1]
    fixes = []
    initial, final = result.initial_loss, last.train_loss
    if initial is not None and final > 1.1 * initial:
        fixes.append(f"a lower learning rate ({flag('lr')}, now {config.lr:g}; the loss rose)")
    elif learning is not None and not learning.loss_fell:
        fixes.append(
            f"another learning rate ({flag('lr')}, now {config.lr:g}; the loss stayed flat)"
        )
    images = len(data.train)
    train_chance = learning is not None and last.train_accuracy < learning.required_accuracy
    if not config.auto_epochs:
        fixes.append(f"more epochs ({flag('epochs')} auto; {len(result.epochs)} ran)")
    if images < 100 * data.num_classes:
        fixes.append(f"more training images ({images:,} now; raise or drop {flag('subset')})")
    if train_chance and "width" in spec.knobs:
        fixes.append(f"a wider network ({flag('set')} width=…)")
    return ", ".join(fixes[:3]) if fixes else "another learning rate or more epochs"


def lead(
    result: RunResult | None,
    settling: trust.Settling | None,
    findings: list[rules.Finding],
    *,
    spec: ModelSpec,
    config: TrainConfig,
    data: DataBundle | None,
) -> list[str]:
    """The sentences that say what the advice rests on, before the main finding."""
    if result is not None and result.status == "diverged":
        return [
            f"The proxy diverged ({result.reason}): its saturation says nothing about the "
            f"architecture, so no advice rests on it; likely fix: a lower learning rate ({flag('lr')}, "
            f"now {config.lr:g}). Only the training-free receptive-field analysis below stands."
        ]
    if result is None or data is None or not result.epochs:
        return []
    if not result.learned:
        why = result.learning.reason if result.learning is not None else result.reason
        return [
            f"The proxy did not learn: {why}. Its saturation profile says nothing about the "
            "architecture, so no advice rests on it; likely fixes: "
            f"{_fixes(result, spec=spec, config=config, data=data)}. Only the training-free "
            "receptive-field analysis below stands."
        ]
    lead = []
    if settling is not None and not settling.settled:
        lead.append(
            f"The saturation profile had not settled after {_epochs(len(result.epochs))} "
            f"({settling.reason}): the measured findings are provisional and the width rules "
            f"did not run; rerun with {flag('epochs')} auto to let it settle."
        )
    lead += _witnesses(findings)
    return lead


def _witnesses(findings: list[rules.Finding]) -> list[str]:
    """One sentence when the measured profile and the receptive field disagree on a tail."""
    tail = next((f for f in findings if f.kind == "tail"), None)
    if tail is None:
        return []
    if tail.predicted and tail.evidence.get("measured_tail") is False:
        return [
            "The receptive field and the measured profile disagree (unproductive layers that "
            "still use their channels), so the suggestion below rests on the receptive field "
            "alone: validate it with a full run before adopting it."
        ]
    if not tail.predicted and tail.evidence.get("rf_agrees") is False:
        return [
            "The measured profile and the receptive field disagree on where the tail starts, "
            "so the suggestion below rests on the measured profile: it reads what the trained "
            "network does, the receptive field only its geometry."
        ]
    return []


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
