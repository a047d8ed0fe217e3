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
from satadvisor._recommend import Recommendation
from satadvisor.config import TrainConfig
from satadvisor.search import optimize, policy
from satadvisor.search import trials as tr
from satadvisor.search import worker as worker_mod
from satadvisor.search.space import SearchSpace
from satadvisor.search.storage import open_storage
from satadvisor.search.validate import select
from satadvisor.search.worker import SearchSettings, TrialEvent, not_learned_state

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
    return bool(tr.trial_params(t)["blind"])


@pytest.mark.parametrize(
    ("objectives", "optuna_major", "state"),
    [
        (("accuracy", "macs"), 5, TrialState.PRUNED),
        (("accuracy", "macs"), 4, TrialState.FAIL),  # the fallback for Optuna < 5
        (("accuracy",), 4, TrialState.PRUNED),
    ],
    ids=["pareto", "pareto-optuna4", "single"],
)
def test_not_learned_trials_count_but_never_seed_nor_enter_the_front(
    blind_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    objectives: tuple[str, ...],
    optuna_major: int,
    state: TrialState,
) -> None:
    _with_width_rule(monkeypatch)
    monkeypatch.setattr(worker_mod, "_OPTUNA_MAJOR", optuna_major)
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
    assert len({tr.config_key(tr.trial_params(t)) for t in counted}) == SPACE_SIZE
    assert not [t for t in trials if t.state == TrialState.WAITING or "retry_of" in t.user_attrs]
    assert [e.done for e in events] == list(range(1, SPACE_SIZE + 1))

    blind = [t for t in counted if _blind(t)]
    seeing = [t for t in counted if not _blind(t)]
    assert len(blind) == 2 and len(seeing) == 2
    for t in blind:
        a = t.user_attrs
        assert t.state == state, t
        assert tr.not_learned(t) and a[tr.STATUS] == "not_learned" and a[tr.LEARNED] is False
        assert "majority-class rate" in a[tr.REASON]
        assert a["accuracy"] < a["learning"]["required_accuracy"]
        assert a["macs"] > 0 and a["params"] > 0  # measured and recorded like any trial
        assert policy.CANDIDATES not in a  # the injected width rule was refused
        assert policy.candidates_of(t) == []
    for t in seeing:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs[tr.STATUS] == "completed" and t.user_attrs[tr.LEARNED] is True
        assert len(t.user_attrs[policy.CANDIDATES]) == 1  # the injected rule, stored

    # never on the front, never a pick to validate, never a rule candidate's parent
    blind_numbers = {t.number for t in blind}
    best = study.best_trials if len(objectives) > 1 else [study.best_trial]
    assert best and not blind_numbers & {t.number for t in best}
    assert not blind_numbers & set(policy.front_ranks(trials, objectives))
    baseline, picks = select(study, k=SPACE_SIZE)
    assert baseline is not None and not _blind(baseline)
    assert picks and not any(_blind(t) for t in picks)
    assert {t.number for t in picks} <= {t.number for t in seeing}

    # the per-trial terminal line says so, with the reason
    said = {e.number: e for e in events}
    for t in blind:
        assert said[t.number].state == "did not learn"
        assert "majority-class rate" in str(said[t.number].reason)
        assert said[t.number].accuracy == t.user_attrs["accuracy"]
    assert {said[t.number].state for t in seeing} == {"complete"}


def test_not_learned_state_keeps_trials_off_the_front() -> None:
    assert not_learned_state(1) == TrialState.PRUNED
    assert not_learned_state(2) in (TrialState.PRUNED, TrialState.FAIL)
    assert not_learned_state(2) != TrialState.COMPLETE


