"""The search's Optuna parts on their own: the typed trial record, the training-free prior, the
sampler (baseline, retries, filters) and the pruner (settled tails, dominated trials)."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from _tiny import TINY_MODEL_SOURCE
from optuna.trial import TrialState

import satadvisor
from satadvisor import receptive
from satadvisor import spec as spec_mod
from satadvisor.advisor import build_model
from satadvisor.config import TrainConfig
from satadvisor.cost import count_macs, count_parameters
from satadvisor.errors import StudyError
from satadvisor.search import SaturationPruner, StudySampler, optimize
from satadvisor.search.policy import TAIL_HANDOFF
from satadvisor.search.prior import Priors
from satadvisor.search.record import (
    KEY,
    Candidate,
    EpochPoint,
    Owner,
    Prior,
    TrialRecord,
    counted,
)
from satadvisor.search.space import SearchSpace
from satadvisor.search.storage import open_storage
from satadvisor.search.strategies import Strategy, get_strategy, register_strategy, strategy_names
from satadvisor.search.worker import suggest

PACKAGE = Path(satadvisor.__file__).resolve().parent


# ------------------------------------------------------------------ public Optuna only
def test_the_package_uses_no_private_optuna_attribute() -> None:
    """No ``study._storage``, ``trial._trial_id``, ``_backend`` or ``system_attrs`` anywhere:
    attribute accesses with a leading underscore are only on satadvisor's own objects."""
    ours_private = set()
    offending = []
    for path in sorted((PACKAGE / "search").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in ast.walk(node):
                    if isinstance(item, ast.FunctionDef):
                        ours_private.add(item.name)
                    if isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store):
                        ours_private.add(item.attr)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private_optuna(node.attr, ours_private):
                offending.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offending == []


def _private_optuna(attr: str, ours: set[str]) -> bool:
    if attr == "system_attrs" or attr in ("_storage", "_trial_id", "_backend"):
        return True
    return attr.startswith("_") and not attr.startswith("__") and attr not in ours


# ------------------------------------------------------------------ the record
def test_record_round_trips_through_a_real_storage(tmp_path: Path) -> None:
    rec = TrialRecord(
        knobs={"depth": 3, "act": "relu", "resolution": 16},
        source="rule:tail",
        status="pruned",
        parent=4,
        reason=f"{TAIL_HANDOFF} of 2 layer(s) after epoch 2",
        prior=Prior(True, macs=1000, params=10, unproductive=("c3",), feasible=(12, 40)),
        accuracy=0.8,
        macs=1000,
        params=10,
        epochs=2,
        progress=(EpochPoint(1, 0.5, True, False, ()), EpochPoint(2, 0.8, True, True, ("c3",))),
        saturation={"c1": 0.5, "c3": 0.1},
        tail=("c3",),
        findings=("tail",),
        learned=True,
        learning={"p_value": 1e-9},
        candidates=(Candidate({"depth": 2}, "tail", 700),),
        wall_time=1.5,
        device="cpu",
        owner=Owner("host", 42),
    )
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'r.db'}"))
    trial = study.ask()
    trial.set_user_attr(KEY, rec.to_dict())
    assert TrialRecord.of(study.get_trials()[0]) == rec
    assert rec.to_dict()["schema"] == "satadvisor.trial/1"
    with pytest.raises(ValueError, match="schema"):
        TrialRecord.from_dict({**rec.to_dict(), "schema": "satadvisor.trial/99"})
    # finished: the owner is not written at all
    assert "owner" not in rec.with_(owner=None).to_dict()


def test_a_failed_trial_whose_record_says_running_was_interrupted() -> None:
    running = TrialRecord(knobs={"d": 1}).to_dict()
    t = optuna.trial.create_trial(
        state=TrialState.FAIL,
        params={"d": 1},
        distributions={"d": optuna.distributions.IntDistribution(0, 2)},
        user_attrs={KEY: running},
    )
    rec = TrialRecord.of(t)
    assert rec.status == "interrupted" and not rec.counts
    assert counted([t]) == []


# ------------------------------------------------------------------ the prior
@pytest.fixture()
def tiny(tmp_path: Path) -> spec_mod.ModelSpec:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_MODEL_SOURCE)
    return spec_mod.load(str(path))


