"""A study's proxies that did not learn: recorded and counted, never a seed, front or pick."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from satadvisor import advisor
from satadvisor.config import TrainConfig
from satadvisor.rules import Recommendation
from satadvisor.search import optimize, policy
from satadvisor.search import record as tr
from satadvisor.search.record import Candidate, TrialRecord
from satadvisor.search.space import SearchSpace
from satadvisor.search.storage import open_storage
from satadvisor.search.strategies import get_strategy
from satadvisor.search.validate import select
from satadvisor.search.worker import TrialEvent

pytestmark = pytest.mark.usefixtures("one_thread")

# ``blind=1`` multiplies the image by zero: every input looks alike, so no run can beat the
# majority-class rate, whatever its training. ``blind=0`` learns digits in two short epochs
# (≈ 35–65 % validation accuracy; ≈ 17 % is significant on its 144 validation images).
BLIND_MODEL = textwrap.dedent(
    """
    import torch.nn as nn

    SEARCH_SPACE = {"blind": [0, 1], "width": [8, 16], "resolution": [8]}
    DATASET = "digits"
    RESOLUTION = 8


    class Blind(nn.Module):
        def forward(self, x):
            return x * 0


    def build_model(blind=0, width=8, *, num_classes, in_channels):
        layers = [Blind()] if blind else []
        layers += [
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
        ]
        return nn.Sequential(*layers)
    """
)
CONFIG = TrainConfig(epochs=2, batch_size=32, device="cpu", lr=0.05)
SPACE_SIZE = 4  # blind × width × resolution = 2 × 2 × 1


@pytest.fixture()
def blind_file(tmp_path: Path) -> str:
    path = tmp_path / "blind.py"
    path.write_text(BLIND_MODEL)
    return str(path)


def _with_width_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every analysis, learned or not, also recommends the other width: a learned trial then
    stores a rule candidate, so a not-learned trial without one shows the worker refused it
    (the real rules may well propose nothing on so small a network)."""
    real = advisor.analyze

    def analyze(*args: Any, **kwargs: Any) -> Any:
        analysis = real(*args, **kwargs)
        knobs = dict(analysis.knobs)
        width = 16 if knobs["width"] == 8 else 8
        rec = Recommendation(
            kind="width",
            title="try the other width",
            changes={"width": width},
            knobs={**knobs, "width": width},
            resolution=analysis.resolution,
            rationale="test",
        )
        return replace(analysis, recommendations=[*analysis.recommendations, rec])

    monkeypatch.setattr(advisor, "analyze", analyze)


def _blind(t: FrozenTrial) -> bool:
    return bool(t.params["blind"])


@pytest.mark.parametrize(
    "objectives", [("accuracy", "macs"), ("accuracy",)], ids=["pareto", "single"]
)
def test_not_learned_trials_count_but_never_seed_nor_enter_the_front(
    blind_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    objectives: tuple[str, ...],
) -> None:
    _with_width_rule(monkeypatch)
    url = f"sqlite:///{tmp_path / 'n.db'}"
    events: list[TrialEvent] = []
    optimize(
        blind_file,
        budget=SPACE_SIZE,
        storage=url,
        study_name="n",
        config=CONFIG,
        objectives=objectives,
        validate_top=0,
        on_trial=events.append,
    )
    study = optuna.load_study(study_name="n", storage=open_storage(url))
    trials = study.get_trials()
    counted = tr.counted(trials)

    # the budget is exact: every configuration ran once, the not-learned ones included, and
    # none was queued again
    assert len(counted) == SPACE_SIZE
    assert len({tr.config_key(t.params) for t in counted}) == SPACE_SIZE
    assert len(trials) == SPACE_SIZE and all(TrialRecord.of(t).retry_of is None for t in trials)
    assert [e.done for e in events] == list(range(1, SPACE_SIZE + 1))

    blind = [t for t in counted if _blind(t)]
    seeing = [t for t in counted if not _blind(t)]
    assert len(blind) == 2 and len(seeing) == 2
    for t in blind:
        a = TrialRecord.of(t)
        assert t.state == TrialState.PRUNED, t  # ran, but no objective values
        assert a.status == "not_learned" and a.learned is False
        assert "majority-class rate" in str(a.reason)
        assert a.learning is not None and a.accuracy is not None
        assert a.accuracy < a.learning["required_accuracy"]
        assert a.macs and a.params  # measured and recorded like any trial
        assert a.candidates == ()  # the injected width rule was refused
        assert policy.candidates_of(a) == []
    for t in seeing:
        a = TrialRecord.of(t)
        assert t.state == TrialState.COMPLETE
        assert a.status == "completed" and a.learned is True
        assert len(a.candidates) == 1  # the injected rule, stored

    # never on the front, never a pick to validate, never a rule candidate's parent
    blind_numbers = {t.number for t in blind}
    best = study.best_trials if len(objectives) > 1 else [study.best_trial]
    assert best and not blind_numbers & {t.number for t in best}
    numbered = [(t.number, TrialRecord.of(t)) for t in trials]
    assert not blind_numbers & set(policy.front_ranks(numbered, objectives))
    baseline, picks = select(study, k=SPACE_SIZE)
    assert baseline is not None and not _blind(baseline)
    assert picks and not any(_blind(t) for t in picks)
    assert {t.number for t in picks} <= {t.number for t in seeing}

    # the per-trial terminal line says so, with the reason
    said = {e.number: e for e in events}
    for t in blind:
        assert said[t.number].state == "did not learn"
        assert "majority-class rate" in str(said[t.number].reason)
        assert said[t.number].accuracy == TrialRecord.of(t).accuracy
    assert {said[t.number].state for t in seeing} == {"complete"}


