"""The search: space, budget, rule candidates, resume, storages, workers, validation."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from _tiny import TINY_MODEL_SOURCE
from optuna.trial import TrialState
from scipy import stats

from satadvisor import spec as spec_mod
from satadvisor.config import TrainConfig
from satadvisor.errors import StorageError, StudyError, UsageError
from satadvisor.search import derive_space, evenness, load_summary, optimize, policy, spearman
from satadvisor.search import record as tr
from satadvisor.search import summary as summary_mod
from satadvisor.search.record import KEY, Candidate, TrialRecord
from satadvisor.search.space import SearchSpace
from satadvisor.search.storage import open_storage, redact
from satadvisor.search.worker import Worker, settle

MODEL = TINY_MODEL_SOURCE
# Two epochs at batch 32: the smallest proxy whose trials learn (one epoch at batch 128 does not).
FAST = TrainConfig(epochs=2, batch_size=32, device="cpu", lr=0.1)
# Rule candidates need advice: a proxy that learned and, for the measured capacity findings, a
# settled profile (after two epochs the last one still moves, so FAST's trials propose little).
# Four epochs at batch 64 take FAST's steps, and the baseline's profile settles (too narrow:
# width 8). Seed 1: a budget of 5 has one rule slot (the last trial), and with seed 0 the
# sampler's and the duplicate fallback's earlier draws happen to run every proposal first; with
# seed 1 depth 2 at width 8 is still untried there, proposed by the baseline and by the depth-3
# trial (its training-free tail).
SETTLED = TrainConfig(epochs=4, batch_size=64, device="cpu", lr=0.1, seed=1)


@pytest.fixture()
def model_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(MODEL)
    return str(path)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def _counted_keys(study: optuna.Study) -> list[str]:
    return [tr.config_key(t.params) for t in tr.counted(study.get_trials())]


def _rec(t: optuna.trial.FrozenTrial) -> TrialRecord:
    return TrialRecord.of(t)


def _dashboard(url: str, name: str) -> dict[str, object]:
    """The study as optuna-dashboard's API serves it (its WSGI app on the real storage)."""
    import json
    from wsgiref.util import setup_testing_defaults

    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    app = optuna_dashboard.wsgi(open_storage(url))

    def get(path: str) -> object:
        env: dict[str, object] = {}
        setup_testing_defaults(env)
        env.update(PATH_INFO=path, REQUEST_METHOD="GET")
        status: list[str] = []
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        assert status == ["200 OK"], (path, status, body[:300])
        return json.loads(body)

    listing = get("/api/studies")
    (sid,) = [s["study_id"] for s in listing["study_summaries"] if s["study_name"] == name]  # type: ignore[index]
    return get(f"/api/studies/{sid}")  # type: ignore[return-value]


# ------------------------------------------------------------------ pure pieces
def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, size=9).astype(float)
        y = x + rng.normal(size=9)
        ours = spearman(list(x), list(y))
        ref = stats.spearmanr(x, y).statistic
        if np.isnan(ref):
            assert ours is None
        else:
            assert ours == pytest.approx(ref, abs=1e-12)
    assert spearman([1, 2], [2, 1]) is None


def test_evenness_is_one_minus_gini() -> None:
    assert evenness([0.5, 0.5, 0.5]) == pytest.approx(1.0)
    # Gini of (0, 0, 1) = 2/3 by the mean-absolute-difference definition.
    assert evenness([0.0, 0.0, 1.0]) == pytest.approx(1 / 3)
    values = np.array([0.1, 0.4, 0.2, 0.9])
    mad = np.abs(values[:, None] - values[None, :]).mean()
    assert evenness(list(values)) == pytest.approx(1 - mad / (2 * values.mean()))
    assert evenness([]) is None


def test_space_from_search_space_pins_and_snaps(model_file: str) -> None:
    spec = spec_mod.load(model_file)
    space = derive_space(spec, resolution=8, pinned={"width": 8})
    assert space.choices == {"depth": (1, 2, 3), "resolution": (8, 12)}
    assert space.fixed == {"width": 8}
    assert space.snap({"depth": 7, "resolution": 9}) == {"depth": 3, "resolution": 8}
    assert space.configuration({"depth": 1, "resolution": 12}) == {
        "width": 8,
        "depth": 1,
        "resolution": 12,
    }


def test_space_derived_around_defaults_for_builtin() -> None:
    spec = spec_mod.load("plain")
    space = derive_space(spec, resolution=16)
    # 0.5× to 2× the resolution in quarter steps: evenly spaced, so ordinal for the sampler
    assert space.choices["resolution"] == (8, 12, 16, 20, 24, 28, 32)
    d = spec.knobs["depth"]
    assert d in space.choices["depth"] and len(space.choices["depth"]) >= 3
    assert space.choices["kernel_size"] == (3, 5, 7)
    dists = space.distributions()
    for knob in ("resolution", "depth", "kernel_size", "width"):
        values = space.choices[knob]
        assert isinstance(dists[knob], optuna.distributions.IntDistribution), knob
        # the distribution allows exactly the listed values
        dist = dists[knob]
        assert tuple(range(dist.low, dist.high + 1, dist.step)) == values  # type: ignore[attr-defined]
    # unevenly spaced or non-numeric values stay categorical
    odd = SearchSpace(choices={"w": (8, 16, 32), "act": ("relu", "gelu")})
    assert all(
        isinstance(d, optuna.distributions.CategoricalDistribution)
        for d in odd.distributions().values()
    )


