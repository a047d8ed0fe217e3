"""What a trial is in a satadvisor study: its bookkeeping in Optuna user attributes.

Budget rule: a trial *counts* when it is complete, pruned, running, or failed for a reason of
its own (diverged, the model raised, out of memory twice). A trial whose proxy did not learn
(user attribute :data:`STATUS` is :data:`NOT_LEARNED`; told as pruned, or as failed on older
Optuna, see :func:`satadvisor.search.worker.not_learned_state`) ran, so it counts like
any other and is never queued again. Trials stopped from outside —
Ctrl-C, a killed worker found stale, a dataset that cannot be read — do not count and their
configuration is enqueued again,
so rerunning the command resumes to the same total. Trials a worker drew but did not run (over
budget, a duplicate configuration) are recorded as failed with ``skipped`` and do not count.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from satadvisor.search.storage import pid_alive

SOURCE = "source"
SKIPPED = "skipped"
INTERRUPTED = "interrupted"
HEARTBEAT = "heartbeat"
HOST = "host"
PID = "pid"
REASON = "reason"
#: User attribute: the proxy run's status ("completed", "not_learned", "pruned", …).
STATUS = "status"
#: User attribute: whether the proxy learned (see :mod:`satadvisor.trust`).
LEARNED = "learned"
#: :data:`STATUS` of a trial whose proxy ran to the end without learning.
NOT_LEARNED = "not_learned"
#: A running trial whose heartbeat is older than this (seconds) belongs to a dead worker.
STALE_AFTER = 120.0
HEARTBEAT_EVERY = 15.0


def config_key(params: Mapping[str, Any]) -> str:
    """A canonical text key of a configuration, for deduplication."""
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The configuration a trial runs or will run (enqueued trials hold it as fixed params)."""
    if trial.params:
        return dict(trial.params)
    return dict(trial.system_attrs.get("fixed_params", {}))


def not_learned(trial: FrozenTrial) -> bool:
    """Whether a trial's proxy ran to the end without learning: nothing may rest on its
    measurements (no rule candidates, not on the front, not validated); the study counts it."""
    return trial.user_attrs.get(STATUS) == NOT_LEARNED


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial uses up budget (see the module docstring)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    if trial.state == TrialState.FAIL:
        return SKIPPED not in trial.user_attrs and INTERRUPTED not in trial.user_attrs
    return False


def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if counts(t)]


def is_live_duplicate(trial: FrozenTrial, others: Sequence[FrozenTrial]) -> bool:
    """Whether an earlier counted trial already ran (or runs) the same configuration."""
    key = config_key(trial_params(trial))
    return any(
        o.number < trial.number and counts(o) and config_key(trial_params(o)) == key for o in others
    )


def still_drawing(
    trial: FrozenTrial, others: Sequence[FrozenTrial], n_params: int, *, now: float | None = None
) -> bool:
    """Whether an earlier trial, started moments ago, does not show its whole configuration yet.

    A sampler writes a drawn trial's parameters one by one, so a worker that reads the study
    in between sees an earlier trial without (all of) them and cannot tell whether it drew
    the same configuration: it must read again (:func:`settle`). Trials older than
    :data:`DRAW_GRACE` seconds are not waited for (a worker killed while drawing leaves one).
    """
    now = time.time() if now is None else now
    for o in others:
        if o.number >= trial.number or o.state != TrialState.RUNNING:
            continue
        started = o.datetime_start.timestamp() if o.datetime_start is not None else 0.0
        if len(trial_params(o)) < n_params and now - started < DRAW_GRACE:
            return True
    return False


#: Seconds an earlier trial may take to show its drawn parameters before it is not waited for.
DRAW_GRACE = 10.0


def settle(study: optuna.Study, number: int, n_params: int) -> list[FrozenTrial]:
    """The study's trials, read again until no trial before ``number`` is :func:`still_drawing`."""
    while True:
        trials = study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == number)
        if not still_drawing(me, trials, n_params):
            return trials
        time.sleep(0.05)


def known_keys(trials: Iterable[FrozenTrial]) -> set[str]:
    """Configurations that ran, run or wait: a rule candidate among them is not enqueued again."""
    return {
        config_key(trial_params(t)) for t in trials if counts(t) or t.state == TrialState.WAITING
    }


def reap_stale(study: optuna.Study, *, now: float | None = None) -> list[int]:
    """Mark running trials of dead workers as interrupted and enqueue their configuration again.

    A worker is dead when it ran on this host and its pid is gone, or when its heartbeat is
    older than :data:`STALE_AFTER` seconds (another machine that stopped). Returns the numbers.
    """
    now = time.time() if now is None else now
    host = socket.gethostname()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        started = t.datetime_start.timestamp() if t.datetime_start is not None else now
        beat = float(attrs.get(HEARTBEAT, started))
        dead_here = attrs.get(HOST) == host and PID in attrs and not pid_alive(int(attrs[PID]))
        if not (dead_here or now - beat > STALE_AFTER):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, "stale")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker reaped it first
            continue
        requeue(study, t)
        reaped.append(t.number)
    return reaped


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue an interrupted trial's configuration again, keeping where it came from."""
    attrs = {SOURCE: trial.user_attrs.get(SOURCE, "sampler"), "retry_of": trial.number}
    if "parent" in trial.user_attrs:
        attrs["parent"] = trial.user_attrs["parent"]
    study.enqueue_trial(trial_params(trial), user_attrs=attrs)


def claim(study: optuna.Study, trial: optuna.Trial, *, pid: int) -> bool:
    """Take ``trial`` for this process, right after it is drawn; False if another worker has it.

    Two workers asking at the same moment can both pop the same waiting (enqueued) trial from
    an SQLite storage. So each first writes its own claim stamp, then reads the trial back: the
    earliest claim owns it. A worker that wrote first sees no earlier claim whenever it reads;
    a later one sees the earlier claim and leaves the trial alone (it neither runs nor tells
    it). Only the owner records host, pid and heartbeat, so a kill is detectable.
    """
    host = socket.gethostname()
    mine = f"{_CLAIM}{host}:{pid}"
    trial.set_user_attr(mine, time.time())
    # Read past Optuna's per-process cache, which holds this process's own view of the trial.
    storage = study._storage
    backend = getattr(storage, "_backend", None)  # _CachedStorage wraps the RDB storage
    if isinstance(backend, optuna.storages.BaseStorage):
        storage = backend
    attrs = storage.get_trial(trial._trial_id).user_attrs
    stamps = sorted((float(v), k) for k, v in attrs.items() if k.startswith(_CLAIM))
    if stamps and stamps[0][1] != mine:
        return False
    trial.set_user_attr(HOST, host)
    trial.set_user_attr(PID, pid)
    trial.set_user_attr(HEARTBEAT, time.time())
    return True


_CLAIM = "claim:"


class Heartbeat:
    """Refreshes a claimed trial's heartbeat time while it runs (works on any storage)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self._storage = study._storage
        self._trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _beat(self) -> None:
        self._storage.set_trial_user_attr(self._trial_id, HEARTBEAT, time.time())

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                self._beat()
            except Exception:  # the trial finished meanwhile, or a transient storage error
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
