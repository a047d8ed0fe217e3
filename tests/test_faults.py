"""Fault injection: SIGKILL and SIGINT at seeded random points of ``analyze``, ``optimize``
(search and validation phases) and ``report``; torn journal and SQLite writes; a full disk;
several workers starting at once on a fresh storage. After each fault the study must be
consistent (exact budget, no configuration twice, no orphan RUNNING trial), rerunning the
command must resume it, and every earlier report must be intact.

How a fault lands where it should, fast and reproducibly: each command runs in a child forked
from this (already imported) test process, with its stdout and stderr in files. In the child,
every *event* — a write to the Optuna storage (before or after it), a training step, a file
operation of the report writer (rename, fsync) — is counted; the child signals itself at the
N-th event, N drawn by a seeded generator from the events an undisturbed run of the same
command had. "Torn SQLite writes" are SIGKILLs sent by this process at seeded random delays
instead, so some land inside SQLite's own commits.

Only the fast representative subset runs unmarked; ``-m slow`` runs every seed.
``SATADVISOR_RECORD=FILE`` appends each injection's outcome to FILE (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from _record import record
from _tiny import TINY_MODEL_SOURCE
from optuna.trial import TrialState

from satadvisor._io import _marker_listing
from satadvisor.cli import main
from satadvisor.search import record as tr
from satadvisor.search.record import KEY, TrialRecord
from satadvisor.search.storage import open_storage

pytestmark = pytest.mark.integration

STUDY = "s"
FULL = 3  # the budget the faults hit: the template's 2 trials continued to 3 (and validated)
COMMON = ["--epochs", "1", "--subset", "120", "--batch-size", "64", "--device", "cpu"]
COMMON += ["--strategy", "tpe", "--study-name", STUDY]
VALIDATE = ["--validate-top", "1", "--full-epochs", "1", "--full-subset", "120"]
#: Where the children's stdout/stderr files go when not beside the working directory (a full
#: disk test keeps them off the full disk).
LOGS: list[Path] = []
HANG = 240.0  # seconds after which a child counts as hung (a failure, not a measurement)


def optimize_args(url: str, budget: int) -> list[str]:
    """The template's run (budget 2, one validation seed) or the continuation the faults hit
    (budget 3, a second seed: its full runs are the validation phase, since proxies this short
    do not learn and so add no pick)."""
    seeds = "1" if budget < FULL else "2"
    args = ["optimize", "tiny.py", "--budget", str(budget), *COMMON, *VALIDATE]
    return [*args, "--validate-seeds", seeds, "--storage", url]


ANALYZE = ["analyze", "tiny.py", "--epochs", "1", "--subset", "120", "--device", "cpu"]
ANALYZE += ["--name", STUDY]


# ------------------------------------------------------------------ running a forked command
@dataclass
class Outcome:
    code: int  # the exit code; -N: killed by signal N
    stdout: str
    stderr: str
    events: int  # events counted in the child (0 when it was killed before reporting)
    ranges: dict[str, list[int]]  # phase -> its first and last event
    injected: dict[str, Any] | None  # where the fault landed: event number, point, phase


class _Events:
    """In the child: counts events and signals itself at event ``at``."""

    def __init__(self, at: int | None, sig: int, after: bool, log: Path) -> None:
        self.at, self.sig, self.after, self.log = at, sig, after, log
        self.count = 0
        self.phase = "search"
        self.by_phase: dict[str, int] = {}
        self.ranges: dict[str, list[int]] = {}  # phase -> [first, last] event

    def hit(self, point: str) -> None:
        self.count += 1
        self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + 1
        self.ranges.setdefault(self.phase, [self.count, self.count])[1] = self.count
        if self.count == self.at:
            where = {"event": self.count, "point": point, "phase": self.phase}
            self.log.write_text(json.dumps({"injected": where}))
            os.kill(os.getpid(), self.sig)

    def wrap(self, owner: Any, name: str, point: str) -> None:
        real = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if not self.after:
                self.hit(point)
            out = real(*args, **kwargs)
            if self.after:
                self.hit(point)
            return out

        setattr(owner, name, counted)

    def in_phase(self, owner: Any, name: str, phase: str) -> None:
        real = getattr(owner, name)

        def phased(*args: Any, **kwargs: Any) -> Any:
            self.phase = phase
            return real(*args, **kwargs)

        setattr(owner, name, phased)

    def install(self) -> None:
        import satadvisor.report
        import satadvisor.search.study
        import satadvisor.train

        writes = ["create_new_study", "create_new_trial", "set_trial_param"]
        writes += ["set_trial_state_values", "set_trial_user_attr", "set_study_user_attr"]
        writes += ["set_trial_intermediate_value", "set_trial_system_attr"]
        for cls in (optuna.storages.RDBStorage, optuna.storages.JournalStorage):
            for name in writes:
                self.wrap(cls, name, f"storage.{name}")
        self.wrap(satadvisor.train, "_to_device", "training step")
        for name in ("replace", "rename", "fsync"):
            self.wrap(os, name, f"os.{name}")
        self.in_phase(satadvisor.search.study, "validate", "validation")
        self.in_phase(satadvisor.report, "write_study", "report")
        self.in_phase(satadvisor.report, "write_analysis", "report")


def _later_resume() -> None:
    """In the child: the rerun comes a minute after the fault. A trial drawn but not yet
    recorded is indistinguishable from another worker's draw for ``DRAW_GRACE`` (60 s); only
    then is it reaped (it counts meanwhile). The harness counts such orphans separately."""
    from satadvisor.search import study as study_module
    from satadvisor.search import worker

    real = worker.reap_dead

    def later(study: optuna.Study, now: float | None = None) -> list[int]:
        return real(study, now=time.time() + worker.DRAW_GRACE + 1)

    worker.reap_dead = later
    study_module.reap_dead = later


def run_forked(
    args: list[str],
    cwd: Path,
    *,
    at: int | None = None,
    sig: int = signal.SIGKILL,
    after: bool = False,
    later: bool = False,
) -> Outcome:
    """Run ``satadvisor ARGS`` in a forked child; with ``at``, signal it at that event."""
    return _wait(*start_forked(args, cwd, at=at, sig=sig, after=after, later=later))


def start_forked(
    args: list[str],
    cwd: Path,
    *,
    at: int | None = None,
    sig: int = signal.SIGKILL,
    after: bool = False,
    later: bool = False,
    start: float | None = None,
) -> tuple[int, Path, Path, Path]:
    """Fork a child that runs ``satadvisor ARGS`` (at ``start``, a time.time(), when given)."""
    logs = (LOGS[-1] if LOGS else cwd.parent) / f".{cwd.name}-{time.monotonic_ns()}"
    out, err, log = (logs.with_suffix(s) for s in (".out", ".err", ".log"))
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.chdir(cwd)
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            signal.signal(signal.SIGINT, signal.default_int_handler)
            import torch

            torch.set_num_threads(1)
            events = _Events(at, sig, after, log)
            events.phase = {"analyze": "training", "report": "loading"}.get(args[0], "search")
            events.install()
            if later:
                _later_resume()
            while start is not None and time.time() < start:  # several children start together
                time.sleep(0.001)
            try:
                main.main(args=args, prog_name="satadvisor", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            if not log.exists():
                counts = {"events": events.count, "phases": events.by_phase}
                log.write_text(json.dumps({**counts, "ranges": events.ranges}))
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    return pid, out, err, log


def _wait(pid: int, out: Path, err: Path, log: Path, *, kill_at: float | None = None) -> Outcome:
    deadline = time.monotonic() + HANG
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if kill_at is not None and time.monotonic() >= kill_at:
            os.kill(pid, signal.SIGKILL)
            kill_at = None
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"hung: {err.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)
    info = json.loads(log.read_text()) if log.exists() else {}
    outcome = Outcome(
        os.waitstatus_to_exitcode(status),
        out.read_text(errors="replace"),
        err.read_text(errors="replace"),
        int(info.get("events", 0)),
        info.get("ranges") or {},
        info.get("injected"),
    )
    for path in (out, err, log):
        path.unlink(missing_ok=True)
    return outcome


# ------------------------------------------------------------------ what must hold afterwards
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=open_storage(url)).get_trials()


def in_work(work: Path, url: str) -> str:
    """``url`` as the command in ``work`` sees it (the test process runs elsewhere)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{work / url.removeprefix('sqlite:///')}"
    if url.startswith("journal:") and not url.startswith("journal:/"):
        return f"journal:{work / url.removeprefix('journal:')}"
    return url