def test_space_refuses_fixed_model_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "fixed.py"
    path.write_text("import torch.nn as nn\nmodel = nn.Linear(64, 10)\n")
    with pytest.raises(UsageError, match="fixed `model`"):
        derive_space(spec_mod.load(str(path)), resolution=8)
    space = SearchSpace(choices={"depth": (1, 2)})
    assert space.size == 2


# ------------------------------------------------------------------ storages
_KILLED_WRITER = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # spill to the file so the journal is hot
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE scratch (x TEXT)")
for _ in range(2000):
    conn.execute("INSERT INTO scratch VALUES (?)", ("x" * 500,))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sqlite_left_by_a_writer_killed_mid_transaction_opens_and_rolls_back(
    tmp_path: Path,
) -> None:
    # Seen in CI: a worker SIGKILLed mid-write leaves a hot journal; the read-only pre-check
    # could not roll it back and called the study "not an SQLite database".
    db = tmp_path / "k.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="k", storage=open_storage(url))
    study.enqueue_trial({"x": 1})
    study.get_trials()  # settle the connection before handing the file to the writer
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db)], check=False)
    assert Path(f"{db}-journal").stat().st_size > 0  # the killed writer's hot journal
    again = optuna.load_study(study_name="k", storage=open_storage(url))
    assert [t.state for t in again.get_trials()] == [TrialState.WAITING]
    with sqlite3.connect(db) as conn:  # the half-done transaction was rolled back
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "scratch" not in tables and "studies" in tables


def test_a_draw_still_writing_its_record_is_waited_for(tmp_path: Path) -> None:
    # Seen in CI (journal storage, two workers): worker B checked for duplicates while worker
    # A's earlier trial had not written what it runs yet; B saw no duplicate, and both ran the
    # same configuration. B must wait until A's record is there (or A is long dead).
    study = optuna.create_study(
        study_name="d", storage=open_storage(f"journal:{tmp_path / 'd.log'}")
    )
    first = study.ask()  # worker A, caught between its draw and its record
    second = study.ask()  # worker B, record written
    second.set_user_attr(KEY, TrialRecord(knobs={"depth": 2}).to_dict())

    def write_first() -> None:
        time.sleep(0.3)
        first.set_user_attr(KEY, TrialRecord(knobs={"depth": 2}).to_dict())

    writer = threading.Thread(target=write_first)
    started = time.monotonic()
    writer.start()
    settled = settle(study, second.number)
    writer.join()
    assert time.monotonic() - started >= 0.25, "B did not wait for A's record"
    assert KEY in settled[0].user_attrs and _rec(settled[0]).knobs == {"depth": 2}
    # nothing before A: A never waits
    assert settle(study, first.number)


def test_storage_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unknown storage scheme"):
        open_storage("redis2://localhost/0")
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StorageError, match="not an SQLite database"):
        open_storage(f"sqlite:///{bad}")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StorageError, match="another program"):
        open_storage(f"sqlite:///{foreign}")
    # Nothing listens on this loopback port: unreachable, not a traceback.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageError, match="cannot open storage") as info:
        open_storage(f"postgresql://u:secret@127.0.0.1:{port}/db")
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