def test_prior_equals_the_real_model_built_with_weights(tiny: spec_mod.ModelSpec) -> None:
    space = SearchSpace(choices={"depth": (1, 2, 3), "resolution": (8, 12)}, fixed={"width": 4})
    priors = Priors(tiny, space, num_classes=10, in_channels=1)
    for depth in (1, 2, 3):
        for res in (8, 12):
            screened = priors({"depth": depth, "resolution": res})
            p = priors({"depth": depth, "resolution": res}, feasible=True)
            net = build_model(tiny, {"depth": depth, "width": 4}, num_classes=10, in_channels=1)
            rf = receptive.analyze(net, res, in_channels=1)
            assert rf.feasible_range is not None
            for prior in (screened, p):
                assert prior.buildable
                assert prior.macs == count_macs(net, in_channels=1, resolution=res)
                assert prior.params == count_parameters(net)
                assert prior.unproductive == tuple(rf.unproductive)
            assert screened.feasible is None  # screening skips the range's extra shape runs
            assert p.feasible == rf.feasible_range
    # cached; once the range is known, screening returns it too
    assert priors({"depth": 3, "resolution": 8}) is priors({"depth": 3, "resolution": 8})
    assert priors({"depth": 3, "resolution": 8}).feasible is not None


def test_prior_knows_an_unbuildable_configuration() -> None:
    vgg = spec_mod.load("vgg")
    space = SearchSpace(
        choices={"depth": (2, 4), "downsamplings": (3, 5)}, fixed={"resolution": 32}
    )
    p = Priors(vgg, space, num_classes=10, in_channels=3)({"depth": 2, "downsamplings": 5})
    assert not p.buildable and "downsamplings" in str(p.reason)


# ------------------------------------------------------------------ the sampler
def _sampler(space: SearchSpace, prior: Any = None, *, guided: bool = True) -> StudySampler:
    return StudySampler(
        get_strategy("tpe").base(0, 20),
        space=space,
        baseline={k: v[0] for k, v in space.choices.items()},
        budget=20,
        objectives=("accuracy", "macs"),
        guided=guided,
        prior=prior,
        seed=0,
    )


