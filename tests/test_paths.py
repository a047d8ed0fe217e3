"""Paths: nothing is written outside --out / studies/, nothing satadvisor did not write is deleted.

Each case runs the command line in an empty working directory that already holds a report the
user kept (``reports/kept``) and a folder of their own, and compares every file (path and bytes)
of that directory and of its parent before and after.

With ``SATADVISOR_RECORD=FILE`` set, every observed outcome is appended to FILE as JSON lines
(docs/reliability.md is made from that record).
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from _record import record
from _tiny import TINY_MODEL_SOURCE
from click.testing import CliRunner, Result

from satadvisor._io import MARKER, staged_dir
from satadvisor.cli import main


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``: path -> bytes (files), 'dir' or 'link -> target'."""
    seen: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            seen[key] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            seen[key] = "dir"
        else:
            seen[key] = path.read_bytes()
    return seen


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/work`` as the working directory: tiny.py, a kept report, a user folder, and an
    SQLite storage with studies whose names are paths."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "tiny.py").write_text(TINY_MODEL_SOURCE)
    with staged_dir(work / "reports" / "kept") as stage:
        (stage / "index.html").write_text("the report the user kept")
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("the user's own file")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    (work / "studies").mkdir()
    url = f"sqlite:///{work / 'studies' / 'paths.db'}"
    for name in ("../outside", str(tmp_path / "abs"), "a/b", ".", "..", "", MARKER, "ok"):
        optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])
    return work


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def _expect_refused(result: Result, message: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert result.stdout == ""
    assert result.stderr == f"satadvisor: error: {message}\n"


# ------------------------------------------------------------------ report STUDY
STORAGE = ["--storage", "sqlite:///studies/paths.db"]
NOT_PLAIN = (
    "is not a plain folder name, so it cannot name the report folder; pass --name with one, "
    "e.g. --name my-study"
)


@pytest.mark.parametrize("study", ["../outside", "ABS", "a/b", ".", "..", ""])
def test_report_of_a_study_named_like_a_path_writes_nothing(
    work: Path, study: str, request: pytest.FixtureRequest
) -> None:
    study = str(work.parent / "abs") if study == "ABS" else study
    before, around = _snapshot(work), _snapshot(work.parent)
    result = invoke(["report", study, *STORAGE])
    record(
        "paths",
        f"report {request.node.callspec.id}",
        ["report", study, *STORAGE],
        2,
        result.stderr.strip(),
    )
    _expect_refused(result, f"study {study!r} {NOT_PLAIN}")
    assert _snapshot(work) == before
    assert _snapshot(work.parent) == around  # nothing next to the working directory either


@pytest.mark.parametrize("study", ["../outside", "a/b", ".", "..", ""])
def test_report_without_storage_never_reads_outside_studies(work: Path, study: str) -> None:
    before = _snapshot(work.parent)
    result = invoke(["report", study])
    _expect_refused(
        result,
        f"no study {study!r} under studies/: only a plain name (no '/', not '', '.' or '..') has "
        "a default storage there; pass the --storage it used (and --name for its folder)",
    )
    assert _snapshot(work.parent) == before


def test_report_of_a_path_named_study_goes_where_name_says(work: Path) -> None:
    before = _snapshot(work.parent)
    result = invoke(["report", "../outside", *STORAGE, "--name", "outside"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert result.stdout.rstrip().endswith("report: reports/outside/index.html")
    after = _snapshot(work.parent)
    files = (MARKER, "index.html", "plotly.min.js", "study.json", "trials.csv")
    folder = "work/reports/outside"
    assert set(after) - set(before) == {folder, *(f"{folder}/{name}" for name in files)}
    assert {k: v for k, v in after.items() if k in before} == before


def test_report_named_like_the_marker_is_refused(work: Path) -> None:
    before = _snapshot(work)
    result = invoke(["report", MARKER, *STORAGE])
    _expect_refused(result, f"study {MARKER!r} {NOT_PLAIN}")
    named = invoke(["report", "ok", *STORAGE, "--name", MARKER])
    assert named.exit_code == 2
    assert named.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--name': {MARKER!r} is not a plain folder name; use letters, "
        "digits, '-', '_' or '.', e.g. vgg16-run2"
    )
    assert _snapshot(work) == before


def test_in_memory_storage_for_report_is_refused(work: Path) -> None:
    before = _snapshot(work)
    result = invoke(["report", "ok", "--storage", "sqlite://"])
    _expect_refused(
        result,
        "--storage sqlite://: an in-memory database is empty when it is opened, so it holds no "
        "study; pass the --storage optimize used",
    )
    assert _snapshot(work) == before


# ------------------------------------------------------------------ model files named like paths
@pytest.mark.parametrize(
    ("file", "folder"), [("..py", "."), ("...py", ".."), (f"{MARKER}.py", MARKER)]
)
def test_model_file_whose_name_is_no_folder_name_writes_nothing(
    work: Path, file: str, folder: str, request: pytest.FixtureRequest
) -> None:
    (work / file).write_text(TINY_MODEL_SOURCE)
    before = _snapshot(work)
    result = invoke(["analyze", file, "--no-train"])
    record(
        "paths",
        f"model file {file}",
        ["analyze", file, "--no-train"],
        result.exit_code,
        result.stderr.strip(),
    )
    _expect_refused(
        result,
        f"{file}: the file's name gives the report folder {folder!r}, which is not a plain "
        "folder name; pass --name with one, e.g. --name mymodel",
    )
    assert _snapshot(work) == before
    named = invoke(["analyze", file, "--no-train", "--name", "dots"])
    assert named.exit_code == 0, named.stderr
    assert (work / "reports" / "dots" / "index.html").is_file()
    assert _snapshot(work / "reports" / "kept") == before_kept(before)


def before_kept(snapshot: dict[str, bytes | str]) -> dict[str, bytes | str]:
    prefix = "reports/kept/"
    return {k.removeprefix(prefix): v for k, v in snapshot.items() if k.startswith(prefix)}


# ------------------------------------------------------------------ --out, --name and the marker
def test_name_like_the_marker_is_refused(work: Path) -> None:
    before = _snapshot(work)
    result = invoke(["analyze", "tiny.py", "--no-train", "--name", MARKER])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--name': {MARKER!r} is not a plain folder name; use letters, "
        "digits, '-', '_' or '.', e.g. vgg16-run2"
    )
    assert _snapshot(work) == before


@pytest.mark.parametrize("out", ["reports/kept", "reports/kept/deeper", "mine/../reports/kept"])
def test_out_inside_a_report_folder_is_refused(
    work: Path, out: str, request: pytest.FixtureRequest
) -> None:
    before = _snapshot(work)
    result = invoke(["analyze", "tiny.py", "--no-train", "--out", out])
    record(
        "paths",
        f"--out {out}",
        ["analyze", "tiny.py", "--out", out],
        result.exit_code,
        result.stderr.strip(),
    )
    _expect_refused(
        result,
        f"cannot write report to {work / out / 'tiny'}: {work / 'reports' / 'kept'} is a report "
        "folder, which its next run replaces; pass --out with a directory outside it",
    )
    assert _snapshot(work) == before


def test_out_reached_through_a_link_into_a_report_folder_is_refused(work: Path) -> None:
    (work / "shortcut").symlink_to(work / "reports" / "kept", target_is_directory=True)
    before = _snapshot(work)
    result = invoke(["analyze", "tiny.py", "--no-train", "--out", "shortcut"])
    assert result.exit_code == 2
    assert f"{work / 'reports' / 'kept'} is a report folder" in result.stderr
    assert _snapshot(work) == before


def test_a_file_the_user_put_into_a_report_folder_keeps_it(work: Path) -> None:
    first = invoke(["analyze", "tiny.py", "--no-train"])
    assert first.exit_code == 0, first.stderr
    (work / "reports" / "tiny" / "my-notes.txt").write_text("notes")
    before = _snapshot(work)
    again = invoke(["analyze", "tiny.py", "--no-train"])
    record(
        "paths",
        "user file in a report folder",
        ["analyze", "tiny.py"],
        again.exit_code,
        again.stderr.strip(),
    )
    _expect_refused(
        again,
        f"cannot write report to {work / 'reports' / 'tiny'}: it holds files satadvisor did not "
        "write ('my-notes.txt'); pass --out with a new or empty directory, or move them out",
    )
    assert _snapshot(work) == before
    (work / "reports" / "tiny" / "my-notes.txt").unlink()  # moved out: replaced as before
    third = invoke(["analyze", "tiny.py", "--no-train"])
    assert third.exit_code == 0, third.stderr


@pytest.mark.parametrize("kind", ["folder", "link", "forged text", "empty file"])
def test_a_marker_satadvisor_did_not_write_makes_nothing_replaceable(work: Path, kind: str) -> None:
    """A user folder with something named like the marker is still the user's."""
    folder = work / "mine"
    marker = folder / MARKER
    if kind == "folder":
        marker.mkdir()
    elif kind == "link":
        marker.symlink_to(work / "reports" / "kept" / MARKER)
    elif kind == "forged text":
        marker.write_text("written by satadvisor, honest\n")
    else:
        marker.write_text("")
    before = _snapshot(work)
    result = invoke(["analyze", "tiny.py", "--no-train", "--out", ".", "--name", "mine"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"satadvisor: error: cannot write report to {folder}: it holds files satadvisor did not "
        "write ("
    )
    # ... nor a folder below it a report folder
    below = invoke(["analyze", "tiny.py", "--no-train", "--out", "mine"])
    assert below.exit_code == 0, below.stderr
    assert (folder / "tiny" / "index.html").is_file()
    after = _snapshot(work)
    assert {k: v for k, v in after.items() if not k.startswith("mine/tiny")} == before