# ------------------------------------------------------------------ the search
@pytest.mark.integration
def test_guided_search_budget_baseline_rules_resume(model_file: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    summary = optimize(
        model_file,
        budget=5,
        storage=url,
        study_name="s",
        config=SETTLED,
        validate_top=2,
        validate_seeds=2,
        full_epochs=1,
    )
    study = _study(url, "s")
    trials = study.get_trials()
    counted = tr.counted(trials)
    assert len(counted) == 5
    assert _rec(counted[0]).source == "baseline"
    assert counted[0].params == {"depth": 2, "width": 4, "resolution": 8}
    assert len(set(_counted_keys(study))) == 5, "a configuration ran twice"
    assert all(t.state != TrialState.WAITING for t in trials), "nothing is enqueued"
    sources = {_rec(t).source for t in counted}
    assert any(str(s).startswith("rule:") for s in sources), sources
    for t in counted:
        rec = _rec(t)
        # one attribute, and nothing of the worker (owner, heartbeat, claims) left behind
        assert set(t.user_attrs) == {KEY} and rec.owner is None
        assert rec.prior is not None and rec.prior.buildable and rec.prior.macs == rec.macs
        if t.state == TrialState.COMPLETE:
            assert rec.accuracy is not None and 0 <= rec.accuracy <= 1 and rec.macs
            assert t.values == [rec.accuracy, rec.macs]
            assert rec.saturation and rec.evenness is not None
            assert [p.epoch for p in rec.progress] == [1, 2, 3, 4] and rec.epochs == 4
            assert rec.progress[-1].accuracy == rec.accuracy
    # the MACs stored with each rule candidate (counted on the meta device before training)
    # are what the trial that ran it measured
    proposed = {tr.config_key(c.params): c.macs for t in counted for c in _rec(t).candidates}
    ran = [t for t in counted if tr.config_key(t.params) in proposed]
    assert ran and all(proposed[tr.config_key(t.params)] == _rec(t).macs for t in ran)
    # optuna-dashboard opens the storage: named objectives, and no trial shows as failed
    assert study.metric_names == ["accuracy", "macs"]
    seen = _dashboard(url, "s")
    assert seen["objective_names"] == ["accuracy", "macs"]
    trial_states = {t["state"] for t in seen["trials"]}  # type: ignore[attr-defined]
    assert trial_states <= {"Complete", "Pruned"}, trial_states
    # validation: the baseline plus picks, trained in full with two seeds, scored on the
    # validation split (chooses) and tested (reported)
    assert summary.validation[0].baseline is True
    assert all(r.test_accuracy is not None for r in summary.validation)
    assert all(r.val_accuracy is not None for r in summary.validation)
    seeds = (SETTLED.seed, SETTLED.seed + 1)  # the study's seed, then the next
    assert all(r.seeds == seeds for r in summary.validation)
    assert all(r.comparison is not None and r.comparison.n == 2 for r in summary.validation[1:])
    assert len(summary.validation) >= 2
    # a rerun of the same command with the budget reached is refused, nothing changes
    same = {"storage": url, "study_name": "s", "config": SETTLED, "validate_top": 2}
    with pytest.raises(StudyError, match="already has 5 trials"):
        optimize(model_file, budget=5, validate_seeds=2, **same)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--validate-seeds must be at least 1"):
        optimize(model_file, budget=5, validate_seeds=0, **same)  # type: ignore[arg-type]
    # raising the budget resumes to the new total
    optimize(model_file, budget=7, storage=url, study_name="s", config=SETTLED, validate_top=0)
    study = _study(url, "s")
    assert len(tr.counted(study.get_trials())) == 7
    assert len(set(_counted_keys(study))) == 7
    # the report can be re-rendered from the storage alone
    again = load_summary("s", storage=url)
    assert again.counted_trials == 7 and again.validation


@pytest.mark.integration
def test_strategies_alone(model_file: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    for strategy in ("tpe", "random"):
        optimize(
            model_file,
            budget=4,
            strategy=strategy,
            storage=url,
            study_name=strategy,
            config=FAST,
            validate_top=0,
        )
        counted = tr.counted(_study(url, strategy).get_trials())
        sources = [_rec(t).source for t in counted]
        assert sources == ["baseline", "sampler", "sampler", "sampler"], strategy
        assert all(t.state != TrialState.PRUNED or _rec(t).status == "not_learned" for t in counted)


def test_study_with_other_space_is_refused(model_file: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optimize(model_file, budget=1, storage=url, study_name="x", config=FAST, validate_top=0)
    with pytest.raises(StudyError, match="another search space"):
        optimize(
            model_file,
            budget=2,
            storage=url,
            study_name="x",
            config=FAST,
            validate_top=0,
            pinned={"width": 8},
        )
    with pytest.raises(StudyError, match="no study 'nope'"):
        load_summary("nope", storage=url)


def test_diverging_trial_is_recorded_and_study_goes_on(model_file: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    config = FAST.replace(lr=1e6)  # SGD explodes: every trial diverges
    optimize(
        model_file,
        budget=2,
        storage=url,
        study_name="d",
        config=config,
        strategy="tpe",
        validate_top=0,
    )
    trials = tr.counted(_study(url, "d").get_trials())
    assert len(trials) == 2
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("loss became" in str(_rec(t).reason) for t in failed)
    assert all(_rec(t).status == "diverged" for t in failed)


# ------------------------------------------------------------------ several workers, faults
WORKER = textwrap.dedent(
    """
    import sys
    from satadvisor.config import TrainConfig
    from satadvisor.search import optimize

    if __name__ == "__main__":  # local worker processes are spawned: the main-module guard
        optimize(sys.argv[1], budget=int(sys.argv[2]), storage=sys.argv[3], study_name="w",
                 strategy=sys.argv[4], workers=int(sys.argv[5]), validate_top=0,
                 config=TrainConfig(epochs=int(sys.argv[6]), batch_size=128, device="cpu"))
    """
)


def _run_worker(
    tmp_path: Path,
    model: str,
    budget: int,
    url: str,
    *,
    workers: int = 1,
    strategy: str = "guided",
    epochs: int = 1,
) -> subprocess.Popen[bytes]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, str(script), model, str(budget), url, strategy, str(workers), str(epochs)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    """Wait for a worker; on failure show what it printed."""
    code = proc.wait(timeout=timeout)
    if code != 0:
        raise AssertionError(f"worker exited with {code}: {_last_log(proc)}")


def _last_log(proc: subprocess.Popen[bytes]) -> str:
    script = Path(str(proc.args[1]))  # type: ignore[index]
    logs = sorted(script.parent.glob("worker-*.log"))
    return logs[-1].read_text(errors="replace")[-3000:] if logs else "(no log)"


def _assert_exact_budget(url: str, budget: int) -> None:
    study = _study(url, "w")
    counted = tr.counted(study.get_trials())
    assert len(counted) == budget
    assert all(t.state != TrialState.RUNNING for t in counted)
    keys = _counted_keys(study)
    assert len(set(keys)) == len(keys), "a configuration ran twice"


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_processes_share_one_budget(model_file: str, tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'w.log'}"
    proc = _run_worker(tmp_path, model_file, 6, url, workers=2)
    _finish(proc)
    _assert_exact_budget(url, 6)


@pytest.mark.integration
def test_two_machines_on_postgres(model_file: str, tmp_path: Path) -> None:
    url = os.environ.get("SATADVISOR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set SATADVISOR_TEST_POSTGRES_URL (e.g. .ci/run starts a server) to run")
    # a fresh database state per run: drop the study if a previous run left it
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name="w", storage=url)
    procs = [_run_worker(tmp_path, model_file, 6, url) for _ in range(2)]
    for p in procs:
        _finish(p)
    _assert_exact_budget(url, 6)


@pytest.mark.integration
def test_killed_worker_loses_no_trial_and_resumes(model_file: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    # slower trials (5 epochs) so the kill lands mid-trial
    proc = _run_worker(tmp_path, model_file, 5, url, strategy="tpe", epochs=5)
    deadline = time.time() + 120
    done_before = []
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            trials = _study(url, "w").get_trials()
        except Exception:
            continue
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        # a trial that is really training (drawn and checked, not a momentary skip)
        running = [t for t in trials if t.state == TrialState.RUNNING and KEY in t.user_attrs]
        if complete and running:
            done_before = [t.number for t in complete]
            break
    assert done_before, "the worker never reached a second trial"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # the same settings (another --epochs would be refused: one front, one training recipe)
    proc = _run_worker(tmp_path, model_file, 5, url, strategy="tpe", epochs=5)
    _finish(proc)
    study = _study(url, "w")
    trials = study.get_trials()
    assert all(trials[n].state == TrialState.COMPLETE for n in done_before)
    stale = [t for t in trials if _rec(t).status == "interrupted"]
    assert len(stale) == 1 and stale[0].state == TrialState.FAIL
    # the interrupted configuration ran again in the resumed run
    retried = [t for t in trials if _rec(t).retry_of == stale[0].number]
    assert retried and retried[0].params == stale[0].params
    _assert_exact_budget(url, 5)


def test_space_for_builtin_resnet_uses_its_valid_depths() -> None:
    space = derive_space(spec_mod.load("resnet"), resolution=32)
    assert space.choices["depth"] == (10, 18, 26, 34)
    for depth in space.choices["depth"]:  # every value builds
        spec_mod.load("resnet").create(num_classes=10, in_channels=3, depth=depth, width=8)


# ------------------------------------------------------------------ rule-move policy
def _done(
    number: int,
    accuracy: float,
    macs: int,
    *,
    source: str = "sampler",
    depth: int | None = None,
    candidates: list[Candidate] | None = None,
    status: str = "completed",
    reason: str | None = None,
) -> tuple[int, TrialRecord]:
    """A finished trial as the policy reads it: (number, record)."""
    d = number if depth is None else depth
    return number, TrialRecord(
        knobs={"depth": d},
        source=source,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        accuracy=accuracy,
        macs=macs,
        learned=True,
        candidates=tuple(candidates or ()),
    )


def _cand(depth: int, macs: int, kind: str = "efficiency") -> Candidate:
    return Candidate({"depth": depth}, kind, macs)


def _next(trials: list[tuple[int, TrialRecord]], budget: int) -> policy.Move | None:
    return policy.next_candidate(trials, names=["depth"], budget=budget)


def test_front_ranks_agree_with_optuna_best_trials() -> None:
    rng = np.random.default_rng(3)
    trials = [
        _done(i, float(rng.integers(0, 6)) / 10, int(rng.integers(1, 8)) * 100) for i in range(40)
    ]
    ranks = policy.front_ranks(trials, ("accuracy", "macs"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"depth": optuna.distributions.IntDistribution(0, 100)}
    for n, rec in trials:
        assert rec.accuracy is not None and rec.macs is not None
        study.add_trial(
            optuna.trial.create_trial(
                values=[rec.accuracy, rec.macs], params={"depth": n}, distributions=dist
            )
        )
    assert sorted(n for n, r in ranks.items() if r == 0) == sorted(
        t.number for t in study.best_trials
    )
    # every rank-k trial is dominated by some rank-(k-1) trial and by none of rank >= k
    points = {n: (rec.accuracy or 0.0, -(rec.macs or 0)) for n, rec in trials}

    def dom(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] >= b[1] and a != b

    for n, r in ranks.items():
        assert not any(dom(points[m], points[n]) for m, q in ranks.items() if q >= r)
        if r > 0:
            assert any(dom(points[m], points[n]) for m, q in ranks.items() if q == r - 1)


def test_rule_slots_wait_for_startup_and_stay_under_the_cap() -> None:
    budget = 20
    start = 1 + policy.startup_trials(budget)  # baseline + TPE's random trials
    trials = [
        _done(0, 0.5, 1000, source="baseline", candidates=[_cand(500 + i, 900) for i in range(30)])
    ]
    rule_positions = []
    for position in range(1, budget):
        move = _next(trials, budget)
        if move is None:
            new = _done(position, 0.4, 2000 + position)  # dominated: seeds nothing
        else:
            rule_positions.append(position)
            cand = move.candidate
            new = _done(position, 0.4, 2000, source=cand.source, depth=int(cand.params["depth"]))
        trials.append(new)
    assert rule_positions[0] == start
    assert len(rule_positions) == policy.rule_cap(budget) == budget // 3
    # spread over the rest of the budget, not bunched right after the startup
    assert max(np.diff(rule_positions)) <= 3 and rule_positions[-1] >= budget - 3


def test_only_front_trials_seed_candidates_largest_cut_first() -> None:
    trials = [
        _done(0, 0.80, 1000, source="baseline", candidates=[_cand(50, 1200, "performance")]),
        # dominated by the baseline: its (very cheap) candidate is never drawn
        _done(1, 0.70, 2000, candidates=[_cand(51, 100)]),
        _done(2, 0.90, 3000, candidates=[_cand(52, 2700), _cand(53, 1500), _cand(54, 6000)]),
        *[_done(n, 0.1, 9000 + n) for n in range(3, 9)],  # past the startup, dominated
    ]
    picks = []
    for _ in range(5):
        move = _next(trials, 13)
        if move is None:
            break
        cand = move.candidate
        picks.append(cand.params["depth"])
        trials.append(
            _done(len(trials), 0.1, 99999, source=cand.source, depth=cand.params["depth"])
        )
    # front (trials 0 and 2) only; cuts first by relative MACs (0.5×, 0.9×), then increases
    # (1.2× of trial 0 before 2× of trial 2); trial 1's candidate never
    assert picks == [53, 52, 50, 54]


def test_a_tail_hand_off_runs_at_the_next_slot_before_the_front() -> None:
    budget = 30  # startup: the baseline + 7 of TPE's; rule slots spread over 22 positions
    trials = [
        _done(0, 0.80, 1000, source="baseline", candidates=[_cand(50, 500)]),
        *[_done(n, 0.1, 9000 + n) for n in range(1, 8)],
        _done(8, 0.1, 9008, source="rule:efficiency"),  # the first rule slot, just spent
    ]
    hand = _done(
        9, 0.5, 4000, status="pruned", reason=f"{policy.TAIL_HANDOFF} of 3 layer(s) after epoch 2",
        candidates=[_cand(60, 2000, "tail")],
    )  # fmt: skip
    # by the even spread the next rule slot is not due yet …
    assert policy.slot_due([*trials, hand], budget=budget, handoff=False) is False
    assert _next(trials, budget) is None
    move = _next([*trials, hand], budget)
    # … but the pruned trial's tail-removed configuration goes now, ahead of the front's
    assert move is not None and move.candidate.params == {"depth": 60} and move.parent == 9
    # a trial pruned for another reason hands nothing over
    other = (9, hand[1].with_(reason="dominated after epoch 2"))
    assert _next([*trials, other], budget) is None


def _stub_analysis(spec_knobs: dict[str, int]) -> SimpleNamespace:
    """What analyze() returns, for the tiny model: deeper and wider is more accurate; every
    neighbour configuration is recommended (down = efficiency, up = performance)."""
    depth, width, res = spec_knobs["depth"], spec_knobs["width"], spec_knobs["resolution"]
    recs = []
    for knob, values in {"depth": (1, 2, 3), "width": (4, 8), "resolution": (8, 12)}.items():
        i = values.index(spec_knobs[knob])
        for j, kind in ((i - 1, "efficiency"), (i + 1, "performance")):
            if 0 <= j < len(values):
                recs.append(SimpleNamespace(kind=kind, changes={knob: values[j]}, cost=None))
    run = SimpleNamespace(
        status="completed",
        accuracy=0.5 + 0.1 * depth + 0.01 * width + 0.001 * res,
        reason=None,
        epochs=[1],
        device="cpu",
        learned=True,
        learning=None,
    )
    return SimpleNamespace(
        run=run,
        macs=depth * width * res * res,
        params=depth * width,
        profile=[SimpleNamespace(name="conv", saturation=0.5)],
        tail=[],
        receptive_field=SimpleNamespace(unproductive=[]),
        findings=[],
        recommendations=recs,
    )


@pytest.fixture()
def stubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(
        self: Worker, trial: optuna.Trial, knobs: dict[str, int], config: TrainConfig, rec: object
    ) -> SimpleNamespace:
        return _stub_analysis(knobs)

    monkeypatch.setattr(Worker, "_analyze", fake)


def _front_before(trials: list[optuna.trial.FrozenTrial], number: int) -> set[int]:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.number < number]
    pts = {t.number: (_rec(t).accuracy or 0.0, -(_rec(t).macs or 0)) for t in done}
    return {
        n
        for n, p in pts.items()
        if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts.values())
    }


@pytest.mark.parametrize("budget", [6, 9, 12])
def test_guided_rule_trials_capped_and_from_the_front(
    model_file: str, tmp_path: Path, stubbed: None, budget: int
) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    optimize(model_file, budget=budget, storage=url, study_name="h", config=FAST, validate_top=0)
    trials = _study(url, "h").get_trials()
    counted = tr.counted(trials)
    assert len(counted) == budget and len(set(_counted_keys(_study(url, "h")))) == budget
    rules = [t for t in counted if _rec(t).is_rule]
    # the stub recommends every neighbour: without the cap these would crowd out the sampler
    assert 1 <= len(rules) <= budget // 3
    start = 1 + policy.startup_trials(budget)
    for t in rules:
        assert t.number >= start, "a rule trial took one of the sampler's startup slots"
        assert _rec(t).parent in _front_before(trials, t.number)


# ------------------------------------------------------------------ validation: selection, seeds
def _runs(
    trial: int,
    val: tuple[float | None, ...],
    test: tuple[float | None, ...],
    *,
    macs: int,
    baseline: bool = False,
    statuses: tuple[str, ...] | None = None,
) -> list[dict[str, object]]:
    """Full-run records of one configuration (depth = trial number), seeds 0, 1, …"""
    return [
        {
            "trial": trial,
            "baseline": baseline,
            "source": "baseline" if baseline else "sampler",
            "knobs": {"depth": trial},
            "seed": seed,
            "proxy_accuracy": 0.5,
            "val_accuracy": v,
            "test_accuracy": t,
            "status": statuses[seed] if statuses else "completed",
            "macs": macs,
            "params": macs // 10,
            "epochs": 4,
            "wall_time": 1.0,
        }
        for seed, (v, t) in enumerate(zip(val, test, strict=True))
    ]


def _recommend(*runs: list[dict[str, object]], tolerance: float = 0.005) -> list[dict[str, object]]:
    return summary_mod.recommended(
        summary_mod.aggregate([r for rs in runs for r in rs]), tolerance=tolerance
    )


def test_validation_accuracy_alone_chooses_and_orders() -> None:
    base = _runs(0, (0.90, 0.91, 0.92), (0.90, 0.91, 0.92), macs=1000, baseline=True)
    # val: 1 and 2 clearly above the baseline, 3 clearly below; test says the opposite.
    one = _runs(1, (0.95, 0.96, 0.97), (0.80, 0.81, 0.80), macs=800)
    two = _runs(2, (0.93, 0.94, 0.945), (0.99, 0.99, 0.99), macs=800)
    three = _runs(3, (0.80, 0.82, 0.81), (0.99, 0.995, 0.99), macs=500)
    four = _runs(4, (0.94, 0.95, 0.96), (0.99, 0.99, 0.99), macs=1200)
    recs = _recommend(base, one, two, three, four)
    # cheapest first, among equal MACs the higher validation accuracy; 3 is out (val worse)
    assert [r["trial"] for r in recs] == [1, 2, 4]
    assert all(r["confirmed"] for r in recs)
    # Any test accuracies at all (here: reversed, or all equal) change nothing.
    for fake in ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        shuffled = [
            [{**r, "test_accuracy": fake[i % 3] if r["trial"] % 2 else 1 - fake[i % 3]}
             for i, r in enumerate(rs)]
            for rs in (base, one, two, three, four)
        ]  # fmt: skip
        again = _recommend(*shuffled)
        assert [r["trial"] for r in again] == [1, 2, 4]
        assert [r["accuracy_delta"] for r in again] == [r["accuracy_delta"] for r in recs]
    # and a validation accuracy moved below the baseline drops it, whatever its test says
    worse = _runs(2, (0.80, 0.81, 0.82), (1.0, 1.0, 1.0), macs=800)
    assert [r["trial"] for r in _recommend(base, one, worse, three, four)] == [1, 4]


def test_paired_interval_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 8):
        b = rng.uniform(0.85, 0.95, size=n)
        c = b + rng.normal(0.004, 0.006, size=n)
        cmp = summary_mod.paired(
            summary_mod.aggregate(_runs(0, tuple(b), (None,) * n, macs=9, baseline=True))[0],
            summary_mod.aggregate(_runs(1, tuple(c), (None,) * n, macs=5))[0],
        )
        ref = stats.ttest_rel(c, b).confidence_interval(0.95)
        assert cmp["n"] == n and cmp["seeds"] == list(range(n))
        assert cmp["mean"] == pytest.approx(float(np.mean(c - b)), abs=1e-12)
        assert (cmp["low"], cmp["high"]) == (
            pytest.approx(ref.low, abs=1e-12),
            pytest.approx(ref.high, abs=1e-12),
        )


def test_confirmation_against_the_interval_and_the_tolerance() -> None:
    base = _runs(0, (0.900, 0.910, 0.920), (0.9,) * 3, macs=1000, baseline=True)
    # cheaper, 0.1 pt below the baseline on every seed: low = −0.001 > −0.005 → confirmed
    ok = _runs(1, (0.899, 0.909, 0.919), (0.9,) * 3, macs=500)
    # cheaper, mean −0.1 pt but noisy: the interval reaches below −0.5 pt → not confirmed
    noisy = _runs(2, (0.880, 0.925, 0.922), (0.9,) * 3, macs=600)
    recs = {r["trial"]: r for r in _recommend(base, ok, noisy)}
    deltas = np.array([0.880 - 0.900, 0.925 - 0.910, 0.922 - 0.920])
    low = deltas.mean() - stats.t.ppf(0.975, 2) * deltas.std(ddof=1) / np.sqrt(3)
    assert low < -0.005 < deltas.mean()
    assert recs[1]["verdict"] == "confirmed" and recs[1]["claim"] == "cheaper"
    assert recs[1]["comparison"]["accuracy"] == "less accurate"  # honest: it is a bit worse
    assert recs[2]["verdict"] == "not confirmed" and not recs[2]["confirmed"]
    assert recs[2]["comparison"]["low"] == pytest.approx(low)
    # confirmed first, then cheapest
    assert [r["trial"] for r in _recommend(base, ok, noisy)] == [1, 2]
    assert [r["trial"] for r in _recommend(base, noisy)] == [2]


def test_one_seed_confirms_nothing() -> None:
    base = _runs(0, (0.90,), (0.90,), macs=1000, baseline=True)
    big_gain = _runs(1, (0.99,), (0.99,), macs=500)
    (rec,) = _recommend(base, big_gain)
    assert rec["comparison"]["n"] == 1 and rec["comparison"]["low"] is None
    assert rec["comparison"]["accuracy"] is None
    assert (rec["verdict"], rec["basis"], rec["confirmed"]) == ("not confirmed", "one seed", False)


def test_ties_are_ties_never_more_accurate() -> None:
    base = _runs(0, (0.900, 0.910, 0.920), (0.9,) * 3, macs=1000, baseline=True)
    # more expensive, +0.3 pt on average, but one seed is worse: the interval contains 0
    tied = _runs(1, (0.910, 0.905, 0.924), (0.99,) * 3, macs=2000)
    (rec,) = _recommend(base, tied)
    assert rec["comparison"]["low"] < 0 < rec["comparison"]["high"]
    assert rec["accuracy_delta"] > 0
    assert (rec["claim"], rec["verdict"], rec["confirmed"]) == ("more accurate", "tie", False)
    assert rec["comparison"]["accuracy"] == "tie"
    # the same gain on every seed is confirmed more accurate
    sure = _runs(1, (0.903, 0.913, 0.923), (0.5,) * 3, macs=2000)
    (rec,) = _recommend(base, sure)
    assert (rec["verdict"], rec["comparison"]["accuracy"]) == ("confirmed", "more accurate")


def test_a_diverged_seed_leaves_the_pair_out_and_confirms_nothing() -> None:
    base = _runs(0, (0.900, 0.910, 0.920), (0.9,) * 3, macs=1000, baseline=True)
    broke = _runs(
        1, (0.95, None, 0.96), (0.9, None, 0.9), macs=500,
        statuses=("completed", "diverged", "completed"),
    )  # fmt: skip
    records = summary_mod.aggregate(base + broke)
    assert records[1]["status"] == "diverged" and records[1]["seeds"] == [0, 1, 2]
    (rec,) = summary_mod.recommended(records, tolerance=0.005)
    assert rec["comparison"]["seeds"] == [0, 2] and rec["comparison"]["missing"] == 1
    assert (rec["verdict"], rec["basis"]) == ("not confirmed", "missing runs")


class _Stop(Exception):
    """Stands in for Ctrl-C in the middle of a validation."""


def _validation_study(tmp_path: Path) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
    study = optuna.create_study(
        study_name="v",
        storage=open_storage(f"sqlite:///{tmp_path / 'v.db'}"),
        directions=["maximize", "minimize"],
    )
    dist = {"depth": optuna.distributions.CategoricalDistribution([1, 2, 3, 4])}
    for depth, source in ((2, "baseline"), (1, "sampler"), (3, "sampler")):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                values=[0.5 + depth / 10, float(depth)],
                params={"depth": depth},
                distributions=dist,
                user_attrs={
                    KEY: TrialRecord(
                        knobs={"depth": depth},
                        source=source,
                        status="completed",
                        accuracy=0.5 + depth / 10,
                        macs=depth,
                    ).to_dict()
                },
            )
        )
    return study, study.get_trials()


