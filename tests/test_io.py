"""Crash-safe output: atomic files and staged directories."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from satadvisor import _io
from satadvisor._io import MARKER, atomic_write_text, staged_dir
from satadvisor.errors import OutputError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory nobody can create entries in: read-only for users, under a file for root."""
    if IS_ROOT:  # root ignores permission bits; a path below a regular file fails for everyone
        blocker = tmp_path / "blocker"
        blocker.write_text("x")
        return blocker / "sub"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------
# atomic_write_text


def test_atomic_write_creates_and_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second ünïcode")
    assert target.read_text("utf-8") == "second ünïcode"
    assert _names(tmp_path) == ["a.json"]


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path: Path) -> None:
    reference = tmp_path / "plain"
    reference.write_text("x")  # open() applies the process umask to 0o666
    atomic_write_text(tmp_path / "atomic", "x")
    assert _mode(tmp_path / "atomic") == _mode(reference)


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_crash_during_atomic_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_in: str
) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, fail_in, boom)
    with pytest.raises(OutputError, match=r"No space left on device; choose a writable location"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["report.json"]  # the temp file was removed


def test_atomic_write_to_unwritable_place_is_one_line_output_error(tmp_path: Path) -> None:
    target = _unwritable_dir(tmp_path) / "a.txt"
    with pytest.raises(OutputError) as info:
        atomic_write_text(target, "x")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"cannot write {target}: ")


# ---------------------------------------------------------------------------------------------
# staged_dir


def test_staged_dir_creates_missing_parents_and_marks_the_dir(tmp_path: Path) -> None:
    final = tmp_path / "reports" / "run1"
    with staged_dir(final) as stage:
        assert stage.parent == final.parent and stage != final
        assert not final.exists()  # nothing visible until the block succeeds
        (stage / "index.html").write_text("<p>1</p>")
    assert _names(final) == [MARKER, "index.html"]
    assert _names(final.parent) == ["run1"]
    reference = tmp_path / "plain-dir"
    reference.mkdir()  # mkdir applies the umask to 0o777; the report should match
    assert _mode(final) == _mode(reference)


def test_staged_dir_replaces_an_earlier_report_completely(tmp_path: Path) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("old")
        (stage / "stale.csv").write_text("old")
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("new")
    assert (final / "index.html").read_text() == "new"
    assert _names(final) == [MARKER, "index.html"]
    assert _names(tmp_path) == ["r"]  # the old copy and the stage are gone


def test_staged_dir_accepts_an_existing_empty_dir(tmp_path: Path) -> None:
    final = tmp_path / "empty"
    final.mkdir()
    with staged_dir(final) as stage:
        (stage / "a").write_text("a")
    assert (final / "a").read_text() == "a"


def test_exception_in_block_keeps_previous_report_and_removes_stage(tmp_path: Path) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("previous")
    with pytest.raises(RuntimeError, match="render failed"), staged_dir(final) as stage:
        (stage / "index.html").write_text("half")
        raise RuntimeError("render failed")
    assert (final / "index.html").read_text() == "previous"
    assert _names(tmp_path) == ["r"]


def test_oserror_in_block_becomes_output_error(tmp_path: Path) -> None:
    final = tmp_path / "r"
    expected = r"^cannot write report to .*: Disk quota exceeded; pass"
    with pytest.raises(OutputError, match=expected), staged_dir(final):
        raise OSError(122, "Disk quota exceeded")
    assert _names(tmp_path) == []