def test_tpe_keeps_drawing_when_most_trials_did_not_learn() -> None:
    # Optuna 3.5-4.x's multi-objective TPE raises on pruned trials it puts in its "good" set
    # (when fewer than ⌈10 %⌉ of the trials are complete); the state the worker tells must
    # let the installed sampler draw on, with 0 and 1 learned trials among many.
    settings = SearchSettings(
        model=None,
        study_name="x",
        storage_url="",
        budget=8,
        space=SearchSpace(choices={"w": (8, 16, 32, 64), "d": (1, 2, 3)}),
        train=TrainConfig(seed=0),
    )
    dists = settings.space.distributions()
    for learned in (0, 1):
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=worker_mod.make_sampler(settings, 0)
        )
        for i in range(24):
            trial = study.ask(dists)
            if i < learned:
                study.tell(trial, [0.9, float(trial.params["w"] * trial.params["d"])])
            else:
                trial.set_user_attr(tr.STATUS, tr.NOT_LEARNED)
                study.tell(trial, state=not_learned_state(2))
        assert len(study.best_trials) == learned
        assert len(tr.counted(study.get_trials())) == 24


# ------------------------------------------------------------------ policy, from the storage
def _trial(
    number: int,
    accuracy: float,
    macs: int,
    *,
    state: TrialState = TrialState.COMPLETE,
    status: str | None = "completed",
    learned: bool | None = None,
    candidates: list[dict[str, object]] | None = None,
) -> FrozenTrial:
    attrs: dict[str, object] = {tr.SOURCE: "sampler", "accuracy": accuracy, "macs": macs}
    if status is not None:
        attrs[tr.STATUS] = status
    if learned is not None:
        attrs[tr.LEARNED] = learned
    if candidates is not None:
        attrs[policy.CANDIDATES] = candidates
    t = optuna.trial.create_trial(
        state=state,
        values=[accuracy, float(macs)] if state == TrialState.COMPLETE else None,
        params={"depth": number},
        distributions={"depth": optuna.distributions.CategoricalDistribution(list(range(100)))},
        user_attrs=attrs,
    )
    t.number = number
    return t


def _cand(depth: int, macs: int) -> dict[str, object]:
    return {"params": {"depth": depth}, "kind": "efficiency", "macs": macs}


def test_policy_draws_no_candidate_from_a_not_learned_trial() -> None:
    # An older study may hold a *complete* not-learned trial with candidates: the cheapest
    # trial, so it would be alone on the front and its candidate would be drawn first.
    old = _trial(0, 0.11, 100, status="not_learned", candidates=[_cand(50, 10)])
    pruned_unlearned = _trial(
        1, 0.2, 150, state=TrialState.PRUNED, status="pruned", learned=False,
        candidates=[_cand(51, 10)],
    )  # fmt: skip
    learned = _trial(2, 0.9, 1000, learned=True, candidates=[_cand(52, 500)])
    assert policy.candidates_of(old) == []
    assert policy.candidates_of(pruned_unlearned) == []
    assert [c.params for c in policy.candidates_of(learned)] == [{"depth": 52}]
    ranks = policy.front_ranks([old, pruned_unlearned, learned], ("accuracy", "macs"))
    assert ranks == {2: 0}
    for strategy in ("rules", "hybrid"):
        trials = [old, pruned_unlearned, learned]
        if strategy == "hybrid":  # past the startup trials, so a rule slot is due
            trials += [_trial(3 + i, 0.5, 2000 + i) for i in range(3)]
        cand = policy.next_candidate(trials, strategy=strategy, budget=9)
        assert cand is not None and cand.params == {"depth": 52} and cand.parent == 2
        only_old = [old, *trials[3:]]
        assert policy.next_candidate(only_old, strategy=strategy, budget=9) is None


def test_not_learned_trials_count_toward_the_budget_in_either_state() -> None:
    for state in (TrialState.PRUNED, TrialState.FAIL):
        t = _trial(0, 0.1, 100, state=state, status="not_learned")
        assert tr.not_learned(t) and tr.counts(t)
    # …but one stopped from outside before it was told does not (it is queued again)
    stopped = _trial(1, 0.1, 100, state=TrialState.FAIL, status="not_learned")
    stopped.user_attrs[tr.INTERRUPTED] = "stale"
    assert not tr.counts(stopped)
