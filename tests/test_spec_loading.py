"""A model file runs once per process: loading it again reuses it until the file changes, and
``sys.modules`` holds at most one entry per file however often it is loaded."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
from _tiny import TINY_MODEL_SOURCE

from satadvisor import spec
from satadvisor.config import TrainConfig

PREFIX = "_satadvisor_model_"


def counted_source(counter: Path, source: str = TINY_MODEL_SOURCE) -> str:
    """``source`` that appends a line to ``counter`` every time it is executed."""
    return f"with open({str(counter)!r}, 'a') as _f:\n    _f.write('ran\\n')\n" + source


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def model_entries() -> set[str]:
    return {name for name in sys.modules if name.startswith(PREFIX)}


def test_loading_again_reuses_the_module_and_adds_no_module_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "runs.txt"
    path = tmp_path / "tiny.py"
    path.write_text(counted_source(counter))
    before = model_entries()
    first = spec.load(path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.py").symlink_to(path)
    others = [spec.load("tiny.py"), spec.load(str(path)), spec.load(tmp_path / "link.py")]
    assert runs(counter) == 1
    assert all(other.build is first.build for other in others)  # the same function
    assert others[0].source == "tiny.py" and others[2].name == "link"  # named as asked
    assert len(model_entries() - before) == 1
    # every load gets its own knob dict: changing one spec's does not reach the next
    first.knobs["depth"] = 99
    assert spec.load(path).knobs["depth"] == 2


def test_an_edited_file_runs_again_under_the_same_module_entry(tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"
    path = tmp_path / "tiny.py"
    source = counted_source(counter)
    path.write_text(source)
    stat = path.stat()
    before = model_entries()
    assert spec.load(path).knobs["depth"] == 2
    entries = model_entries()
    mine = entries - before
    assert len(mine) == 1
    # the same size, and (on a filesystem with coarse timestamps) possibly the same mtime
    path.write_text(source.replace("depth=2", "depth=3"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert spec.load(path).knobs["depth"] == 3
    assert runs(counter) == 2
    assert model_entries() == entries
    path.write_text(source.replace("depth=2", "depth=1") + "\nraise RuntimeError('broken')\n")
    with pytest.raises(spec.ModelFileError, match="broken"):
        spec.load(path)
    assert runs(counter) == 3
    assert model_entries() == entries - mine  # the half-run module is not left behind


@pytest.mark.integration
def test_optimize_runs_the_model_file_once(tmp_path: Path) -> None:
    # The search loads the file where it starts, in its in-process worker and again for the
    # validation runs: one execution serves them all.
    from satadvisor.search import optimize

    counter = tmp_path / "runs.txt"
    path = tmp_path / "tiny.py"
    path.write_text(counted_source(counter))
    summary = optimize(
        str(path),
        budget=2,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        study_name="once",
        config=TrainConfig(epochs=1, batch_size=64, device="cpu", lr=0.1),
        validate_top=1,
        validate_seeds=1,
        full_epochs=1,
        subset=128,
        full_subset=128,
    )
    assert summary is not None
    assert runs(counter) == 1


def test_functions_of_the_file_pickle_by_reference(tmp_path: Path) -> None:
    # e.g. a build function or a dataclass sent to a worker process: pickle finds it by its
    # module's name, which the one sys.modules entry of the file provides
    path = tmp_path / "tiny.py"
    path.write_text(TINY_MODEL_SOURCE)
    build = spec.load(path).build
    assert build is not None
    assert pickle.loads(pickle.dumps(build)) is build
