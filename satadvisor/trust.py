"""When a measured profile can carry advice: the proxy *learned*, and its profile *settled*.

A network near chance level has low saturation in every deep layer for no architectural reason,
and a profile that is still moving says little about the trained network (see DESIGN.md,
"When a profile can be read"). Two tests decide whether the rules may read a profile:

- :func:`learning` — the validation accuracy is above the majority-class rate by a margin that
  is significant for the size of the validation split (one-sided exact binomial test, scipy's
  :func:`~scipy.stats.binomtest`, at ``alpha`` = 1 %), and the training loss fell (the last
  epoch's mean training loss is below the loss of the untrained network's first batch).
- :func:`settling` — over the last epoch every layer's saturation moved by at most
  ``tolerance`` (absolute; or by one eigen-direction, 1/width, for layers so narrow that one
  direction is more than that: the measurement cannot move by less) and the pattern the rules
  read (tail and under-used early layers) did not change. The first epoch of the settled
  stretch that reaches the end is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import binom, binomtest

from satadvisor.saturation._result import LayerSaturation

#: Significance level of the learned test: a proxy at chance level passes it 1 time in 100.
ALPHA = 0.01
#: Largest per-layer saturation change over the last epoch of a settled profile.
SETTLE_TOLERANCE = 0.03


@dataclass(frozen=True)
class Learning:
    """Whether a run learned: accuracy against the majority-class rate, and the loss trend.

    ``required_accuracy`` is the smallest validation accuracy that is significant at ``alpha``
    for ``eval_images`` images (what a user must beat), ``p_value`` the test's p-value.
    """

    learned: bool
    accuracy: float
    eval_images: int
    majority_rate: float
    required_accuracy: float
    p_value: float
    alpha: float
    initial_loss: float | None
    final_loss: float | None
    loss_fell: bool

    @property
    def reason(self) -> str | None:
        """Why the run did not learn, in one clause (None when it learned)."""
        if self.learned:
            return None
        if self.accuracy < self.required_accuracy:
            return (
                f"validation accuracy {self.accuracy:.1%} is not significantly above the "
                f"majority-class rate {self.majority_rate:.1%} on {self.eval_images:,} images "
                f"(needs ≥ {self.required_accuracy:.1%})"
            )
        return (
            f"the training loss did not fall ({self.initial_loss:.3g} over the first steps, "
            f"{self.final_loss:.3g} over the last epoch)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Learning:
        return cls(**{k: v for k, v in d.items() if k != "reason"})


def required_accuracy(eval_images: int, majority_rate: float, *, alpha: float = ALPHA) -> float:
    """The smallest accuracy on ``eval_images`` images that a one-sided binomial test at
    ``alpha`` calls significantly above ``majority_rate`` (1.0 when none can: too few images)."""
    if eval_images <= 0 or majority_rate >= 1.0:
        return 1.0
    # smallest k with P(X >= k) <= alpha, X ~ Binomial(n, p): binom.isf gives P(X > k) <= alpha
    k = int(binom.isf(alpha, eval_images, majority_rate)) + 1
    if k > eval_images:
        return 1.0
    return k / eval_images


def learning(
    *,
    accuracy: float,
    eval_images: int,
    majority_rate: float,
    initial_loss: float | None,
    final_loss: float | None,
    alpha: float = ALPHA,
) -> Learning:
    """The learned test of one run (see the module docstring)."""
    correct = round(accuracy * eval_images)
    if eval_images > 0 and majority_rate < 1.0:
        p = float(binomtest(correct, eval_images, majority_rate, alternative="greater").pvalue)
    else:
        p = 1.0
    fell = initial_loss is not None and final_loss is not None and final_loss < initial_loss
    return Learning(
        learned=p < alpha and fell,
        accuracy=accuracy,
        eval_images=eval_images,
        majority_rate=majority_rate,
        required_accuracy=required_accuracy(eval_images, majority_rate, alpha=alpha),
        p_value=p,
        alpha=alpha,
        initial_loss=initial_loss,
        final_loss=final_loss,
        loss_fell=fell,
    )


@dataclass(frozen=True)
class Settling:
    """Whether a saturation history settled.

    ``epoch`` is the first epoch (1-based) of the settled stretch that reaches the last epoch
    (None: the last epoch is not settled); ``max_change`` the largest per-layer change over the
    last epoch (None with fewer than two epochs); ``pattern_changed`` whether the tail/early
    pattern changed over it; ``reason`` says in one clause why it is not settled.
    """

    settled: bool
    epoch: int | None
    epochs: int
    max_change: float | None
    moving_layer: str | None
    pattern_changed: bool | None
    tolerance: float

    @property
    def reason(self) -> str | None:
        if self.settled:
            return None
        if self.max_change is None:
            return "one epoch cannot show a settled profile (it compares two)"
        if self.pattern_changed:
            return "the tail / under-use pattern changed over the last epoch"
        return (
            f"saturation still moved by up to {self.max_change:.2f} over the last epoch "
            f"({self.moving_layer}; settled means ≤ {self.tolerance:.2f} or one "
            "eigen-direction per layer)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Settling:
        return cls(**{k: v for k, v in d.items() if k != "reason"})


def _step(
    before: Sequence[LayerSaturation],
    after: Sequence[LayerSaturation],
    pattern: Callable[[Sequence[LayerSaturation]], Hashable],
    tolerance: float,
) -> tuple[float, str | None, bool, bool]:
    """(largest per-layer change, the layer that moved most past its allowance (else the one
    that moved most), every layer within its allowance, pattern changed) of one epoch."""
    old = {layer.name: layer.saturation for layer in before}
    rows = []  # (excess over the allowance, change, name)
    for layer in after:
        if layer.name in old:
            delta = abs(layer.saturation - old[layer.name])
            allowance = max(tolerance, 1.0 / layer.width if layer.width else 0.0)
            rows.append((delta - allowance, delta, layer.name))
    if not rows:
        return 0.0, None, True, pattern(before) != pattern(after)
    excess, _, worst = max(rows)
    _, change, largest = max(rows, key=lambda r: r[1])
    within = excess <= 1e-9
    moving = largest if within else worst
    return change, moving, within, pattern(before) != pattern(after)


def settling(
    history: Sequence[Sequence[LayerSaturation]],
    *,
    pattern: Callable[[Sequence[LayerSaturation]], Hashable] = lambda _: None,
    tolerance: float = SETTLE_TOLERANCE,
) -> Settling:
    """Whether the per-epoch profiles ``history`` (oldest first) settled (see the module)."""
    epochs = len(history)
    if epochs < 2:
        return Settling(False, None, epochs, None, None, None, tolerance)
    steps = [_step(history[i - 1], history[i], pattern, tolerance) for i in range(1, epochs)]
    ok = [within and not changed for _, _, within, changed in steps]
    change, moving, _, changed = steps[-1]
    first = None
    if ok[-1]:
        i = len(ok) - 1
        while i > 0 and ok[i - 1]:
            i -= 1
        first = i + 2  # step i compares epochs i+1 and i+2 (1-based): settled from epoch i+2
    return Settling(ok[-1], first, epochs, change, moving, changed, tolerance)