def orphans(url: str) -> int:
    """Trials drawn but never recorded (their worker died between Optuna's draw and the
    record): the rerun reaps them only a minute after the draw."""
    try:
        trials = _trials(url)
    except Exception:  # the study was never created
        return 0
    return sum(t.state == TrialState.RUNNING and KEY not in t.user_attrs for t in trials)


def assert_consistent(url: str, budget: int) -> None:
    """Exact budget, no configuration twice, nothing left running or waiting."""
    trials = _trials(url)
    counted = tr.counted(trials)
    assert len(counted) == budget, [(t.number, t.state, TrialRecord.of(t).status) for t in trials]
    keys = [tr.config_key(t.params) for t in counted]
    assert len(set(keys)) == len(keys), "a configuration ran twice"
    left = [
        (
            t.number,
            t.datetime_start,
            t.user_attrs.get(KEY, {}).get("owner"),
            TrialRecord.of(t).status,
        )
        for t in trials
        if t.state in (TrialState.RUNNING, TrialState.WAITING)
    ]
    assert left == [], f"trials left running or waiting: {left}"


def assert_report(folder: Path, kind: str = "study") -> None:
    """A complete report: every file its marker lists, nothing else, the JSON readable."""
    listed = _marker_listing(folder)
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert present - {".satadvisor-output"} == listed, (present, listed)
    json.loads((folder / f"{kind}.json").read_text())
    assert (folder / "index.html").read_text().rstrip().endswith("</html>")


