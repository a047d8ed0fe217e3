"""One ETA over an :func:`~satadvisor.search.optimize` call: the search and the validation runs.

The search's remaining time is the trials left times the mean time per trial of this call so
far (wall clock, sampler included). The validation's is predicted before it starts, from the
proxies: a full run of a configuration takes its proxy's seconds per epoch (training and
scoring), times the full runs' epochs, times the ratio of the images an epoch processes in a
full run to those of a proxy epoch (training images plus a third of the validation images, a
forward pass costing about a third of a training step), plus the median per-trial time outside
the epochs (building, receptive-field analysis). Configurations that are not chosen yet (during
the search) take the mean proxy epoch of the trials so far, and the baseline its own. Once full
runs complete, the remaining runs are scaled by how the finished ones compared with their
prediction (wall-clock seconds between runs over predicted), so the estimate corrects itself:
data loading, test-set passes and a machine busier than during the search all end up in that
factor.

Where the full runs' sizes cannot be known before their data are loaded (the proxies capped
at ``subset`` images, the full runs at more), the proxy sizes stand in and the validation
estimate is a lower bound (:attr:`SearchProgress.at_least`) until the first full run reports
its sizes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from optuna.trial import FrozenTrial

from satadvisor.search.record import TrialRecord
from satadvisor.search.settings import TrialEvent
from satadvisor.search.study_record import ValidationRun

#: Cost of scoring one image relative to training on it (a forward pass against forward and
#: backward): the weight of the validation images in an epoch's work.
EVAL_WEIGHT = 1 / 3


@dataclass(frozen=True)
class SearchProgress:
    """Where an optimize call stands; reported after every trial, when the validation starts
    and after every full run.

    ``phase``: ``"search"`` or ``"validation"``. ``done`` / ``total``: trials counted in the
    study / the budget during the search; full runs done / full runs to do in this call during
    the validation. ``elapsed``: seconds since the call started. ``search_left`` and
    ``validation_left``: predicted seconds still to go in each phase (0 when nothing is left;
    None while nothing has been timed yet). ``runs_left``: full runs still to do (during the
    search: the most the validation will run, baseline and ``validate_top`` picks times the
    seeds). ``at_least``: the full runs' sizes are not known yet, so ``validation_left`` is a
    lower bound. ``trial`` / ``run``: the trial or full run just finished (None otherwise).
    """

    phase: Literal["search", "validation"]
    done: int
    total: int
    elapsed: float
    search_left: float | None
    validation_left: float | None
    runs_left: int
    at_least: bool = False
    trial: TrialEvent | None = None
    run: ValidationRun | None = None

    @property
    def eta(self) -> float | None:
        """Seconds until the call ends (search and validation); None while unknown."""
        if self.search_left is None or self.validation_left is None:
            return None
        return self.search_left + self.validation_left


def _full_split(proxy: int, subset: int | None, full_subset: int | None) -> tuple[int, bool]:
    """Images of a full run's split from its proxy size, and whether that is exact.

    A proxy split below its cap (or uncapped) holds the whole split, so the full run's size is
    that capped at ``full_subset``. A proxy capped at ``subset`` says only that the split has at
    least ``subset`` images: exact when the full runs are capped no higher, else a lower bound.
    """
    if subset is None or proxy < subset:
        return (proxy if full_subset is None else min(proxy, full_subset)), True
    if full_subset is not None and full_subset <= subset:
        return full_subset, True
    return proxy, False


class SearchClock:
    """Predicts the rest of an optimize call from what it has timed so far (module docstring).

    Feed it every finished trial (:meth:`trial`), the full runs to do once they are chosen
    (:meth:`start_validation`) and every finished full run (:meth:`run`); each returns the
    :class:`SearchProgress` to show. ``clock`` returns seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        budget: int,
        validate_top: int,
        seeds: int,
        full_epochs: int,
        subset: int | None = None,
        full_subset: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budget = budget
        self._validate_top = validate_top
        self._seeds = seeds
        self._full_epochs = full_epochs
        self._subset = subset
        self._full_subset = full_subset
        self._clock = clock
        self._start = clock()
        self._done = 0
        self._trials_run = 0  # trials of this call
        self._overheads: list[float] = []  # seconds of each trial outside its epochs
        self._epoch_seconds: dict[int, float] = {}  # trial number -> seconds per proxy epoch
        self._baseline: int | None = None
        self._proxy_sizes: tuple[int, int] | None = None  # (train, val) images of a proxy
        self._full_sizes: tuple[int, int] | None = None  # known once a full run reported them
        self._planned: list[int] | None = None  # trial number of each full run still to do
        self._runs_total = 0
        self._runs_done = 0
        self._finished: list[tuple[int, float]] = []  # (trial number, seconds) of full runs
        self._mark = self._start  # when the last full run ended (or the validation started)

    # ------------------------------------------------------------------ feeding
    def known_trials(self, trials: Iterable[FrozenTrial]) -> None:
        """Take the proxy timing of trials already in the study (a resumed study)."""
        for t in trials:
            rec = TrialRecord.of(t)
            self._note(t.number, rec.source, rec.wall_time, rec.epochs)
            if rec.counts:
                self._done += 1

    def trial(self, event: TrialEvent) -> SearchProgress:
        """A trial of this call finished."""
        self._done = event.done
        self._trials_run += 1
        self._note(event.number, event.source, event.seconds, event.epochs)
        if event.epoch_seconds is not None and event.epochs > 0:
            self._epoch_seconds[event.number] = event.epoch_seconds
            if event.seconds is not None:
                self._overheads.append(max(0.0, event.seconds - event.epochs * event.epoch_seconds))
        if event.train_images and event.eval_images:
            self._proxy_sizes = (event.train_images, event.eval_images)
        return self._progress("search", trial=event)

    def start_validation(self, planned: Sequence[int]) -> SearchProgress:
        """The search ended; ``planned`` holds the trial number of each full run to do."""
        self._planned = list(planned)
        self._runs_total = len(self._planned)
        self._mark = self._clock()
        return self._progress("validation")

    def run(self, record: ValidationRun) -> SearchProgress:
        """A full run finished (as :func:`~satadvisor.search.validate.validate` stored it)."""
        number = -1 if record.trial is None else record.trial
        now = self._clock()
        self._finished.append((number, now - self._mark))
        self._mark = now
        train, val = record.train_images, record.val_images
        if train is not None and val is not None:
            self._full_sizes = (train, val)
        if self._planned is not None and number in self._planned:
            self._planned.remove(number)
        self._runs_done += 1
        return self._progress("validation", run=record)

    def _note(self, number: int, source: str, seconds: float | None, epochs: int) -> None:
        if source == "baseline" and self._baseline is None:
            self._baseline = number
        if seconds is not None and epochs > 0:
            self._epoch_seconds[number] = seconds / epochs

    # ------------------------------------------------------------------ predicting
    def _size_ratio(self) -> tuple[float, bool]:
        """Work of a full-run epoch over that of a proxy epoch, and whether it is exact."""
        if self._proxy_sizes is None:
            # Without sizes only equal caps (both None: both runs use every image) are known.
            return 1.0, self._subset == self._full_subset
        train_p, val_p = self._proxy_sizes
        if self._full_sizes is not None:
            (train_f, val_f), exact = self._full_sizes, True
        else:
            train_f, exact_t = _full_split(train_p, self._subset, self._full_subset)
            val_f, exact_v = _full_split(val_p, self._subset, self._full_subset)
            exact = exact_t and exact_v
        proxy = train_p + EVAL_WEIGHT * val_p
        return (train_f + EVAL_WEIGHT * val_f) / proxy, exact

    def _mean_epoch(self) -> float | None:
        values = list(self._epoch_seconds.values())
        return sum(values) / len(values) if values else None

    def _run_seconds(self, number: int | None) -> float | None:
        """Predicted seconds of one full run of trial ``number`` (None: any configuration)."""
        per_epoch = self._epoch_seconds.get(number) if number is not None else None
        per_epoch = per_epoch if per_epoch is not None else self._mean_epoch()
        if per_epoch is None:
            return None
        overhead = statistics.median(self._overheads) if self._overheads else 0.0
        return overhead + per_epoch * self._full_epochs * self._size_ratio()[0]

    def _validation_left(self) -> tuple[float | None, int]:
        if self._validate_top <= 0:
            return 0.0, 0
        if self._planned is None:  # still searching: the baseline and up to validate_top picks
            configs: list[int | None] = [self._baseline] + [None] * self._validate_top
            runs = [c for c in configs for _ in range(self._seeds)]
        else:
            runs = list(self._planned)
        if not runs:
            return 0.0, 0
        predictions = [self._run_seconds(n) for n in runs]
        if any(p is None for p in predictions):
            return None, len(runs)
        return self._correction() * sum(p for p in predictions if p is not None), len(runs)

    def _correction(self) -> float:
        """Actual over predicted seconds of the finished full runs (1 before the first), the
        prediction made with what is known now (so exact sizes are not corrected twice)."""
        actual = predicted = 0.0
        for number, seconds in self._finished:
            guess = self._run_seconds(number)
            if guess is not None and guess > 0:
                actual += seconds
                predicted += guess
        return actual / predicted if predicted > 0 else 1.0

    def _progress(
        self,
        phase: Literal["search", "validation"],
        *,
        trial: TrialEvent | None = None,
        run: ValidationRun | None = None,
    ) -> SearchProgress:
        if phase == "search":
            left = max(0, self._budget - self._done)
            spent = self._clock() - self._start
            mean = spent / self._trials_run if self._trials_run else None
            search_left = 0.0 if left == 0 else (None if mean is None else left * mean)
            done, total = self._done, self._budget
        else:
            search_left = 0.0
            done, total = self._runs_done, self._runs_total
        validation_left, runs_left = self._validation_left()
        exact = self._size_ratio()[1] or self._validate_top <= 0
        return SearchProgress(
            phase=phase,
            done=done,
            total=total,
            elapsed=self._clock() - self._start,
            search_left=search_left,
            validation_left=validation_left,
            runs_left=runs_left,
            at_least=not exact and runs_left > 0,
            trial=trial,
            run=run,
        )


__all__ = ["EVAL_WEIGHT", "SearchClock", "SearchProgress"]
