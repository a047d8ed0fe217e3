"""Faults and hostile input end to end: failing trials, out of memory, Ctrl-C, crashes while the
report is written, untrusted strings in the page, code execution through data files.

The multi-process cases that tests/test_search.py already covers (two workers share a budget
exactly on SQLite, journal and PostgreSQL; a SIGKILLed worker loses no trial) are not repeated.
With ``SATADVISOR_RECORD=FILE`` set, observed outcomes are appended to FILE (see test_cli.py).
"""

from __future__ import annotations

import ast
import builtins
import errno
import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import weakref
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from _record import record
from _terminal import as_in_a_terminal
from _tiny import TINY_MODEL_SOURCE
from click.testing import CliRunner, Result
from optuna.trial import FrozenTrial, TrialState

import satadvisor
from satadvisor.cli import main
from satadvisor.config import TrainConfig
from satadvisor.search import optimize
from satadvisor.search import record as tr
from satadvisor.search.record import TrialRecord
from satadvisor.search.storage import open_storage
from satadvisor.search.worker import Worker

PACKAGE = Path(satadvisor.__file__).resolve().parent

TINY = TINY_MODEL_SOURCE

# depth=3 raises inside the forward pass during training; width=8 makes the loss diverge.
FAULTY = textwrap.dedent(
    """
    import torch.nn as nn

    SEARCH_SPACE = {"depth": [1, 2, 3], "width": [4, 8]}
    DATASET = "digits"
    RESOLUTION = 8

    class Net(nn.Module):
        def __init__(self, depth, width, num_classes, in_channels):
            super().__init__()
            self.depth, self.width = depth, width
            layers, c = [], in_channels
            for i in range(depth):
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
                if i < 2:
                    layers.append(nn.MaxPool2d(2))
                c = width
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(c, num_classes)

        def forward(self, x):
            if self.depth == 3 and self.training:
                raise RuntimeError("depth 3 is broken on purpose <script>alert(3)</script>")
            out = self.head(self.features(x).mean((2, 3)))
            if self.width == 8 and self.training:
                out = out * float("inf")
            return out

    def build_model(depth=2, width=4, *, num_classes, in_channels):
        return Net(depth, width, num_classes, in_channels)
    """
)
FAST = TrainConfig(epochs=1, batch_size=512, device="cpu")
# TINY, slowed down by half a second per forward pass when TINY_SLOW is set (for a run that
# must still be training when it is interrupted; the same file and settings resume it fast).
SLOW_TINY = TINY + textwrap.dedent(
    """
    import os as _os, time as _time
    _build = build_model

    def build_model(depth=2, width=4, kernel_size=3, *, num_classes, in_channels):
        net = _build(depth, width, kernel_size, num_classes=num_classes, in_channels=in_channels)
        if _os.environ.get("TINY_SLOW"):
            net.register_forward_pre_hook(lambda module, args: _time.sleep(0.5))
        return net
    """
)
# Proxy options under which FAULTY's sound configurations (width 4, depth 1 and 2) learn: a trial
# whose validation accuracy is not significantly above the majority-class rate is not complete.
FAULTY_LEARNS = ["--epochs", "4", "--batch-size", "32", "--lr", "0.2"]


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(TINY)
    (tmp_path / "faulty.py").write_text(FAULTY)
    return tmp_path


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def _measured(trial: FrozenTrial) -> bool:
    """Whether a trial ran to the end and was recorded as a measurement: complete, or a proxy
    that did not learn (told as not-learned: pruned, failed on Optuna < 5), not a failure.

    For the tests where learning is beside the point (out of memory, Ctrl-C): their proxies
    train for a few steps, too few to learn, to keep the tests fast.
    """
    if trial.state == TrialState.COMPLETE:
        return trial.values is not None
    return TrialRecord.of(trial).status == "not_learned" and trial.state == TrialState.PRUNED


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ HTML without network
class _Refs(HTMLParser):
    """Every src/href of the page and the text of inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "data", "action", "srcset", "poster"):
                self.refs.append((tag, name, value or ""))
        self._in = tag if tag in ("script", "style") and not dict(attrs).get("src") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self.inline.append(data)


REMOTE = re.compile(r"^\s*(https?:|ftp:|//)", re.IGNORECASE)


def assert_loads_nothing_remote(index: Path) -> None:
    """index.html fetches nothing from the network: only relative files, data: and anchors.

    Plain ``<a href>`` links would be navigation, not loading, and are allowed.
    """
    parser = _Refs()
    parser.feed(index.read_text(encoding="utf-8"))
    assert parser.refs, "no references parsed: the check would be vacuous"
    for tag, attr, value in parser.refs:
        if tag == "a" and attr == "href":
            continue
        assert not REMOTE.match(value), f"<{tag} {attr}={value!r}> loads from the network"
        if tag == "script" and attr == "src":
            assert (index.parent / value).is_file(), f"{value} is not next to the page"
    for text in parser.inline:
        assert not re.search(r"https?://|@import|\bfetch\(|XMLHttpRequest", text), text[:200]


# ------------------------------------------------------------------ a trial that fails
def test_raising_and_diverging_trials_are_recorded_and_the_study_goes_on(work: Path) -> None:
    args = ["optimize", "faulty.py", "--budget", "6", *FAULTY_LEARNS]
    args += ["--device", "cpu", "--validate-top", "1", "--validate-seeds", "1"]
    args += ["--full-epochs", "1"]
    result = invoke(args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert result.stdout.startswith("study faulty-digits: 6 trials (budget 6)")
    summary = json.loads((work / "reports" / "faulty-digits" / "study.json").read_text())
    rows = [r for r in summary["trials"] if r["counted"]]
    by_config = {(r["knobs"]["depth"], r["knobs"]["width"]): r for r in rows}
    assert len(rows) == 6 and len(by_config) == 6, "every configuration once"
    for (depth, width), row in by_config.items():
        if depth == 3:
            assert row["state"] == "fail"
            assert (
                "training failed with RuntimeError: depth 3 is broken on purpose" in row["reason"]
            )
        elif width == 8:
            assert row["state"] == "fail"
            assert re.fullmatch(r"training loss became (nan|inf) in epoch 1", row["reason"])
        else:
            assert row["state"] == "complete" and row["reason"] is None
            assert 0.0 <= row["accuracy"] <= 1.0
    # the failures did not stop validation: the baseline and one pick ran in full
    assert [r["baseline"] for r in summary["validation"]] == [True, False]
    for key, row in by_config.items():
        if row["reason"]:
            record("fault", f"trial {key}", args, 0, row["reason"])
    index = work / "reports" / "faulty-digits" / "index.html"
    page = index.read_text(encoding="utf-8")
    # the model's own error text reaches the study page, escaped
    assert "depth 3 is broken on purpose &lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert "<script>alert(3)" not in page
    assert_loads_nothing_remote(index)


# ------------------------------------------------------------------ out of GPU memory
def _oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class _Held:
    """Stands for the tensors of a run that ran out of memory."""


@pytest.mark.parametrize("failures", [1, 2])
def test_out_of_memory_retries_once_with_half_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    (tmp_path / "tiny.py").write_text(TINY)
    calls: list[tuple[int, int]] = []
    held: list[weakref.ref[_Held]] = []
    alive_at_retry: list[bool] = []
    real = Worker._analyze

    def flaky(
        self: Worker, trial: optuna.Trial, knobs: dict[str, Any], config: TrainConfig, rec: Any
    ) -> Any:
        calls.append((trial.number, config.batch_size))
        if trial.number == 0:
            if held:  # the retry: the failed attempt's frame (and its tensors) must be gone
                alive_at_retry.append(held[-1]() is not None)
            if len(calls) <= failures:
                tensors = _Held()
                held.append(weakref.ref(tensors))
                raise _oom()
        return real(self, trial, knobs, config, rec)

    monkeypatch.setattr(Worker, "_analyze", flaky)
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    config = TrainConfig(epochs=1, batch_size=256, device="cpu")
    optimize(
        str(tmp_path / "tiny.py"),
        budget=2,
        storage=url,
        study_name="oom",
        strategy="tpe",
        config=config,
        validate_top=0,
        subset=300,
    )
    trials = tr.counted(_study(url, "oom").get_trials())
    assert [c for c in calls if c[0] == 0] == [(0, 256), (0, 128)]
    assert alive_at_retry == [False], "the retry ran while the failed run was still referenced"
    first = trials[0]
    rec = TrialRecord.of(first)
    if failures == 1:  # the retry ran to the end (two steps on 300 images: too few to learn)
        assert _measured(first) and rec.accuracy is not None and 0 <= rec.accuracy <= 1
    else:
        assert first.state == TrialState.FAIL and rec.status == "failed"
        assert rec.reason == (
            "out of GPU memory twice (batch size 256, then 128); pass a smaller --batch-size or "
            "--resolution"
        )
        record("fault", "out of memory twice", ["optimize"], 0, rec.reason)
    # the study went on: the next trial ran at the full batch size
    assert len(trials) == 2 and _measured(trials[1])
    assert (trials[1].number, 256) in calls


def test_out_of_memory_in_analyze_is_one_line(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import satadvisor.advisor

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise _oom()

    monkeypatch.setattr(satadvisor.advisor, "analyze", no_memory)
    result = invoke(["analyze", "tiny.py", "--epochs", "1"])
    record("fault", "out of memory in analyze", ["analyze"], result.exit_code, result.stderr)
    assert result.exit_code == 2
    assert result.stderr == (
        "satadvisor: error: out of device memory; pass a smaller --batch-size or --resolution, "
        "or --device cpu\n"
    )
    assert not (work / "reports").exists()


def test_data_failing_inside_a_trial_stops_the_study_without_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset error is nobody's configuration: the search stops, the trial is re-queued."""
    import satadvisor.data
    from satadvisor.errors import DatasetError

    (tmp_path / "tiny.py").write_text(TINY)

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise DatasetError("digits: the data went away; put it back")

    monkeypatch.setattr(satadvisor.data, "load", gone)
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    with pytest.raises(DatasetError, match="the data went away"):
        optimize(str(tmp_path / "tiny.py"), budget=3, storage=url, study_name="g", config=FAST)
    trials = _study(url, "g").get_trials()
    assert tr.counted(trials) == []
    stopped = [t for t in trials if TrialRecord.of(t).status == "interrupted"]
    assert len(stopped) == 1 and "the data went away" in str(TrialRecord.of(stopped[0]).reason)
    assert TrialRecord.of(stopped[0]).source == "baseline"
    # with the data back, the rerun runs the stopped configuration first, as a retry
    monkeypatch.undo()
    optimize(str(tmp_path / "tiny.py"), budget=1, storage=url, study_name="g", config=FAST)
    (ran,) = tr.counted(_study(url, "g").get_trials())
    assert TrialRecord.of(ran).retry_of == stopped[0].number and ran.params == stopped[0].params


