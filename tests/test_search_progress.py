"""The ETA of ``optimize`` over the search and the validation runs (satadvisor.search.progress).

The clock is injected, so every expected figure below is worked out by hand from the
documented model: search = trials left × mean wall time per trial of this call; a full run =
median overhead + proxy seconds per epoch × full epochs × (full-run work / proxy work per
epoch), work = training images + 1/3 × validation images; scaled by actual / predicted of the
finished full runs.
"""

from __future__ import annotations

import pytest

from satadvisor.search.progress import SearchClock, SearchProgress
from satadvisor.search.study_record import ValidationRun
from satadvisor.search.worker import TrialEvent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def event(number: int, done: int, *, seconds: float, epochs: int, epoch_seconds: float,
          source: str = "sampler", images: tuple[int, int] = (900, 90)) -> TrialEvent:  # fmt: skip
    return TrialEvent(
        number=number,
        done=done,
        budget=4,
        state="complete",
        knobs={"depth": 4},
        accuracy=0.9,
        macs=1000,
        source=source,
        epochs=epochs,
        seconds=seconds,
        epoch_seconds=epoch_seconds,
        train_images=images[0],
        eval_images=images[1],
    )


def make(clock: Clock, **kw: object) -> SearchClock:
    options: dict[str, object] = {
        "budget": 4,
        "validate_top": 1,
        "seeds": 2,
        "full_epochs": 3,
        "clock": clock,
    }
    options.update(kw)
    return SearchClock(**options)  # type: ignore[arg-type]


def test_search_eta_includes_the_validation_runs() -> None:
    clock = Clock()
    eta = make(clock)
    clock.now = 11.0
    p = eta.trial(event(0, 1, seconds=10, epochs=2, epoch_seconds=4, source="baseline"))
    assert p.phase == "search" and (p.done, p.total) == (1, 4)
    assert p.search_left == pytest.approx(3 * 11.0)
    # overhead 10 - 2*4 = 2; a full run: 2 + 4 s/epoch * 3 epochs * ratio 1 = 14, for the
    # baseline (its own epoch) and the one pick (the mean epoch, also 4), 2 seeds each
    assert p.validation_left == pytest.approx(4 * 14.0)
    assert p.runs_left == 4 and not p.at_least
    assert p.eta == pytest.approx(33.0 + 56.0)

    clock.now = 20.0
    p = eta.trial(event(1, 2, seconds=6, epochs=1, epoch_seconds=2))
    assert p.search_left == pytest.approx(2 * 10.0)  # 20 s over 2 trials
    # overhead median(2, 4) = 3; baseline 3 + 4*3 = 15; a pick 3 + mean(4, 2)*3 = 12
    assert p.validation_left == pytest.approx(2 * 15.0 + 2 * 12.0)


def test_validation_refines_with_the_finished_runs() -> None:
    clock = Clock()
    eta = make(clock)
    eta.trial(event(0, 4, seconds=8, epochs=2, epoch_seconds=4, source="baseline"))
    eta.trial(event(5, 4, seconds=4, epochs=2, epoch_seconds=2))
    clock.now = 100.0
    p = eta.start_validation([0, 5, 0, 5])  # seed-major: baseline, pick, baseline, pick
    assert p.phase == "validation" and (p.done, p.total) == (0, 4)
    assert p.search_left == 0.0
    # overhead 0 for both; baseline 4*3 = 12, pick 2*3 = 6
    assert p.validation_left == pytest.approx(12 + 6 + 12 + 6)
    clock.now = 124.0  # the baseline's full run took 24 s against 12 predicted: factor 2
    p = eta.run(ValidationRun(trial=0, baseline=True, train_images=900, val_images=90))
    assert (p.done, p.total, p.runs_left) == (1, 4, 3)
    assert p.run is not None and p.run.trial == 0
    assert p.validation_left == pytest.approx(2 * (6 + 12 + 6))
    clock.now = 130.0  # the pick took 6 s: (24 + 6) / (12 + 6) = 5/3
    p = eta.run(ValidationRun(trial=5, baseline=False, train_images=900, val_images=90))
    assert p.validation_left == pytest.approx(5 / 3 * (12 + 6))
    clock.now = 150.0
    eta.run(ValidationRun(trial=0, baseline=True, train_images=900, val_images=90))
    clock.now = 160.0
    p = eta.run(ValidationRun(trial=5, baseline=False, train_images=900, val_images=90))
    assert p.validation_left == 0.0 and p.runs_left == 0 and p.eta == 0.0


def test_full_runs_on_more_images_take_longer() -> None:
    # proxies capped at 300 images a split, full runs at 600; the validation split (144)
    # is below both caps, the training split is capped in the proxy
    clock = Clock()
    eta = make(clock, subset=300, full_subset=600, seeds=1)
    p = eta.trial(
        event(0, 4, seconds=3, epochs=1, epoch_seconds=3, source="baseline", images=(300, 144))
    )
    proxy_work = 300 + 144 / 3
    # training split: the proxy is capped, so the full run has at least 300 images: lower bound
    assert p.at_least
    assert p.validation_left == pytest.approx(2 * 3 * 3 * (300 + 144 / 3) / proxy_work)
    p = eta.start_validation([0, 0])
    clock.now = 10.0
    p = eta.run(ValidationRun(trial=0, baseline=True, train_images=600, val_images=144))
    assert not p.at_least  # the first full run told its sizes
    # predicted now 3 * 3 * (600 + 48) / 348; the run took 10 s: the remaining run takes 10 s
    assert p.validation_left == pytest.approx(10.0)


def test_full_subset_below_the_proxy_cap_is_exact() -> None:
    clock = Clock()
    eta = make(clock, subset=300, full_subset=200, seeds=1)
    p = eta.trial(
        event(0, 1, seconds=3, epochs=1, epoch_seconds=3, source="baseline", images=(300, 100))
    )
    assert not p.at_least
    ratio = (200 + 100 / 3) / (300 + 100 / 3)
    assert p.validation_left == pytest.approx(2 * 3 * 3 * ratio)


def test_no_validation_and_nothing_timed() -> None:
    clock = Clock()
    eta = make(clock, validate_top=0)
    clock.now = 5.0
    p = eta.trial(event(0, 1, seconds=5, epochs=1, epoch_seconds=4, source="baseline"))
    assert p.validation_left == 0.0 and p.runs_left == 0
    assert p.eta == pytest.approx(3 * 5.0)

    eta = make(Clock())
    failed = TrialEvent(0, 1, 4, "failed", {}, None, None, "baseline", "boom", 0)
    p = eta.trial(failed)
    assert p.validation_left is None and p.eta is None  # no proxy epoch timed yet


def test_progress_is_a_plain_record() -> None:
    p = SearchProgress("search", 1, 4, 2.0, 3.0, None, 4)
    assert p.eta is None
    assert SearchProgress("search", 1, 4, 2.0, 3.0, 4.0, 4).eta == 7.0


def test_a_positive_time_left_never_reads_as_done() -> None:
    from satadvisor.cli.terminal import minutes

    assert minutes(0) == "0 s"
    assert [minutes(s) for s in (0.004, 0.3, 9.94)] == ["0.1 s", "0.3 s", "9.9 s"]
    assert [minutes(s) for s in (10.4, 89.6, 90, 150)] == ["10 s", "90 s", "1.5 min", "2.5 min"]