def test_process_killed_mid_write_leaves_previous_report_intact(tmp_path: Path) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("previous")
    # A hard exit (no finally blocks run), as on SIGKILL or power loss, in the middle of a write.
    code = (
        "import os, sys\n"
        "from satadvisor._io import staged_dir\n"
        "with staged_dir(sys.argv[1]) as stage:\n"
        "    (stage / 'index.html').write_text('half')\n"
        "    os._exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(final)], check=False)
    assert result.returncode == 3
    assert (final / "index.html").read_text() == "previous"
    leftovers = [name for name in _names(tmp_path) if name != "r"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".r.tmp-")  # hidden, harmless


def test_failed_swap_puts_the_previous_report_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("previous")
    real_rename = os.rename
    calls: list[str] = []

    def flaky_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(Path(src).name)
        if len(calls) == 2:  # 1: old report aside, 2: new one into place ← fails
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(_io.os, "rename", flaky_rename)
    with pytest.raises(OutputError, match="Input/output error"), staged_dir(final) as stage:
        (stage / "index.html").write_text("new")
    assert calls[0] == "r" and calls[2].startswith(".r.old-")
    assert (final / "index.html").read_text() == "previous"
    assert _names(tmp_path) == ["r"]


def test_foreign_directory_is_never_replaced(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").write_text("precious")
    expected = r"holds files satadvisor did not write \('model.py'\); pass --out"
    with pytest.raises(OutputError, match=expected), staged_dir(project):
        pytest.fail("the block must not run")
    assert _names(project) == ["model.py"]
    assert _names(tmp_path) == ["project"]


def test_regular_file_as_target_is_output_error(tmp_path: Path) -> None:
    target = tmp_path / "report"
    target.write_text("a file")
    with pytest.raises(OutputError, match="exists and is not a directory"), staged_dir(target):
        pytest.fail("the block must not run")
    assert target.read_text() == "a file"


def test_unwritable_target_is_one_line_output_error(tmp_path: Path) -> None:
    final = _unwritable_dir(tmp_path) / "report"
    with pytest.raises(OutputError) as info, staged_dir(final):
        pytest.fail("the block must not run")
    message = str(info.value)
    assert "\n" not in message
    expected_reason = "Not a directory" if IS_ROOT else "Permission denied"
    assert message == (
        f"cannot write report to {final}: {expected_reason}; pass --out with a writable directory"
    )


def test_symlinked_report_dir_is_replaced_behind_the_link(tmp_path: Path) -> None:
    real = tmp_path / "run3"
    with staged_dir(real) as stage:
        (stage / "index.html").write_text("old")
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    with staged_dir(link) as stage:
        (stage / "index.html").write_text("new")
    assert link.is_symlink()
    assert (real / "index.html").read_text() == "new"


def test_marker_lists_what_the_block_wrote(tmp_path: Path) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("x")
        (stage / "data.csv").write_text("y")
    assert (final / MARKER).read_text().splitlines()[-2:] == ["data.csv", "index.html"]


def test_a_file_added_to_a_report_keeps_it_from_being_replaced(tmp_path: Path) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("old")
    (final / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"did not write \('notes.txt'\)"), staged_dir(final):
        pytest.fail("the block must not run")
    assert _names(final) == [MARKER, "index.html", "notes.txt"]
    assert _names(tmp_path) == ["r"]


def test_a_folder_where_the_report_had_a_file_keeps_it(tmp_path: Path) -> None:
    final = tmp_path / "r"
    with staged_dir(final) as stage:
        (stage / "index.html").write_text("old")
    (final / "index.html").unlink()
    (final / "index.html").mkdir()  # the user's folder, named like a report file
    (final / "index.html" / "kept").write_text("mine")
    with pytest.raises(OutputError, match="did not write"), staged_dir(final):
        pytest.fail("the block must not run")
    assert (final / "index.html" / "kept").read_text() == "mine"


def test_marker_of_an_earlier_version_replaces_flat_reports_only(tmp_path: Path) -> None:
    legacy = "This directory was written by satadvisor and is replaced on the next run.\n"
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    for folder in (flat, nested):
        folder.mkdir()
        (folder / MARKER).write_text(legacy)
        (folder / "index.html").write_text("old")
    (nested / "a-report-kept-inside").mkdir()
    with staged_dir(flat) as stage:
        (stage / "index.html").write_text("new")
    assert (flat / "index.html").read_text() == "new"
    with pytest.raises(OutputError, match="a-report-kept-inside"), staged_dir(nested):
        pytest.fail("the block must not run")
    assert _names(nested) == [MARKER, "a-report-kept-inside", "index.html"]


@pytest.mark.parametrize("kind", ["folder", "link", "fifo", "other text"])
def test_only_a_regular_marker_file_with_our_line_counts(tmp_path: Path, kind: str) -> None:
    real = tmp_path / "real"
    with staged_dir(real) as stage:
        (stage / "index.html").write_text("x")
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.txt").write_text("mine")
    marker = user / MARKER
    if kind == "folder":
        marker.mkdir()
    elif kind == "link":
        marker.symlink_to(real / MARKER)
    elif kind == "fifo":
        os.mkfifo(marker)  # opening it would hang: it must not be opened
    else:
        marker.write_text("satadvisor wrote this, trust me\n")
    with pytest.raises(OutputError, match="did not write"), staged_dir(user):
        pytest.fail("the block must not run")
    assert (user / "data.txt").read_text() == "mine"
    with staged_dir(user / "sub") as stage:  # not a report folder: may hold one
        (stage / "index.html").write_text("x")


@pytest.mark.parametrize("name", ["..", MARKER])
def test_report_folder_named_dot_dot_or_like_the_marker_is_refused(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / "kept").mkdir()
    with (
        pytest.raises(OutputError, match="is not a plain folder name"),
        staged_dir(tmp_path / "out" / name),
    ):
        pytest.fail("the block must not run")
    assert _names(tmp_path) == ["kept"]


def test_no_report_inside_another_report_folder(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    with staged_dir(outer) as stage:
        (stage / "index.html").write_text("x")
    inner = outer / "deeper" / "inner"
    expected = f"{outer} is a report folder, which its next run replaces; pass --out"
    with pytest.raises(OutputError, match=expected):
        _io.check_output_dir(inner)
    with pytest.raises(OutputError, match=expected), staged_dir(inner):
        pytest.fail("the block must not run")
    assert _names(outer) == [MARKER, "index.html"]


def _report(folder: Path, text: str) -> None:
    with staged_dir(folder) as stage:
        (stage / "index.html").write_text(text, "utf-8")


def test_a_report_left_aside_by_a_crash_between_the_renames_is_put_back(tmp_path: Path) -> None:
    final = tmp_path / "rep"
    _report(final, "first")
    os.rename(final, tmp_path / ".rep.old-1a2b3c4d")  # killed between the swap's two renames
    _report(final, "second")
    assert (final / "index.html").read_text("utf-8") == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # nothing aside any more


def test_stages_and_set_aside_reports_of_killed_writers_are_removed_once_stale(
    tmp_path: Path,
) -> None:
    final = tmp_path / "rep"
    _report(final, "kept")
    stale_stage = tmp_path / ".rep.tmp-deadbeef"
    stale_stage.mkdir()
    (stale_stage / "index.html").write_text("half", "utf-8")
    fresh_stage = tmp_path / ".rep.tmp-cafebabe"  # another writer, still running
    fresh_stage.mkdir()
    aside = tmp_path / ".rep.old-0badf00d"
    _report(aside, "an older report")
    foreign = tmp_path / ".rep.old-mine"  # no marker: not ours
    foreign.mkdir()
    lookalike = tmp_path / ".rep.tmp-my-own-notes"  # not a name mkdtemp makes
    lookalike.mkdir()
    old = os.stat(final).st_mtime - 3600
    for path in (stale_stage, aside, foreign, lookalike):
        os.utime(path, (old, old))
    _report(final, "new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".rep.old-mine", ".rep.tmp-cafebabe", ".rep.tmp-my-own-notes", "rep"]
    assert (final / "index.html").read_text("utf-8") == "new"