# ------------------------------------------------------------------ Ctrl-C
def _wait_for_running_trial(db: Path, study: str, timeout: float) -> int:
    """The number of a trial that is really training (drawn, checked and started)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            trials = _study(f"sqlite:///{db}", study).get_trials()
        except Exception:  # the database is being created
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING and tr.KEY in t.user_attrs]
        if running:
            return running[0].number
    raise AssertionError("no trial started training in time")


@pytest.mark.integration
def test_sigint_records_the_running_trial_and_the_rerun_resumes(work: Path) -> None:
    (work / "tiny.py").write_text(SLOW_TINY)
    common = ["--device", "cpu", "--batch-size", "512", "--strategy", "tpe"]
    common += ["--validate-top", "0", "--storage", "sqlite:///s.db", "--study-name", "s"]
    first = invoke(["optimize", "tiny.py", "--budget", "1", "--epochs", "1", *common])
    assert first.exit_code == 0, first.stderr
    baseline = _study("sqlite:///s.db", "s").get_trials()[0]
    # 3 steps: the proxy may not learn; what this test checks is the interrupt and the resume
    assert _measured(baseline)
    # a slow run of the same study, interrupted while its second trial trains
    cmd = [sys.executable, "-m", "satadvisor", "optimize", "tiny.py", "--budget", "3"]
    cmd += ["--epochs", "1", *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TINY_SLOW": "1"}
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=as_in_a_terminal,
    )  # fmt: skip
    try:
        number = _wait_for_running_trial(work / "s.db", "s", timeout=120)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.decode()
    record("fault", "SIGINT during optimize", cmd[2:], proc.returncode, stderr.strip())
    assert proc.returncode == 130, stderr
    assert stderr == "satadvisor: interrupted\n"
    trials = _study("sqlite:///s.db", "s").get_trials()
    stopped = trials[number]
    assert stopped.state == TrialState.FAIL
    assert (TrialRecord.of(stopped).status, TrialRecord.of(stopped).reason) == (
        "interrupted",
        "Ctrl-C",
    )
    assert not tr.counts(stopped)
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    assert len(tr.counted(trials)) == 1
    # rerunning resumes to the same total; the completed baseline is kept as it was
    again = invoke(["optimize", "tiny.py", "--budget", "3", "--epochs", "1", *common])
    assert again.exit_code == 0, again.stderr
    trials = _study("sqlite:///s.db", "s").get_trials()
    counted = tr.counted(trials)
    assert len(counted) == 3 and all(_measured(t) for t in counted)
    assert (trials[0].state, trials[0].values) == (baseline.state, baseline.values)
    assert TrialRecord.of(trials[0]) == TrialRecord.of(baseline)
    # the interrupted configuration ran again, first, as a retry of the stopped trial
    (retried,) = [t for t in trials if TrialRecord.of(t).retry_of == number]
    assert _measured(retried) and retried.params == stopped.params
    assert retried.number == number + 1
    keys = [tr.config_key(t.params) for t in counted]
    assert len(set(keys)) == 3


# ------------------------------------------------------------------ crash while writing
@pytest.mark.parametrize("where", ["render", "mid-write"])
def test_crash_while_writing_the_report_keeps_the_previous_one(
    work: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import satadvisor.report._analysis as analysis_page
    import satadvisor.report._page as page

    assert invoke(["analyze", "tiny.py", "--no-train"]).exit_code == 0
    folder = work / "reports" / "tiny"
    before = _files(folder)
    assert "index.html" in before and "plotly.min.js" in before
    if where == "render":

        def crash(*args: Any, **kwargs: Any) -> str:
            raise RuntimeError("renderer crashed")

        monkeypatch.setattr(analysis_page, "render_analysis", crash)
    else:  # index.html is already in the staging folder when plotly.min.js fails

        def disk_full() -> str:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(page, "plotly_js", disk_full)
    result = invoke(["analyze", "tiny.py", "--no-train", "--set", "depth=1"])
    if where == "render":
        assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    else:
        record("fault", "disk full while writing", ["analyze"], result.exit_code, result.stderr)
        assert result.exit_code == 2
        assert result.stderr == (
            f"satadvisor: error: cannot write report to {folder}: No space left on device; "
            "pass --out with a writable directory\n"
        )
    assert _files(folder) == before, "the previous report changed"
    assert sorted(p.name for p in (work / "reports").iterdir()) == ["tiny"], "leftovers"


# ------------------------------------------------------------------ untrusted strings
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_VALUE = "<script>alert('knob')</script>"


def test_hostile_file_name_and_knob_value_are_escaped(work: Path) -> None:
    source = textwrap.dedent(
        """
        import torch.nn as nn

        def build_model(depth=2, act="relu", *, num_classes, in_channels):
            layers, c = [], in_channels
            for _ in range(depth):
                layers += [nn.Conv2d(c, 4, 3, padding=1), nn.ReLU()]
                c = 4
            return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(c, num_classes))
        """
    )
    try:
        (work / f"{HOSTILE_NAME}.py").write_text(source)
    except OSError:  # a file system that refuses the name: the knob value still runs
        pytest.skip("this file system does not allow the name")
    result = invoke(
        ["analyze", f"{HOSTILE_NAME}.py", "--no-train", "--set", f"act={HOSTILE_VALUE}"]
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    index = work / "reports" / HOSTILE_NAME / "index.html"
    html = index.read_text(encoding="utf-8")
    payload = json.loads((index.parent / "analysis.json").read_text())
    assert payload["model"]["name"] == HOSTILE_NAME and payload["knobs"]["act"] == HOSTILE_VALUE
    for raw in (HOSTILE_NAME, HOSTILE_VALUE, "<script>alert", "<img"):
        assert raw not in html, f"{raw!r} reached the page unescaped"
    # they did reach the page, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(" in html
    assert_loads_nothing_remote(index)


# ------------------------------------------------------------------ no unpickling
UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "cPickle.load",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "torch.jit.load",
}
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Places that could unpickle data: imports of pickle & co., their load calls,
    torch.load without weights_only=True, numpy.load with allow_pickle set."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        for module in modules:
            if module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{filename}:{getattr(node, 'lineno', '?')}: import {module}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}: {name}("
        if name in UNSAFE_CALLS:
            found.append(where)
        elif name.endswith("torch.load") and not _is_true(keywords.get("weights_only")):
            found.append(where + " without weights_only=True")
        elif name in ("np.load", "numpy.load") and "allow_pickle" in keywords:
            found.append(where + "allow_pickle=…")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    bad = textwrap.dedent(
        """
        import torch, pickle
        from joblib import load
        a = torch.load("ckpt.pt")
        b = torch.load("ckpt.pt", weights_only=False)
        c = pickle.loads(b"")
        d = numpy.load("x.npy", allow_pickle=True)
        """
    )
    assert len(unsafe_loads(bad)) == 6
    good = 'import torch\na = torch.load("ckpt.pt", weights_only=True)\nb = np.load("x.npy")\n'
    assert unsafe_loads(good) == []


def test_the_package_never_unpickles() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [hit for f in files for hit in unsafe_loads(f.read_text(encoding="utf-8"), str(f))]
    assert found == []


def test_a_tampered_cifar_pickle_is_never_loaded(work: Path) -> None:
    """torchvision unpickles CIFAR batches, but only after their MD5 matched the release."""
    marker = work / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (builtins.open, (str(marker), "w"))

    folder = work / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(Payload()))
    args = ["analyze", "tiny.py", "--dataset", "cifar10", "--data-dir", "cifar", "--epochs", "1"]
    result = invoke(args)
    record("security", "tampered CIFAR pickle", args, result.exit_code, result.stderr)
    assert result.exit_code == 2
    assert result.stderr == (
        "satadvisor: error: cifar10: the files under cifar are not the released ones (7 of 7 files "
        "fail torchvision's MD5 check, e.g. cifar-10-batches-py/data_batch_1); torchvision reads "
        "only the files of cifar-10-python.tar.gz unchanged, so put those there, or pass the "
        "images as --dataset npz:FILE.npz (arrays x (N, C, H, W) uint8 and y, optional x_test, "
        "y_test) or --dataset imagefolder:DIR; online, --download fetches them again\n"
    )
    assert not marker.exists(), "the tampered pickle was executed"


def test_storage_holds_json_not_pickles(work: Path) -> None:
    """The study's user attributes (what a shared storage holds) are plain JSON text."""
    url = "sqlite:///j.db"
    optimize("tiny.py", budget=1, storage=url, study_name="j", config=FAST, validate_top=0)
    with sqlite3.connect("j.db") as conn:
        values = [v for (v,) in conn.execute("SELECT value_json FROM trial_user_attributes")]
        values += [v for (v,) in conn.execute("SELECT value_json FROM study_user_attributes")]
    assert values
    for value in values:
        json.loads(value)


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_reaches_every_worker_process(work: Path) -> None:
    """--workers 2 and Ctrl-C in a terminal (SIGINT to the process group): both running trials
    are recorded as interrupted and queued again, the command exits 130."""
    cmd = [sys.executable, "-m", "satadvisor", "optimize", "tiny.py", "--budget", "4"]
    cmd += ["--epochs", "1", "--device", "cpu", "--batch-size", "512", "--strategy", "tpe"]
    cmd += ["--validate-top", "0", "--workers", "2", "--storage", "sqlite:///w.db"]
    cmd += ["--study-name", "w"]
    (work / "tiny.py").write_text(SLOW_TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TINY_SLOW": "1"}
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        running: list[int] = []
        since = 0.0
        # Two trials training at once, and still so 2 s later: a draw two workers made at the
        # same moment (both the baseline) is told "duplicate" right after its record appears,
        # so a pair seen only once may be one trial and its duplicate.
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                trials = _study("sqlite:///w.db", "w").get_trials()
            except Exception:
                continue
            now = [
                t.number
                for t in trials
                if t.state == TrialState.RUNNING
                and tr.KEY in t.user_attrs
                and TrialRecord.of(t).status == "running"
            ]
            if len(now) < 2 or now != running:
                running, since = now, time.time()
            elif time.time() - since >= 2.0:
                break
        assert len(running) == 2, "the two workers never trained at the same time"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    record("fault", "Ctrl-C with --workers 2", cmd[2:], proc.returncode, err.decode().strip())
    assert proc.returncode == 130, err.decode()
    trials = _study("sqlite:///w.db", "w").get_trials()
    for number in running:
        assert TrialRecord.of(trials[number]).status == "interrupted"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert tr.counted(trials) == []
