"""Issue 13's remaining families: each case ends in one error line (exit 2) or in success —
no traceback, no hang, no other line before the error, no secret in any output.

With ``SATADVISOR_RECORD=FILE`` the observed outcomes are appended to FILE (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct
import textwrap
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
from _record import record
from _tiny import TINY_MODEL_SOURCE
from click.testing import CliRunner, Result
from PIL import Image

from satadvisor.cli import main
from satadvisor.search.storage import open_storage

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(TINY_MODEL_SOURCE)
    return tmp_path


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def one_line(result: Result, case: str, args: list[str]) -> str:
    """The single error line of a failed command (exit 2, nothing else on stderr)."""
    record("hostile", case, args, result.exit_code, result.stderr.strip())
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("satadvisor: error: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------ diverged activations
# conv weights scaled to 1e19: activations of ~1e19 whose float32 scatter overflows, while
# BatchNorm and tanh keep the loss finite
HUGE = textwrap.dedent(
    """
    import torch, torch.nn as nn
    DATASET = "digits"
    RESOLUTION = 8

    class Net(nn.Module):
        def __init__(self, num_classes, in_channels, scale):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.mul_(scale)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.head(torch.tanh(self.bn(self.conv(x))).mean((2, 3)))

    def build_model(scale=1e19, *, num_classes, in_channels):
        return Net(num_classes, in_channels, scale)
    """
)


def test_activations_the_eigen_solver_fails_on_are_a_diverged_run(work: Path) -> None:
    """Before: "training failed with _LinAlgError …; fix the model's forward pass"."""
    (work / "huge.py").write_text(HUGE)
    args = ["analyze", "huge.py", "--epochs", "1", "--subset", "200", "--device", "cpu", "-q"]
    result = invoke(args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    head = result.stdout.splitlines()[0]
    record("hostile", "eigen-solver fails on diverged activations", args, 0, head)
    assert "val accuracy — after 0 epochs (diverged: layer activations diverged in epoch 1" in head
    assert "forward pass" not in result.stdout + result.stderr
    payload = json.loads((work / "reports" / "huge" / "analysis.json").read_text())
    assert payload["training"]["status"] == "diverged"
    # before: the verdict went on to "Keep the architecture" as if the run had said so
    assert payload["lead"][0].startswith("The proxy diverged (layer activations diverged")
    assert payload["verdict"].startswith("The proxy diverged")
    assert payload["advice_basis"] in ("receptive_field", "none")


NAN = textwrap.dedent(
    """
    import torch, torch.nn as nn
    DATASET = "digits"
    RESOLUTION = 8

    class Net(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            out = self.head(torch.relu(self.conv(x)).mean((2, 3)))
            return out * float("nan") if self.training else out

    def build_model(width=4, *, num_classes, in_channels):
        return Net(num_classes, in_channels)
    """
)


def test_nan_outputs_reach_the_summary_as_a_dash(work: Path) -> None:
    """Before: a TypeError traceback from the terminal summary (no accuracy to format)."""
    (work / "nan.py").write_text(NAN)
    args = ["analyze", "nan.py", "--epochs", "1", "--subset", "200", "--device", "cpu", "-q"]
    result = invoke(args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    head = result.stdout.splitlines()[0]
    record("hostile", "NaN model outputs at the summary", args, 0, head)
    assert "val accuracy — after 0 epochs (diverged: training loss became nan in epoch 1)" in head
    text = (work / "reports" / "nan" / "analysis.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    json.loads(text)


# ------------------------------------------------------------------ image folders
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height pixels (and holds almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("side", "where"),
    [(100_000, "first"), (100_000, "later"), (12_000, "later")],
    ids=["first", "later", "1x"],
)
def test_image_headers_that_declare_gigantic_sizes_are_one_line(
    work: Path, side: int, where: str
) -> None:
    """Over twice PIL's limit: DecompressionBombError (before: a traceback); over the limit:
    PIL's two-line warning, then a decode of ~430 MB (before: the warning above the error)."""
    folder = _folder(work / "imgs")
    # the first image listed (read for the dataset's size), or every image of the second class
    bombs = [folder / "cat" / "0.png"] if where == "first" else sorted(folder.glob("dog/*"))
    for bomb in bombs:
        bomb.write_bytes(_png_header(side, side))
    args = ["analyze", "tiny.py", "--epochs", "1", "--device", "cpu"]
    args += ["--dataset", "imagefolder:imgs"]
    line = one_line(invoke(args), f"image header of {side}x{side} px ({where})", args)
    named = "cat/0" if where == "first" else r"dog/\d"
    pattern = rf"cannot read an image \(imgs/{named}\.png: Image size \({side * side} pixels\)"
    assert re.search(pattern, line), line
    assert line.endswith("; remove it, or replace it with a smaller copy")
    assert not (work / "reports").exists()


def test_a_link_back_up_an_image_folder_is_refused(work: Path) -> None:
    """Before: torchvision followed it ~40 levels deep (until ELOOP) and listed the images
    again at every level, under the wrong class; with two such links the listing grows
    exponentially."""
    folder = _folder(work / "imgs")
    (folder / "cat" / "up").symlink_to("..")
    args = ["analyze", "tiny.py", "--no-train", "--dataset", "imagefolder:imgs"]
    line = one_line(invoke(args), "image folder with a link back up the tree", args)
    assert line == (
        f"satadvisor: error: imagefolder: imgs/cat/up links back into the image folder (to "
        f"{folder.resolve()}), so its images would be listed again, under another class; "
        "remove the link"
    )


def test_links_that_loop_or_dangle_in_an_image_folder_are_skipped(work: Path) -> None:
    folder = _folder(work / "imgs")
    (folder / "cat" / "loop").symlink_to("loop")  # ELOOP
    (folder / "cat" / "gone").symlink_to("nowhere")
    outside = _folder(work / "elsewhere")  # a link to a folder outside: fine, read once
    (folder / "dog" / "more").symlink_to(outside / "dog")
    result = invoke(["analyze", "tiny.py", "--no-train", "--dataset", "imagefolder:imgs"])
    assert result.exit_code == 0, (result.stderr, result.exception)


# ------------------------------------------------------------------ unbounded work
def test_a_huge_search_space_list_is_checked_in_linear_time(work: Path) -> None:
    """200,000 values: before, the duplicate check compared each with all before it (hours,
    three times: the model file is loaded by the CLI, the search and its worker)."""
    from satadvisor import spec as spec_mod

    (work / "big.py").write_text(
        TINY_MODEL_SOURCE.replace(
            'SEARCH_SPACE = {"depth": [1, 2, 3], "width": [4, 8], "resolution": [8, 12]}',
            'SEARCH_SPACE = {"width": list(range(1, 200_001)) + [7]}',
        )
    )
    with pytest.raises(spec_mod.ModelFileError, match=r"SEARCH_SPACE\['width'\] lists 7 twice"):
        spec_mod.load("big.py")  # found at the very end, so every value was checked
    (work / "big.py").write_text((work / "big.py").read_text().replace(" + [7]", ""))
    space = spec_mod.load("big.py").search_space
    assert space is not None and len(space["width"]) == 200_000


def test_values_one_by_one_still_find_unhashable_and_equal_numbers() -> None:
    from satadvisor.spec import ModelFileError
    from satadvisor.spec._contract import search_space as _search_space

    with pytest.raises(ModelFileError, match=r"lists 2\.0 twice"):
        _search_space({"width": [2, 2.0]}, {"width": 4.0}, "m.py")


# ------------------------------------------------------------------ the one-line contract
PRINTING = textwrap.dedent(
    """
    import warnings
    import torch.nn as nn
    print("loading my model file")
    DATASET = "digits"
    RESOLUTION = 8

    def build_model(depth=2, *, num_classes, in_channels):
        print("building", depth)
        warnings.warn("a library's own warning")
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
    """
)


def test_a_model_files_print_does_not_break_json(work: Path) -> None:
    """Before: the file's print() lines came first on stdout, so `--json | jq` failed."""
    (work / "printing.py").write_text(PRINTING)
    result = invoke(["analyze", "printing.py", "--no-train", "--json"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert json.loads(result.stdout)["name"] == "printing"
    assert "loading my model file" in result.stderr and "building 2" in result.stderr


def test_library_warnings_are_one_line_after_success_and_absent_before_an_error(
    work: Path,
) -> None:
    """Before: Python's two-line warning (file:line, then the source line) above the error."""
    (work / "printing.py").write_text(PRINTING.replace('print("loading my model file")', ""))
    ok = invoke(["analyze", "printing.py", "--no-train", "-q"])
    assert ok.exit_code == 0, (ok.stderr, ok.exception)
    warned = [line for line in ok.stderr.splitlines() if "own warning" in line]
    assert warned == [
        f"satadvisor: warning: a library's own warning (UserWarning, {work.name}/printing.py:10)"
    ]
    args = ["analyze", "printing.py", "--no-train", "--set", "depth=x"]
    line = one_line(invoke(args), "library warning, then an error", args)
    assert "expects an int" in line


def test_the_cpu_running_out_of_memory_does_not_blame_the_forward_pass(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge width: the allocator's error, not "fix the model's forward pass"."""
    import satadvisor.train

    def no_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 40795920400 bytes. Error code 12"
        )

    monkeypatch.setattr(satadvisor.train, "run", no_memory)
    monkeypatch.setattr("satadvisor.advisor.run", no_memory)
    args = ["analyze", "tiny.py", "--epochs", "1", "--device", "cpu"]
    line = one_line(invoke(args), "CPU out of memory while training", args)
    assert line == (
        "satadvisor: error: tiny.py: out of memory while training (can't "
        "allocate memory: you tried to allocate 40795920400 bytes. Error code 12); pass a "
        "smaller --batch-size or --resolution, or smaller knob values"
    )


# ------------------------------------------------------------------ secrets
SECRET = "Pw-9f3Zq7Secret"


def _everything(work: Path, outputs: list[Result]) -> dict[str, str]:
    """Every output of the runs: terminal, every file under the working directory (reports,
    JSON, CSV, SQLite databases and journals, as bytes decoded leniently)."""
    seen = {f"terminal {i}": r.stdout + r.stderr for i, r in enumerate(outputs)}
    for path in work.rglob("*"):
        if path.is_file():
            seen[str(path.relative_to(work))] = path.read_bytes().decode("latin-1")
    return seen


def test_an_unreachable_storage_with_a_password_leaks_it_nowhere(work: Path) -> None:
    runs = []
    for url in (
        f"postgresql://user:{SECRET}@127.0.0.1:1/db",
        f"postgresql://127.0.0.1:1/db?user=u&password={SECRET}",
        f"mysql+pymysql://user:{SECRET}@127.0.0.1:1/db",
    ):
        args = ["optimize", "tiny.py", "--budget", "1", "--epochs", "1", "--device", "cpu"]
        args += ["--validate-top", "0", "--storage", url]
        result = invoke(args)
        line = one_line(result, "unreachable storage with a password", [*args[:-1], "<url>"])
        assert "***" in line or "driver" in line, line
        runs.append(result)
        report = invoke(["report", "s", "--storage", url])
        assert report.exit_code == 2 and SECRET not in report.stderr
        runs.append(report)
    for where, text in _everything(work, runs).items():
        assert SECRET not in text, where


@pytest.mark.integration
def test_a_study_on_a_password_storage_leaks_it_nowhere(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run with the password in the URL (PostgreSQL; its test server accepts any
    password): the terminal, every file written, and every text column of the database."""
    base = os.environ.get("SATADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("set SATADVISOR_TEST_POSTGRES_URL (e.g. .ci/run starts a server) to run")
    import sqlalchemy

    name = f"secrets_{os.getpid()}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    scheme, rest = base.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user}:{SECRET}@{host.rsplit('/', 1)[0]}/{name}?password={SECRET}"
    args = ["optimize", "tiny.py", "--budget", "2", "--epochs", "1", "--subset", "120"]
    args += ["--device", "cpu", "--validate-top", "1", "--validate-seeds", "1"]
    args += ["--full-epochs", "1", "--full-subset", "120", "--storage", url]
    args += ["--study-name", "s"]
    monkeypatch.setattr("sys.argv", ["satadvisor", *args])  # the command the study records
    runs = [invoke(args)]
    assert runs[0].exit_code == 0, (runs[0].stderr, runs[0].exception)
    runs.append(invoke(args))  # the refused rerun (budget spent): its message too
    assert runs[1].exit_code == 2
    runs.append(invoke(["report", "s", "--storage", url]))
    assert runs[2].exit_code == 0, runs[2].stderr
    seen = _everything(work, runs)
    assert any(p.endswith("study.json") for p in seen) and any(p.endswith(".csv") for p in seen)
    engine = sqlalchemy.create_engine(base.rsplit("/", 1)[0] + f"/{name}")
    with engine.connect() as conn:  # every text column of every table: the storage attributes
        tables = sqlalchemy.inspect(conn).get_table_names()
        for table in tables:
            for row in conn.exec_driver_sql(f"SELECT * FROM {table}"):
                seen[f"db {table}"] = seen.get(f"db {table}", "") + repr(tuple(row))
    engine.dispose()
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    seen["study attrs"] = repr(study.user_attrs)
    seen["trial attrs"] = repr([(t.user_attrs, t.system_attrs) for t in study.trials])
    assert "trial_user_attributes" in tables and "study_user_attributes" in tables
    for where, text in seen.items():
        assert SECRET not in text, where
    assert "***" in json.loads((work / "reports" / "s" / "study.json").read_text())["storage"]
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def test_sqlite_files_hold_no_secret_of_the_command_line(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a server: a password on the command line (another option's URL) reaches no
    output of a SQLite run, the database file included."""
    args = ["optimize", "tiny.py", "--budget", "1", "--epochs", "1", "--subset", "100"]
    args += ["--device", "cpu", "--validate-top", "0", "--storage", "sqlite:///s.db"]
    args += ["--study-name", "s"]
    argv = ["satadvisor", *args, "--storage", f"postgresql://u:{SECRET}@h/db"]
    monkeypatch.setattr("sys.argv", argv)
    result = invoke(args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    with sqlite3.connect(work / "s.db") as conn:
        assert "satadvisor optimize" in str(
            conn.execute("SELECT * FROM study_user_attributes").fetchall()
        )
    for where, text in _everything(work, [result]).items():
        assert SECRET not in text, where


# ------------------------------------------------------------------ what the harness found
def test_a_trial_whose_worker_died_after_its_final_record_is_reaped(tmp_path: Path) -> None:
    """Killed (or a journal cut) between the final record and Optuna's tell: before, the
    trial stayed RUNNING for ever, and counted."""
    from satadvisor.search.record import KEY, TrialRecord
    from satadvisor.search.worker import DRAW_GRACE, reap_dead

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'r.db'}"))
    trial = study.ask()
    rec = TrialRecord(knobs={"depth": 2}, status="not_learned", wall_time=5.0)
    trial.set_user_attr(KEY, rec.to_dict())
    (frozen,) = study.get_trials()
    assert frozen.datetime_start is not None
    start = frozen.datetime_start.timestamp()
    assert reap_dead(study, now=start + 5.0 + DRAW_GRACE - 1) == []  # its tell may be coming
    assert reap_dead(study, now=start + 5.0 + DRAW_GRACE + 1) == [trial.number]
    (reaped,) = study.get_trials()
    assert reaped.state == optuna.trial.TrialState.PRUNED  # as its record says
    assert TrialRecord.of(reaped).status == "not_learned" and TrialRecord.of(reaped).counts


def test_a_completed_trial_whose_worker_died_before_the_tell_keeps_its_values(
    tmp_path: Path,
) -> None:
    """Its final record holds the measurement: told COMPLETE with it, it stays on the front
    (told FAIL, a finished measurement would be lost and rerun)."""
    from satadvisor.search.record import KEY, TrialRecord
    from satadvisor.search.worker import DRAW_GRACE, reap_dead

    study = optuna.create_study(
        storage=open_storage(f"sqlite:///{tmp_path / 'c.db'}"),
        directions=["maximize", "minimize"],
    )
    study.set_user_attr("objectives", ["accuracy", "macs"])
    trial = study.ask()
    rec = TrialRecord(knobs={"depth": 2}, status="completed", wall_time=5.0)
    rec = rec.with_(accuracy=0.81, macs=123_456)
    trial.set_user_attr(KEY, rec.to_dict())
    (frozen,) = study.get_trials()
    assert frozen.datetime_start is not None
    now = frozen.datetime_start.timestamp() + 5.0 + DRAW_GRACE + 1
    assert reap_dead(study, now=now) == [trial.number]
    (told,) = study.get_trials()
    assert told.state == optuna.trial.TrialState.COMPLETE
    assert told.values == [0.81, 123_456.0]
    assert [t.number for t in study.best_trials] == [trial.number]


def test_a_storage_error_behind_another_exception_is_one_storage_error() -> None:
    """Optuna raises "AssertionError: Should not reach." after a journal append failed."""
    import errno

    from satadvisor.errors import StorageError
    from satadvisor.search.worker import storage_writes

    full = r"stopped taking writes \(OSError: \[Errno 28\] No space left on device\)"
    with pytest.raises(StorageError, match=full), storage_writes():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise AssertionError("Should not reach.")  # noqa: B904  (as Optuna does: context kept)
    with pytest.raises(AssertionError), storage_writes():  # other errors pass unchanged
        raise AssertionError("a bug")