def test_interrupted_multi_seed_validation_resumes_without_rerunning(
    tmp_path: Path, model_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from satadvisor import advisor
    from satadvisor import data as data_mod
    from satadvisor.search import validate as val_mod
    from satadvisor.search.worker import SearchSettings

    calls: list[tuple[int, int]] = []
    stop_at = {"n": 4}

    def fake_analyze(spec: object, *, knobs: dict[str, int], config: TrainConfig, **_: object):
        if len(calls) == stop_at["n"]:
            raise _Stop
        calls.append((knobs["depth"], config.seed))
        assert config.full and config.epochs == 2
        run = SimpleNamespace(
            accuracy=0.8 + knobs["depth"] / 100 + config.seed / 1000,
            test_accuracy=0.7,
            status="completed",
            epochs=[SimpleNamespace(x=1)] * 2,
            wall_time=0.1,
        )
        return SimpleNamespace(run=run, macs=knobs["depth"], params=1, profile=[], tail=[])

    split = SimpleNamespace(train=[0] * 30, eval=[0] * 10, test=[0] * 20)
    monkeypatch.setattr(advisor, "analyze", fake_analyze)
    monkeypatch.setattr(data_mod, "load", lambda *a, **k: split)
    study, _ = _validation_study(tmp_path)
    space = SearchSpace(choices={"depth": (1, 2, 3)}, fixed={"width": 4, "resolution": 8})
    settings = SearchSettings(
        model=model_file, study_name="v", storage_url="", budget=3, space=space,
        train=TrainConfig(epochs=1, seed=10, device="cpu"),
    )  # fmt: skip
    baseline, picks = val_mod.select(study, k=2)
    assert baseline is not None and baseline.params == {"depth": 2}
    assert [t.params["depth"] for t in picks] == [3, 1]
    kwargs = {"trials": picks, "baseline": baseline, "full_epochs": 2, "seeds": 3}
    with pytest.raises(_Stop):
        val_mod.validate(study, settings, **kwargs)  # type: ignore[arg-type]
    # seed-major: every configuration with seed 10, then the baseline with seed 11
    assert calls == [(2, 10), (3, 10), (1, 10), (2, 11)]
    assert not val_mod.validated(study, settings, trials=picks, baseline=baseline, seeds=3)
    stop_at["n"] = 10**6
    records = val_mod.validate(study, settings, **kwargs)  # type: ignore[arg-type]
    # the resumed run did only what was missing, each (configuration, seed) exactly once
    assert calls[4:] == [(3, 11), (1, 11), (2, 12), (3, 12), (1, 12)]
    assert sorted(calls) == sorted({(d, s) for d in (1, 2, 3) for s in (10, 11, 12)})
    stored = [k for k in study.user_attrs if k.startswith(summary_mod.VALIDATION_PREFIX)]
    assert len(stored) == len(records) == 9
    assert val_mod.validated(study, settings, trials=picks, baseline=baseline, seeds=3)
    assert {(r.knobs["depth"], r.seed) for r in records} == set(calls)
    assert all(r.val_accuracy != r.test_accuracy for r in records)
    # more seeds later: only the new seed runs
    val_mod.validate(study, settings, **{**kwargs, "seeds": 4})  # type: ignore[arg-type]
    assert calls[9:] == [(2, 13), (3, 13), (1, 13)]
    agg = summary_mod.validations(study)
    assert [r.seeds for r in agg] == [(10, 11, 12, 13)] * 3
    assert agg[0].baseline and agg[0].val_images == 10 and agg[0].test_images == 20
    with pytest.raises(UsageError, match="--validate-seeds must be at least 1"):
        val_mod.validate(study, settings, **{**kwargs, "seeds": 0})  # type: ignore[arg-type]


def test_not_learned_trials_are_counted_and_never_picked(tmp_path: Path) -> None:
    from satadvisor.search import validate as val_mod

    study, _ = _validation_study(tmp_path)
    dist = {"depth": optuna.distributions.CategoricalDistribution([1, 2, 3, 4])}
    for depth, state in ((4, TrialState.COMPLETE), (1, TrialState.PRUNED)):
        study.add_trial(  # the most accurate and cheapest proxy on paper, but it did not learn
            optuna.trial.create_trial(
                state=state,
                values=[0.99, 0.5] if state == TrialState.COMPLETE else None,
                params={"depth": depth},
                distributions=dist,
                user_attrs={
                    KEY: TrialRecord(
                        knobs={"depth": depth}, status="not_learned", accuracy=0.99, macs=1
                    ).to_dict()
                },
            )
        )
    _, picks = val_mod.select(study, k=5)
    assert 4 not in [t.params["depth"] for t in picks]
    summary = summary_mod.study_summary(study)
    assert summary.not_learned == 2
    assert [t.status for t in summary.trials][-2:] == ["not_learned"] * 2
