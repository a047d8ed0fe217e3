"""Which worker owns a running trial, and what happens when that worker is gone.

A trial's record names its owner (host and process) while it runs. :func:`reap_dead` fails the
running trials whose owner ran on this machine and no longer exists, or that have no record
:data:`DRAW_GRACE` seconds after their draw (a worker killed between the draw and the record),
so they stop counting and their configurations run again; a dead worker's trial whose final
record was written is told as that record says. Trials of other machines are left to the
storage's heartbeat. :func:`settle` waits for trials drawn moments ago by other workers to
write their records.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from satadvisor.search.record import KEY, TrialRecord
from satadvisor.search.storage import pid_alive

#: Seconds a trial may run without a record before its worker is taken for dead (a record is
#: written right after the draw, but several workers starting at once on a loaded machine delay
#: it: benchmarks/RESULTS.md, "Search workers"); until then other workers wait for it.
DRAW_GRACE = 60.0


def settle(study: optuna.Study, number: int) -> list[FrozenTrial]:
    """The study's trials, read again while an earlier trial, drawn moments ago, has not
    written its record yet (it may hold the same configuration or the last budget slot)."""
    while True:
        trials = study.get_trials(deepcopy=False)
        now = time.time()
        drawing = [
            t
            for t in trials
            if t.number < number
            and t.state == TrialState.RUNNING
            and KEY not in t.user_attrs
            and t.datetime_start is not None
            and now - t.datetime_start.timestamp() < DRAW_GRACE  # alive, see reap_dead
        ]
        if not drawing:
            return trials
        time.sleep(0.05)


def reap_dead(study: optuna.Study, *, now: float | None = None) -> list[int]:
    """Fail the running trials whose worker is gone, so they stop counting and run again.

    Gone: its owner ran on this machine and its process no longer exists, or it has no record
    :data:`DRAW_GRACE` seconds after it was drawn (killed between the draw and the record).
    Trials of other machines are left to the storage's heartbeat. Returns the numbers.
    """
    now = time.time() if now is None else now
    host = socket.gethostname()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start is not None else now
        stored = t.user_attrs.get(KEY)
        rec = TrialRecord.of(t) if isinstance(stored, Mapping) else None
        if rec is not None and rec.owner is not None:
            dead = rec.owner.host == host and not pid_alive(rec.owner.pid)
        elif rec is not None:  # its final record written, then its worker died before the tell
            dead = now - (started + (rec.wall_time or 0.0)) > DRAW_GRACE
        else:
            dead = now - started > DRAW_GRACE
        if not dead:
            continue
        with contextlib.suppress(Exception):  # another worker reaped it first
            _tell_finished(study, t.number, rec)
            reaped.append(t.number)
    return reaped


def _tell_finished(study: optuna.Study, number: int, rec: TrialRecord | None) -> None:
    """Tell a dead worker's trial as its final record says: a completed one with its measured
    values (it stays on the front), a pruned one as pruned; anything else failed (it runs
    again)."""
    if rec is not None and rec.owner is None and rec.status == "completed":
        names = study.user_attrs.get("objectives") or ()
        values = [getattr(rec, str(name), None) for name in names]
        floats = [float(v) for v in values if isinstance(v, int | float) and v == v]
        if names and len(floats) == len(values):
            study.tell(number, floats, skip_if_finished=True)
            return
    if rec is not None and rec.owner is None and rec.status in ("pruned", "not_learned"):
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        return
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


__all__ = ["DRAW_GRACE", "reap_dead", "settle"]