def test_tpe_keeps_drawing_when_most_trials_did_not_learn() -> None:
    # Optuna 3.5-4.x's multi-objective TPE raised on pruned trials it put in its "good" set
    # (when fewer than ⌈10 %⌉ of the trials are complete; optuna/optuna#5260), which is why
    # the floor is Optuna 5: with 0 and 1 learned trials among many, the sampler draws on.

    space = SearchSpace(choices={"w": (8, 16, 24, 32), "d": (1, 2, 3)})
    dists = space.distributions()
    for learned in (0, 1):
        base = get_strategy("tpe").base(0, 8)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=base)
        for i in range(24):
            trial = study.ask(dists)
            if i < learned:
                study.tell(trial, [0.9, float(trial.params["w"] * trial.params["d"])])
            else:
                rec = TrialRecord(knobs=dict(trial.params), status="not_learned")
                trial.set_user_attr(tr.KEY, rec.to_dict())
                study.tell(trial, state=TrialState.PRUNED)
        assert len(study.best_trials) == learned
        assert len(tr.counted(study.get_trials())) == 24


# ------------------------------------------------------------------ policy, from the records
def _trial(
    number: int,
    accuracy: float,
    macs: int,
    *,
    status: str = "completed",
    learned: bool | None = True,
    candidates: list[Candidate] | None = None,
) -> tuple[int, TrialRecord]:
    return number, TrialRecord(
        knobs={"depth": number},
        status=status,  # type: ignore[arg-type]
        accuracy=accuracy,
        macs=macs,
        learned=learned,
        candidates=tuple(candidates or ()),
    )


def _cand(depth: int, macs: int) -> Candidate:
    return Candidate({"depth": depth}, "efficiency", macs)


def test_policy_draws_no_candidate_from_a_not_learned_trial() -> None:
    # A not-learned trial with stored candidates (the cheapest trial, so it would be alone on
    # the front and its candidate drawn first), and a pruned one below the learned margin.
    old = _trial(0, 0.11, 100, status="not_learned", learned=False, candidates=[_cand(50, 10)])
    pruned_unlearned = _trial(
        1, 0.2, 150, status="pruned", learned=False, candidates=[_cand(51, 10)]
    )
    learned = _trial(2, 0.9, 1000, candidates=[_cand(52, 500)])
    assert policy.candidates_of(old[1]) == []
    assert policy.candidates_of(pruned_unlearned[1]) == []
    assert [c.params for c in policy.candidates_of(learned[1])] == [{"depth": 52}]
    ranks = policy.front_ranks([old, pruned_unlearned, learned], ("accuracy", "macs"))
    assert ranks == {2: 0}
    # past the startup trials, so a rule slot is due
    trials = [old, pruned_unlearned, learned, *[_trial(3 + i, 0.5, 2000 + i) for i in range(3)]]
    move = policy.next_candidate(trials, names=["depth"], budget=9)
    assert move is not None and move.candidate.params == {"depth": 52} and move.parent == 2
    only_old = [old, *trials[3:]]
    assert policy.next_candidate(only_old, names=["depth"], budget=9) is None


def test_which_trials_count_toward_the_budget() -> None:
    def frozen(state: TrialState, status: str | None) -> FrozenTrial:
        attrs = (
            {} if status is None else {tr.KEY: TrialRecord(knobs={"d": 1}, status=status).to_dict()}
        )  # type: ignore[arg-type]
        return optuna.trial.create_trial(
            state=state,
            values=[0.5] if state == TrialState.COMPLETE else None,
            params={"d": 1},
            distributions={"d": optuna.distributions.IntDistribution(0, 3)},
            user_attrs=attrs,
        )

    counted = [
        (TrialState.PRUNED, "not_learned"),
        (TrialState.PRUNED, "pruned"),
        (TrialState.COMPLETE, "completed"),
        (TrialState.FAIL, "failed"),
        (TrialState.FAIL, "diverged"),
        (TrialState.RUNNING, "running"),
    ]
    not_counted = [
        (TrialState.FAIL, "interrupted"),  # Ctrl-C, data gone: runs again
        (TrialState.FAIL, "running"),  # its worker died (reaped, or stale by heartbeat)
        (TrialState.FAIL, None),  # died between the draw and the record
        (TrialState.PRUNED, "duplicate"),  # drawn twice at once by two workers
        (TrialState.PRUNED, "over_budget"),
        (TrialState.WAITING, None),
    ]
    for state, status in counted:
        assert tr.counts(frozen(state, status)), (state, status)
    for state, status in not_counted:
        assert not tr.counts(frozen(state, status)), (state, status)