def _suggest_all(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    return {n: suggest(trial, n, d) for n, d in space.distributions().items()}


def _tell(study: optuna.Study, trial: optuna.Trial, space: SearchSpace, **fields: Any) -> None:
    params = _suggest_all(trial, space)
    rec = TrialRecord(knobs=params, **fields)
    trial.set_user_attr(KEY, rec.to_dict())
    if rec.status == "completed":
        study.tell(trial, [rec.accuracy, rec.macs])
    else:
        study.tell(trial, state=TrialState.FAIL)


def test_sampler_proposes_the_baseline_then_retries_an_interrupted_trial_first() -> None:
    space = SearchSpace(choices={"a": (1, 2, 3, 4), "b": (10, 20, 30)})
    sampler = _sampler(space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    first = study.ask()
    _tell(study, first, space, status="completed", accuracy=0.5, macs=10)
    assert first.params == {"a": 1, "b": 10}
    assert sampler.proposal(first.number).source == "baseline"  # type: ignore[union-attr]
    second = study.ask()
    _tell(study, second, space, status="interrupted", source="sampler")
    third = study.ask()
    _suggest_all(third, space)
    proposal = sampler.proposal(third.number)
    assert proposal is not None and proposal.retry_of == second.number
    assert third.params == second.params


def test_sampler_never_proposes_a_configuration_that_ran_even_in_a_tiny_space() -> None:
    space = SearchSpace(choices={"a": (1, 2), "b": (10, 20)})
    sampler = _sampler(space, guided=False)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen = []
    for i in range(4):
        t = study.ask()
        _tell(study, t, space, status="completed", accuracy=0.5 + i / 10, macs=10 + i)
        seen.append((t.params["a"], t.params["b"]))
    assert sorted(seen) == [(1, 10), (1, 20), (2, 10), (2, 20)]


def test_guided_sampler_avoids_draws_with_unproductive_layers() -> None:
    space = SearchSpace(choices={"depth": tuple(range(1, 11))})

    def prior(params: dict[str, Any]) -> Prior:  # layers beyond 3 see the whole image
        return Prior(True, macs=params["depth"], unproductive=tuple(range(3, params["depth"])))

    counts = {}
    for guided in (True, False):
        sampler = _sampler(space, prior, guided=guided)
        sampler.baseline = {"depth": 2}
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        drawn = []
        for _ in range(6):
            t = study.ask()
            depth = _suggest_all(t, space)["depth"]
            _tell(study, t, space, status="completed", accuracy=0.5, macs=depth)
            drawn.append(depth)
        counts[guided] = sum(d > 3 for d in drawn)
    # guided: only depths 1-3 until those ran (baseline 2, then 1 and 3), then the fewest
    # unproductive layers; plain TPE draws deep ones freely
    assert counts[True] == 3 and counts[False] >= 3
    assert counts[True] < 6


# ------------------------------------------------------------------ the pruner
def _completed(study: optuna.Study, accuracy_curve: list[float], macs: int, n: int) -> None:
    rec = TrialRecord(
        knobs={"d": n},
        status="completed",
        accuracy=accuracy_curve[-1],
        macs=macs,
        epochs=len(accuracy_curve),
        learned=True,
        progress=tuple(
            EpochPoint(e, a, True, False) for e, a in enumerate(accuracy_curve, start=1)
        ),
    )
    study.add_trial(
        optuna.trial.create_trial(
            values=[rec.accuracy, macs],
            params={"d": n},
            distributions={"d": optuna.distributions.IntDistribution(0, 100)},
            user_attrs={KEY: rec.to_dict()},
        )
    )


def test_pruner_stops_a_dominated_trial_by_the_largest_remaining_gain() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    _completed(study, [0.50, 0.70, 0.80, 0.85], 100, 0)  # gain after epoch 2: 0.15
    _completed(study, [0.60, 0.75, 0.80, 0.82], 300, 1)
    _completed(study, [0.30, 0.40, 0.45, 0.50], 50, 2)
    pruner = SaturationPruner(objectives=("accuracy", "macs"))

    def decide(curve: list[float], macs: int, learned: bool = True) -> str | None:
        rec = TrialRecord(
            knobs={"d": 9},
            macs=macs,
            progress=tuple(EpochPoint(e, a, learned, False) for e, a in enumerate(curve, 1)),
        )
        return pruner.decide(study, 9, rec)

    # at epoch 2 with 0.65 at 200 MACs: even +0.15 (the largest gain seen) reaches 0.80, below
    # trial 0's 0.85 at half the MACs
    reason = decide([0.40, 0.65], 200)
    assert reason is not None and "trial 0" in reason and "0.850" in reason
    assert decide([0.40, 0.71], 200) is None  # 0.71 + 0.15 = 0.86 could beat it
    assert decide([0.40, 0.65], 90) is None  # cheaper than every trial that beats it
    assert decide([0.40, 0.10], 200, learned=False) is None  # not learned (yet): runs on
    # with fewer than three completed curves at that epoch it never prunes
    young = optuna.create_study(directions=["maximize", "minimize"])
    _completed(young, [0.5, 0.9], 10, 0)
    rec = TrialRecord(knobs={"d": 9}, macs=200, progress=(EpochPoint(1, 0.1, True, False),))
    assert pruner.decide(young, 9, rec) is None


def test_pruner_hands_off_a_settled_tail_and_nothing_else() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    pruner = SaturationPruner()

    def decide(*points: EpochPoint) -> str | None:
        return pruner.decide(study, 0, TrialRecord(knobs={}, macs=1, progress=points))

    early = EpochPoint(1, 0.6, True, False, ())
    reason = decide(early, EpochPoint(2, 0.7, True, True, ("c5", "c6")))
    assert reason is not None and reason.startswith(TAIL_HANDOFF) and "2 layer(s)" in reason
    assert decide(early, EpochPoint(2, 0.7, True, False, ("c5",))) is None  # not settled
    assert decide(early, EpochPoint(2, 0.7, True, True, ())) is None  # settled, no tail
    assert decide(EpochPoint(1, 0.7, True, True, ("c5",))) is None  # too early to know


# ------------------------------------------------------------------ one study, one recipe
FAST = TrainConfig(epochs=1, batch_size=512, device="cpu")


def test_a_rerun_with_other_settings_is_refused_with_the_setting(tmp_path: Path) -> None:
    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    url = f"sqlite:///{tmp_path / 's.db'}"
    same: dict[str, Any] = {"storage": url, "study_name": "s", "validate_top": 0}
    optimize(str(model), budget=1, config=FAST, **same)
    for changed, kwargs, word in (
        ("lr", {"config": FAST.replace(lr=0.5)}, "lr 0.05 (now 0.5)"),
        ("epochs", {"config": FAST.replace(epochs=2)}, "epochs 1 (now 2)"),
        ("seed", {"config": FAST.replace(seed=3)}, "seed 0 (now 3)"),
        ("subset", {"config": FAST, "subset": 100}, "subset None (now 100)"),
        ("strategy", {"config": FAST, "strategy": "random"}, "strategy 'guided' (now 'random')"),
    ):
        with pytest.raises(StudyError, match="was run with another") as info:
            optimize(str(model), budget=2, **same, **kwargs)
        assert word in str(info.value), changed
        assert "\n" not in str(info.value)
    # nothing ran meanwhile
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    assert len(study.trials) == 1
    pinned = {**same, "study_name": "p", "config": FAST}
    optimize(str(model), budget=1, pinned={"width": 4}, **pinned)
    with pytest.raises(StudyError, match=r"other pinned knobs \({'width': 4}\)"):
        optimize(str(model), budget=2, pinned={"width": 8}, **pinned)


def test_two_workers_creating_a_study_at_once_with_other_settings_do_not_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both find no settings and both write theirs; the one whose write did not stand stops."""
    from satadvisor.search import study as study_module

    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    url = f"sqlite:///{tmp_path / 'race.db'}"

    def other_worker_writes() -> None:  # lands while this one waits
        late = optuna.load_study(study_name="r", storage=open_storage(url))
        settings = dict(late.user_attrs["settings"])
        settings["train"] = {**settings["train"], "lr": 0.5}
        late.set_user_attr("settings", settings)

    monkeypatch.setattr(study_module, "_settle", other_worker_writes)
    with pytest.raises(StudyError, match="at the same moment by another worker") as info:
        optimize(str(model), budget=1, config=FAST, storage=url, study_name="r", validate_top=0)
    assert "lr 0.5 (now 0.05)" in str(info.value)
    assert optuna.load_study(study_name="r", storage=open_storage(url)).trials == []


def test_a_study_of_the_older_search_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    old = optuna.create_study(study_name="o", storage=open_storage(url))
    old.set_user_attr("space", {"depth": [1, 2, 3]})
    with pytest.raises(StudyError, match="older satadvisor"):
        optimize(str(model), budget=1, config=FAST, storage=url, study_name="o", validate_top=0)


def test_evenly_spaced_knobs_are_ordinal_for_the_sampler() -> None:
    space = SearchSpace(choices={"k": (3, 5, 7), "w": (4, 8, 12, 16), "u": (4, 8, 32)})
    dists = space.distributions()
    assert dists["k"] == optuna.distributions.IntDistribution(3, 7, step=2)
    assert dists["w"] == optuna.distributions.IntDistribution(4, 16, step=4)
    # unevenly spaced: an IntDistribution would allow values that are not choices
    assert dists["u"] == optuna.distributions.CategoricalDistribution([4, 8, 32])


def test_any_exception_of_a_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen before: an exception that was not satadvisor's own (torch.fx tracing a module name
    # with a quote) escaped the worker, left the trial RUNNING, and every rerun crashed on it.
    from satadvisor.search.worker import Worker

    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    real = Worker._analyze

    def foreign(self: Worker, trial: optuna.Trial, knobs: dict[str, Any], *args: Any) -> Any:
        if knobs["depth"] == 2:  # the baseline
            raise KeyError("weight'\"")
        return real(self, trial, knobs, *args)

    monkeypatch.setattr(Worker, "_analyze", foreign)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    optimize(str(model), budget=3, config=FAST, storage=url, study_name="f", validate_top=0)
    trials = optuna.load_study(study_name="f", storage=open_storage(url)).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    first = TrialRecord.of(trials[0])
    assert trials[0].state == TrialState.FAIL and first.status == "failed" and first.counts
    assert first.reason == "KeyError: 'weight\\'\"'"
    assert len(counted(trials)) == 3  # the study went on, and the failure counts


def test_no_storage_password_reaches_the_study_or_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from satadvisor.report import write_study
    from satadvisor.search.storage import redact, redact_command

    assert redact("postgresql://u:SECRET@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://h/db?user=u&password=SECRET&x=1") == (
        "postgresql://h/db?user=u&password=***&x=1"
    )
    assert redact("sqlite:///folder@home/s.db") == "sqlite:///folder@home/s.db"
    assert redact_command("satadvisor optimize --storage=mysql://u:SECRET@h/d") == (
        "satadvisor optimize --storage=mysql://u:***@h/d"
    )
    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    url = f"sqlite:///{tmp_path / 'pw.db'}"
    typed = ["satadvisor", "optimize", str(model), "--storage", "postgresql://u:SECRET@h/db"]
    typed += ["--storage-2", "postgresql://h/db?password=SECRET"]
    monkeypatch.setattr("sys.argv", typed)
    summary = optimize(
        str(model), budget=1, config=FAST, storage=url, study_name="pw", validate_top=0
    )
    study = optuna.load_study(study_name="pw", storage=open_storage(url))
    assert "SECRET" not in str(study.user_attrs) and "SECRET" not in str(summary)
    folder = write_study(summary, tmp_path / "report").parent
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".json", ".csv"):
            assert "SECRET" not in path.read_text(encoding="utf-8"), path


def test_csv_cells_that_a_spreadsheet_would_run_are_text() -> None:
    import csv
    import io

    from satadvisor.report._study import trials_csv

    hostile = {"number": 0, "state": "fail", "source": "=cmd|' /C calc'!A0", "status": "failed",
               "knobs": {"act": "+SUM(A1)", "depth": -2}, "reason": "@import", "counted": True}  # fmt: skip
    rows = list(csv.reader(io.StringIO(trials_csv({"trials": [hostile]}))))
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert cells["source"] == "'=cmd|' /C calc'!A0"
    assert cells["act"] == "'+SUM(A1)" and cells["reason"] == "'@import"
    assert cells["depth"] == "-2"  # a number stays a number


def test_a_journal_cut_mid_line_is_repaired_and_loses_no_complete_trial(tmp_path: Path) -> None:
    # Seen before: a journal whose last line was cut (disk full, a crash mid-append) crashed the
    # rerun with a JSONDecodeError after Optuna appended onto the cut line, and every later
    # run called the file "not an Optuna journal file": all its trials lost to the tool.
    journal = tmp_path / "s.log"
    url = f"journal:{journal}"
    study = optuna.create_study(study_name="j", storage=open_storage(url))
    for x in range(3):
        t = study.ask()
        t.suggest_int("x", 0, 9)
        study.tell(t, float(x))
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "w", "trial_id": 3, "state": 1, "va')
    with pytest.warns(UserWarning, match="cut short"):
        again = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.value for t in again.trials] == [0.0, 1.0, 2.0]
    assert journal.read_bytes() == whole
    (aside,) = tmp_path.glob("s.log.torn-*")
    assert aside.read_bytes().startswith(b'{"op_code": 5')
    # and the study goes on: new entries land on their own lines, a third open reads them all
    t = again.ask()
    t.suggest_int("x", 0, 9)
    again.tell(t, 3.0)
    third = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.value for t in third.trials] == [0.0, 1.0, 2.0, 3.0]


def test_running_trials_of_dead_workers_are_failed_and_stop_counting(tmp_path: Path) -> None:
    # Seen before: a worker SIGKILLed between Optuna's ask and its first write left a RUNNING
    # trial with no owner that counted against the budget forever.
    import socket

    from satadvisor.search.worker import DRAW_GRACE, reap_dead

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'k.db'}"))
    ownerless = study.ask()  # killed right after the draw: no record
    dead = study.ask()  # killed while training: its record names a process that is gone
    gone_pid = 2**22 + 12345  # above pid_max on Linux: no such process
    rec = TrialRecord(knobs={"x": 1}, owner=Owner(socket.gethostname(), gone_pid))
    dead.set_user_attr(KEY, rec.to_dict())
    alive = study.ask()  # this process: alive
    mine = rec.with_(owner=Owner(socket.gethostname(), os.getpid()))
    alive.set_user_attr(KEY, mine.to_dict())
    elsewhere = study.ask()  # another machine: left to the heartbeat
    elsewhere.set_user_attr(KEY, rec.with_(owner=Owner("other-host", gone_pid)).to_dict())
    trials = study.get_trials()
    assert len(counted(trials)) == 4
    started = trials[0].datetime_start
    assert started is not None
    # moments after the draw, an ownerless trial may still be writing its record: left alone
    assert reap_dead(study, now=started.timestamp() + 1) == [dead.number]
    assert reap_dead(study, now=started.timestamp() + DRAW_GRACE + 1) == [ownerless.number]
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    assert [t.number for t in counted(trials)] == [alive.number, elsewhere.number]
    assert all(TrialRecord.of(t).status == "interrupted" for t in trials[:2])


def test_a_storage_that_stops_taking_writes_ends_the_search_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk under a journal file: the append raises ENOSPC in the middle of a trial
    # (its per-epoch record). Not the trial's fault: the search stops with one StorageError
    # (the CLI's one-line exit 2), the completed baseline stays, and the rerun resumes.
    import errno as errno_mod

    from satadvisor.errors import StorageError

    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    url = f"journal:{tmp_path / 's.log'}"
    same: dict[str, Any] = {"config": FAST, "storage": url, "study_name": "s", "validate_top": 0}
    optimize(str(model), budget=1, **same)  # the baseline, stored
    real = optuna.Trial.set_user_attr

    def full_disk(self: optuna.Trial, key: str, value: Any) -> None:
        if self.number >= 1 and isinstance(value, dict) and value.get("epochs"):
            raise OSError(errno_mod.ENOSPC, "No space left on device")
        real(self, key, value)

    monkeypatch.setattr(optuna.Trial, "set_user_attr", full_disk)
    with pytest.raises(StorageError, match=r"stopped taking writes .*No space left") as info:
        optimize(str(model), budget=3, **same)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    optimize(str(model), budget=3, **same)  # space again: the rerun resumes to the budget
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
    assert len(counted(trials)) == 3
    assert TrialRecord.of(trials[0]).source == "baseline"
    assert not [t for t in trials if t.state == TrialState.RUNNING]


# ------------------------------------------------------------------ strategies
class _CountingRandom(optuna.samplers.RandomSampler):
    """Optuna's RandomSampler, counting the draws the study asks of it (to see it is used)."""

    drawn = 0

    def sample_independent(self, *args: Any, **kwargs: Any) -> Any:
        type(self).drawn += 1
        return super().sample_independent(*args, **kwargs)


def test_a_registered_strategy_runs_a_study_without_touching_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from satadvisor.search import strategies

    monkeypatch.setattr(strategies, "_STRATEGIES", dict(strategies._STRATEGIES))
    register_strategy(
        Strategy(
            "counting", "random draws, counted", base=lambda seed, budget: _CountingRandom(seed)
        )
    )
    assert strategy_names()[:3] == ("guided", "tpe", "random") and "counting" in strategy_names()
    model = tmp_path / "tiny.py"
    model.write_text(TINY_MODEL_SOURCE)
    url = f"sqlite:///{tmp_path / 's.db'}"
    _CountingRandom.drawn = 0
    summary = optimize(
        str(model), budget=3, config=FAST, storage=url, study_name="c", validate_top=0,
        strategy="counting",
    )  # fmt: skip
    assert _CountingRandom.drawn > 0  # the baseline comes first, the other trials from it
    assert summary.settings.strategy == "counting"
    study = optuna.load_study(study_name="c", storage=url)
    assert len(study.trials) == 3  # (pruned: one epoch teaches the tiny model little)
    assert [TrialRecord.of(t).source for t in study.trials] == ["baseline", "sampler", "sampler"]
    with pytest.raises(satadvisor.errors.UsageError, match="unknown strategy 'nope': use guided"):
        get_strategy("nope")


def test_the_cli_offers_the_built_in_strategies() -> None:
    from satadvisor.cli import main

    (option,) = [p for p in main.commands["optimize"].params if p.name == "strategy"]  # type: ignore[attr-defined]
    assert tuple(option.type.choices) == strategy_names()[:3] == ("guided", "tpe", "random")
    from satadvisor.search.strategies import DEFAULT

    assert option.default == DEFAULT
