"""The rules call a difference only when the measured uncertainty can carry it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from satadvisor.rules import Z, evaluate, pattern, tail_layers
from satadvisor.saturation._result import LayerSaturation


def _profile(values: Sequence[float], errors: Sequence[float | None]) -> list[LayerSaturation]:
    return [
        LayerSaturation(f"conv{i + 1}", "Conv2d", 64, 4096, v, max(1, round(v * 64)), (), e)
        for i, (v, e) in enumerate(zip(values, errors, strict=True))
    ]


TAIL = [0.40, 0.45, 0.50, 0.42, 0.15, 0.12]  # median 0.435 before conv5; limit 0.2175


def test_a_tail_well_beyond_its_uncertainty_is_called() -> None:
    prof = _profile(TAIL, [0.01] * 6)
    assert tail_layers(prof) == ["conv5", "conv6"]
    found = evaluate(prof, None)
    assert found[0].kind == "tail"
    assert found[0].evidence["standard_errors"] == [0.01, 0.01]
    assert found[0].evidence["z"] == Z


def test_the_same_tail_within_its_uncertainty_is_not_called_and_the_verdict_says_so() -> None:
    # conv5 at 0.15 ± 0.05: 0.15 + 2·0.05 = 0.25 is above the 0.2175 limit
    prof = _profile(TAIL, [0.01, 0.01, 0.01, 0.01, 0.05, 0.01])
    assert tail_layers(prof) == []
    assert pattern(prof) == ((), ())
    (even,) = evaluate(prof, None)
    assert even.kind == "even"
    assert "conv5–conv6 sit lower, but by less than 2 standard errors" in even.message


def test_without_standard_errors_the_values_count_as_exact() -> None:
    assert tail_layers(_profile(TAIL, [None] * 6)) == ["conv5", "conv6"]
    assert tail_layers(_profile(TAIL, [0.0] * 6)) == ["conv5", "conv6"]


@pytest.mark.parametrize(
    "value,error,called",
    [(0.99, 0.005, True), (0.99, 0.03, False), (0.96, 0.0, True), (0.96, 0.01, False)],
)
def test_too_narrow_needs_the_value_beyond_the_limit_by_two_errors(
    value: float, error: float, called: bool
) -> None:
    prof = _profile([0.5, 0.55, value, 0.5], [0.01, 0.01, error, 0.01])
    kinds = {f.kind: f for f in evaluate(prof, None)}
    assert ("too_narrow" in kinds) is called
    if called:
        assert kinds["too_narrow"].evidence["standard_errors"] == {"conv3": error}


@pytest.mark.parametrize("error,called", [(0.005, True), (0.02, False)])
def test_too_wide_needs_the_value_below_the_limit_by_two_errors(error: float, called: bool) -> None:
    prof = _profile([0.5, 0.55, 0.02, 0.5], [0.01, 0.01, error, 0.01])
    assert ("too_wide" in {f.kind for f in evaluate(prof, None)}) is called


def test_early_underuse_needs_its_gap_beyond_the_uncertainty() -> None:
    values = [0.01, 0.40, 0.45, 0.42, 0.44]  # 0.01 against 0.1 × 0.43
    assert pattern(_profile(values, [0.005] * 5))[1] == ("conv1",)
    assert pattern(_profile(values, [0.03, 0.005, 0.005, 0.005, 0.005]))[1] == ()