def leftovers(work: Path) -> list[str]:
    """Hidden staging or swap folders a killed report writer left beside its report."""
    return sorted(p.name for p in (work / "reports").glob(".*"))


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def assert_one_line_or_success(outcome: Outcome) -> None:
    """Exit 0, or exit 2 with one error line last (progress lines may come before it)."""
    assert "Traceback" not in outcome.stderr, outcome.stderr
    if outcome.code == 2:
        lines = outcome.stderr.splitlines()
        assert lines and lines[-1].startswith("satadvisor: error: "), outcome.stderr
        assert sum(line.startswith("satadvisor: error") for line in lines) == 1, outcome.stderr
    else:
        assert outcome.code == 0, (outcome.code, outcome.stderr)


# ------------------------------------------------------------------ the study the faults hit
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with a validated 2-trial study on SQLite and on a journal file,
    their reports, and an unrelated report the user kept (``reports/kept``)."""
    root = tmp_path_factory.mktemp("faults")
    for kind, url in (("sqlite", "sqlite:///studies/s.db"), ("journal", "journal:studies/s.log")):
        work = root / kind
        work.mkdir()
        (work / "tiny.py").write_text(TINY_MODEL_SOURCE)
        kept = run_forked(["analyze", "tiny.py", "--no-train", "--name", "kept"], work)
        assert kept.code == 0, kept.stderr
        first = run_forked(optimize_args(url, 2), work)
        assert first.code == 0, first.stderr
        assert_consistent(in_work(work, url), 2)
    return root


@pytest.fixture()
def work_copy(template: Path, tmp_path: Path) -> Callable[[str], Path]:
    def copy(kind: str) -> Path:
        target = tmp_path / kind
        shutil.copytree(template / kind, target, symlinks=True)
        return target

    return copy


URLS = {"sqlite": "sqlite:///studies/s.db", "journal": "journal:studies/s.log"}


@dataclass
class Tally:
    """What the injections of one test did (recorded for docs/reliability.md)."""

    name: str
    runs: int = 0
    outcomes: dict[str, int] | None = None
    phases: dict[str, int] | None = None
    orphans: int = 0
    leftovers: int = 0
    aside: int = 0  # killed mid-swap: no report folder, the previous one kept in .NAME.old-*

    def add(self, outcome: Outcome, *, orphan: int = 0, left: int = 0) -> None:
        self.runs += 1
        self.outcomes = self.outcomes or {}
        key = {-9: "killed", 130: "exit 130", 0: "exit 0", 2: "exit 2"}.get(
            outcome.code, f"exit {outcome.code}"
        )
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if outcome.injected:
            self.phases = self.phases or {}
            phase = outcome.injected["phase"]
            self.phases[phase] = self.phases.get(phase, 0) + 1
        self.orphans += orphan
        self.leftovers += left

    def save(self) -> None:
        message = json.dumps(
            {"runs": self.runs, "outcomes": self.outcomes, "phases": self.phases,
             "orphans": self.orphans, "leftovers": self.leftovers, "aside": self.aside}
        )  # fmt: skip
        record("harness", self.name, [], 0, message)


def resume(work: Path, url: str) -> Outcome:
    """Rerun the command; when the fault came after the validation (while the report was
    written), it refuses ("already … validated … re-render with `satadvisor report s`") and
    its advice, ``report``, is run."""
    again = run_forked(optimize_args(url, FULL), work, later=True)
    if again.code == 2 and "is validated" in again.stderr:
        assert f"re-render with `satadvisor report {STUDY}`" in again.stderr
        first = again.stderr
        again = run_forked(["report", STUDY, "--storage", url], work)
        again.stderr = first + again.stderr
    assert again.code == 0, again.stderr
    return again


def _points(rng: random.Random, run: Outcome, n: int) -> list[int]:
    """``n`` events of ``run`` drawn phase by phase in turn (search, validation, report…), so
    a short phase is hit too."""
    pools = [list(range(a, b + 1)) for a, b in run.ranges.values()]
    chosen: set[int] = set()
    while len(chosen) < min(n, run.events) and any(pools):
        for pool in pools:
            free = [e for e in pool if e not in chosen]
            if free and len(chosen) < n:
                chosen.add(rng.choice(free))
    return sorted(chosen)


# ------------------------------------------------------------------ SIGKILL / SIGINT: optimize
def _optimize_faults(
    work_copy: Callable[[str], Path], kind: str, sig: int, seed: int, n: int
) -> None:
    url = URLS[kind]
    rng = random.Random(seed)
    probe = work_copy(kind)
    kept = _files(probe / "reports" / "kept")
    undisturbed = run_forked(optimize_args(url, FULL), probe)
    assert undisturbed.code == 0, undisturbed.stderr
    assert_consistent(in_work(probe, url), FULL)
    shutil.rmtree(probe)
    tally = Tally(f"{signal.Signals(sig).name} optimize on {kind}, seed {seed}")
    for at in _points(rng, undisturbed, n):
        work = work_copy(kind)
        before = _files(work / "reports" / STUDY)
        hit = run_forked(optimize_args(url, FULL), work, at=at, sig=sig, after=rng.random() < 0.5)
        assert hit.injected is not None and hit.injected["event"] == at
        if sig == signal.SIGKILL:
            assert hit.code == -signal.SIGKILL
        else:  # Ctrl-C: recorded, exit 130, one line, at every point
            assert hit.code == 130, (hit.injected, hit.stderr)
            assert hit.stderr.endswith("satadvisor: interrupted\n"), hit.stderr
            assert "Traceback" not in hit.stderr
        # the earlier report: as it was, or replaced by a complete new one
        now = work / "reports" / STUDY
        if now.exists() and _files(now) != before:
            assert_report(now)
        orphan = orphans(in_work(work, url))
        left = leftovers(work)
        resume(work, url)
        assert_consistent(in_work(work, url), FULL)
        assert_report(work / "reports" / STUDY)
        summary = json.loads((work / "reports" / STUDY / "study.json").read_text())
        assert [r["baseline"] for r in summary["validation"]][:1] == [True]
        assert _files(work / "reports" / "kept") == kept, "the kept report changed"
        assert sorted(p.name for p in work.iterdir()) == ["reports", "studies", "tiny.py"]
        tally.add(hit, orphan=orphan, left=len(left))
        shutil.rmtree(work)
    tally.save()


@pytest.mark.parametrize(("kind", "sig"), [("sqlite", signal.SIGKILL), ("journal", signal.SIGINT)])
def test_a_fault_in_optimize_keeps_the_study_consistent(
    work_copy: Callable[[str], Path], kind: str, sig: int
) -> None:
    _optimize_faults(work_copy, kind, sig, seed=1, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_faults_at_many_points_of_optimize(
    work_copy: Callable[[str], Path], kind: str, sig: int
) -> None:
    _optimize_faults(work_copy, kind, sig, seed=2, n=8)


# ------------------------------------------------------------------ analyze and report
def _analyze_faults(work_copy: Callable[[str], Path], sig: int, seed: int, n: int) -> None:
    rng = random.Random(seed)
    probe = work_copy("sqlite")
    undisturbed = run_forked(ANALYZE, probe)
    assert undisturbed.code == 0, undisturbed.stderr
    shutil.rmtree(probe)
    tally = Tally(f"{signal.Signals(sig).name} analyze, seed {seed}")
    for at in _points(rng, undisturbed, n):
        work = work_copy("sqlite")
        assert run_forked([*ANALYZE, "--no-train"], work).code == 0  # an earlier report
        before = _files(work / "reports" / STUDY)
        kept = _files(work / "reports" / "kept")
        hit = run_forked(ANALYZE, work, at=at, sig=sig, after=rng.random() < 0.5)
        if sig == signal.SIGKILL:
            assert hit.code == -signal.SIGKILL
        else:
            assert hit.code == 130 and hit.stderr.endswith("satadvisor: interrupted\n"), hit
            assert hit.stdout == ""
        now = work / "reports" / STUDY
        if not now.exists():  # killed between the two renames of the swap (see _io)
            (aside,) = (work / "reports").glob(f".{STUDY}.old-*")
            assert _files(aside) == before, "the previous report is not kept aside"
            tally.aside += 1
        elif _files(now) != before:
            assert_report(now, "analysis")
        assert _files(work / "reports" / "kept") == kept
        tally.add(hit, left=len(leftovers(work)))
        again = run_forked(ANALYZE, work)
        assert again.code == 0, again.stderr
        assert_report(now, "analysis")
        shutil.rmtree(work)
    tally.save()


def test_a_fault_in_analyze_leaves_a_whole_report(work_copy: Callable[[str], Path]) -> None:
    _analyze_faults(work_copy, signal.SIGINT, seed=3, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_faults_at_many_points_of_analyze(work_copy: Callable[[str], Path], sig: int) -> None:
    _analyze_faults(work_copy, sig, seed=4, n=8)


def _report_faults(work_copy: Callable[[str], Path], sig: int, seed: int, n: int) -> None:
    rng = random.Random(seed)
    args = ["report", STUDY, "--storage", URLS["sqlite"]]
    probe = work_copy("sqlite")
    undisturbed = run_forked(args, probe)
    assert undisturbed.code == 0, undisturbed.stderr
    shutil.rmtree(probe)
    tally = Tally(f"{signal.Signals(sig).name} report, seed {seed}")
    for at in _points(rng, undisturbed, n):
        work = work_copy("sqlite")
        before = _files(work / "reports" / STUDY)
        stored = _files(work / "studies")
        hit = run_forked(args, work, at=at, sig=sig, after=rng.random() < 0.5)
        assert hit.code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), hit
        now = work / "reports" / STUDY
        if not now.exists():  # killed between the two renames of the swap (see _io)
            (aside,) = (work / "reports").glob(f".{STUDY}.old-*")
            assert _files(aside) == before, "the previous report is not kept aside"
            tally.aside += 1
        elif _files(now) != before:
            assert_report(now)
        assert _files(work / "studies") == stored, "report changed the study"
        tally.add(hit, left=len(leftovers(work)))
        assert run_forked(args, work).code == 0
        assert_report(now)
        shutil.rmtree(work)
    tally.save()


def test_a_fault_in_report_leaves_a_whole_report(work_copy: Callable[[str], Path]) -> None:
    _report_faults(work_copy, signal.SIGKILL, seed=5, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_faults_at_many_points_of_report(work_copy: Callable[[str], Path], sig: int) -> None:
    _report_faults(work_copy, sig, seed=6, n=6)


# ------------------------------------------------------------------ torn writes
def _torn_journal(work_copy: Callable[[str], Path], seed: int, n: int) -> None:
    """The journal as a crash at a random byte of the continuation's appends left it: every
    entry before complete, the one being written cut."""
    rng = random.Random(seed)
    url = URLS["journal"]
    probe = work_copy("journal")
    start = (probe / "studies" / "s.log").stat().st_size
    assert run_forked(optimize_args(url, FULL), probe).code == 0
    whole = (probe / "studies" / "s.log").read_bytes()
    shutil.rmtree(probe)
    tally = Tally(f"torn journal, seed {seed}")
    for cut in sorted(rng.sample(range(start, len(whole)), n)):
        work = work_copy("journal")
        (work / "studies" / "s.log").write_bytes(whole[:cut])
        copy = work.parent / "copy.log"  # opening the journal repairs it: count on a copy
        copy.write_bytes(whole[:cut])
        with pytest.warns(UserWarning) if not whole[:cut].endswith(b"\n") else _nothing():
            orphan = orphans(f"journal:{copy}")
        copy.unlink()
        for aside in work.parent.glob("copy.log.torn-*"):
            aside.unlink()
        resumed = resume(work, url)
        if whole[:cut].endswith(b"\n"):
            assert "cut short" not in resumed.stderr
        else:  # the repair says so, in one line, and keeps the cut bytes beside the journal
            assert "satadvisor: warning: " in resumed.stderr and "cut short" in resumed.stderr
            (aside,) = (work / "studies").glob("s.log.torn-*")
            assert whole[:cut].endswith(aside.read_bytes())
        assert_consistent(in_work(work, url), FULL)
        assert_report(work / "reports" / STUDY)
        tally.add(resumed, orphan=orphan)
        shutil.rmtree(work)
    tally.save()


def test_a_torn_journal_resumes(work_copy: Callable[[str], Path]) -> None:
    _torn_journal(work_copy, seed=7, n=1)


@pytest.mark.slow
def test_journals_torn_at_many_bytes_resume(work_copy: Callable[[str], Path]) -> None:
    _torn_journal(work_copy, seed=8, n=12)


def _sqlite_killed_anywhere(work_copy: Callable[[str], Path], seed: int, n: int) -> None:
    """SIGKILL from outside at seeded random moments, so some land inside SQLite's commits
    (a torn write: a hot journal for the next writer to roll back)."""
    rng = random.Random(seed)
    url = URLS["sqlite"]
    probe = work_copy("sqlite")
    began = time.monotonic()
    assert run_forked(optimize_args(url, FULL), probe).code == 0
    took = time.monotonic() - began
    shutil.rmtree(probe)
    tally = Tally(f"SIGKILL from outside on sqlite, seed {seed}")
    for _ in range(n):
        work = work_copy("sqlite")
        logs = work.parent / f".{work.name}-{time.monotonic_ns()}"
        out, err, log = (logs.with_suffix(s) for s in (".out", ".err", ".log"))
        delay = rng.uniform(0.2, took)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(work)
                for fd, path in ((1, out), (2, err)):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                import torch

                torch.set_num_threads(1)
                main.main(args=optimize_args(url, FULL), prog_name="satadvisor")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        hit = _wait(pid, out, err, log, kill_at=time.monotonic() + delay)
        hot = (work / "studies" / "s.db-journal").exists()
        resume(work, url)
        assert not (work / "studies" / "s.db-journal").exists()
        assert_consistent(in_work(work, url), FULL)
        assert_report(work / "reports" / STUDY)
        tally.add(hit, orphan=int(hot))  # (for this test: hot journals left, not orphans)
        shutil.rmtree(work)
    tally.save()


@pytest.mark.slow
def test_sqlite_killed_at_many_moments_resumes(work_copy: Callable[[str], Path]) -> None:
    _sqlite_killed_anywhere(work_copy, seed=10, n=10)


def test_a_writer_killed_mid_transaction_leaves_a_hot_journal_that_is_rolled_back(
    work_copy: Callable[[str], Path],
) -> None:
    """The torn write itself, made on purpose: a writer that changed pages of the study's
    database (spilled to the file before its commit) dies; the next run rolls them back."""
    work = work_copy("sqlite")
    db = work / "studies" / "s.db"
    before = _trials(in_work(work, URLS["sqlite"]))
    pid = os.fork()
    if pid == 0:
        try:
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("PRAGMA cache_size=1")  # spill changed pages to the file early
            conn.execute("BEGIN")
            conn.execute("UPDATE trial_user_attributes SET value_json = ?", ("x" * 20000,))
            conn.execute("DELETE FROM trials")
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (work / "studies" / "s.db-journal").stat().st_size > 0, "no torn write made"
    resumed = run_forked(optimize_args(URLS["sqlite"], 3), work)
    assert resumed.code == 0, resumed.stderr
    trials = _trials(in_work(work, URLS["sqlite"]))
    assert [t.params for t in trials[: len(before)]] == [t.params for t in before]
    assert_consistent(in_work(work, URLS["sqlite"]), 3)


# ------------------------------------------------------------------ a full disk
def _can_mount() -> bool:
    return (
        sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("mount") is not None
    )


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _full_disk(template: Path, tmp_path: Path, seed: int, frees: list[int], kind: str) -> None:
    rng = random.Random(seed)
    tally = Tally(f"full disk on {kind}, seed {seed}")
    LOGS.append(tmp_path)
    try:
        _fill_and_resume(template, tmp_path, rng, frees, kind, tally)
    finally:
        LOGS.pop()
    tally.save()


def _fill_and_resume(
    template: Path, tmp_path: Path, rng: random.Random, frees: list[int], kind: str, tally: Tally
) -> None:
    url = URLS[kind]
    for i, free in enumerate(frees):
        with small_disk(tmp_path / f"disk{i}", "24m") as disk:
            work = disk / "work"
            shutil.copytree(template / kind, work, symlinks=True)
            kept = _files(work / "reports" / "kept")
            before = _files(work / "reports" / STUDY)
            stat = os.statvfs(disk)
            filler = disk / "filler"
            with open(filler, "wb") as fh:  # leave about `free` bytes (jittered) free
                fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free - rng.randrange(4096)))
            hit = run_forked(optimize_args(url, FULL), work)
            assert_one_line_or_success(hit)
            now = work / "reports" / STUDY
            assert now.exists()
            if _files(now) != before:
                assert_report(now)
            assert _files(work / "reports" / "kept") == kept
            tally.add(hit, left=len(leftovers(work)))
            filler.unlink()
            if hit.code == 2 and "the study is saved" in hit.stderr:
                # the search and validation ran; only the report failed: the message's command
                assert f"run `satadvisor report {STUDY} --storage {url}`" in hit.stderr
                resumed = run_forked(["report", STUDY, "--storage", url], work)
            else:
                resumed = resume(work, url)
            assert resumed.code == 0, (free, resumed.stderr)
            assert_consistent(in_work(work, url), FULL)
            assert_report(now)
            assert _files(work / "reports" / "kept") == kept


@pytest.mark.skipif(not _can_mount(), reason="mounting a small tmpfs needs root on Linux")
def test_a_full_disk_ends_in_one_line_and_resumes(template: Path, tmp_path: Path) -> None:
    _full_disk(template, tmp_path, seed=11, frees=[64 * 1024], kind="sqlite")


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="mounting a small tmpfs needs root on Linux")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_disks_full_at_many_levels(template: Path, tmp_path: Path, kind: str) -> None:
    frees = [0, 8 * 1024, 256 * 1024, 1 << 20, 3 << 20, 5 << 20, 9 << 20]
    _full_disk(template, tmp_path, seed=12, frees=frees, kind=kind)


# ------------------------------------------------------------------ fresh storages at once
def _fresh_postgres() -> str:
    base = os.environ.get("SATADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("set SATADVISOR_TEST_POSTGRES_URL (e.g. .ci/run starts a server) to run")
    import sqlalchemy

    name = f"faults_{os.getpid()}_{time.monotonic_ns()}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"


def _first_use_at_once(tmp_path: Path, kind: str, workers: int) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.py").write_text(TINY_MODEL_SOURCE)
    url = {"sqlite": URLS["sqlite"], "journal": URLS["journal"]}.get(kind) or _fresh_postgres()
    args = ["optimize", "tiny.py", "--budget", "4", *COMMON, "--validate-top", "0"]
    args += ["--storage", url]
    start = time.time() + 0.5
    children = [start_forked(args, work, start=start) for _ in range(workers)]
    outcomes = [_wait(*child) for child in children]
    tally = Tally(f"{workers} workers at once on a fresh {kind} storage")
    for outcome in outcomes:
        assert outcome.code == 0, outcome.stderr
        tally.add(outcome)
    assert_consistent(in_work(work, url), 4)
    assert_report(work / "reports" / STUDY)
    assert leftovers(work) == []
    tally.save()


def test_workers_starting_at_once_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    _first_use_at_once(tmp_path, "sqlite", workers=3)


@pytest.mark.slow
def test_workers_starting_at_once_on_a_fresh_journal_file(tmp_path: Path) -> None:
    _first_use_at_once(tmp_path, "journal", workers=3)


@pytest.mark.slow
def test_workers_starting_at_once_on_a_fresh_postgres_database(tmp_path: Path) -> None:
    _first_use_at_once(tmp_path, "postgresql", workers=3)


def test_storage_table_creation_races_are_opened_again(tmp_path: Path) -> None:
    """Without the CLI around it: six processes create a fresh SQLite file's tables at once.
    Before: all but one failed with "table studies already exists; move the file aside" —
    harmful advice for a file another worker is creating right now."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    start = time.time() + 0.3
    pids = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                while time.time() < start:
                    pass
                optuna.create_study(
                    study_name="x", storage=open_storage(url, heartbeat=True), load_if_exists=True
                )
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids] == [0] * 6
    with sqlite3.connect(tmp_path / "fresh.db") as conn:  # one schema stamp, one study
        for table in ("alembic_version", "version_info", "studies"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (1,), table


def test_a_report_another_writer_swaps_in_meanwhile_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers of one study finish together and write the same report folder. Before: the
    loser's rename met the winner's folder and failed ("Directory not empty", exit 2)."""
    from satadvisor import _io

    final = tmp_path / "reports" / STUDY
    real = os.rename
    raced: list[bool] = []

    def rename(src: Any, dst: Any) -> None:
        if Path(dst) == final and not raced:  # another writer's report lands just before ours
            raced.append(True)
            with _io.staged_dir(final) as other:
                (other / "index.html").write_text("theirs")
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with _io.staged_dir(final) as stage:
        (stage / "index.html").write_text("ours")
    assert raced and (final / "index.html").read_text() == "ours"
    assert sorted(p.name for p in final.parent.iterdir()) == [STUDY]  # nothing left aside
