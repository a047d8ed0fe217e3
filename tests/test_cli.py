"""The command line under bad input: one line naming the problem and the fix, exit 2, nothing written.

Every case runs in an empty working directory with the default ``--out reports`` and
``studies/`` storage, so "nothing written" is checked by listing that directory before and
after. Click's own usage errors (wrong type, out of range, missing option) also exit 2; for
those the message must name the option. The happy paths check exit 0, the report, ``--json``
and the resume refusal of ``optimize``.

With ``SATADVISOR_RECORD=FILE`` set, every observed outcome is appended to FILE as JSON lines
(docs/reliability.md is made from that record).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from _record import record
from _terminal import as_in_a_terminal
from _tiny import TINY_MODEL_SOURCE
from click.testing import CliRunner, Result

from satadvisor.cli import main

TINY = TINY_MODEL_SOURCE
HEAD = "import torch\nimport torch.nn as nn\n"
BUILD = "def build_model(depth: int = 2, *, num_classes, in_channels):\n"
BODY = "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"

# name -> source of every model file the cases use (written into the working directory)
MODEL_FILES: dict[str, str | bytes] = {
    "tiny.py": TINY,
    "kernel7.py": HEAD
    + "def build_model(width: int = 4, *, num_classes, in_channels):\n"
    + "    return nn.Sequential(nn.Conv2d(in_channels, width, 7), nn.AdaptiveAvgPool2d(1),\n"
    + "                         nn.Flatten(), nn.Linear(width, num_classes))\n",
    "syntax.py": "def build_model(:\n",
    "nullbyte.py": b"x = 1\x00\n",
    "importerr.py": "import satadvisor_no_such_module_xyz\n",
    "raises.py": "x = 1\nraise RuntimeError('boom at load')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "nothing.py": "x = 1\n",
    "notcallable.py": "build_model = 3\n",
    "nodefault.py": "def build_model(depth, *, num_classes):\n    pass\n",
    "modelclass.py": HEAD + "model = nn.Linear\n",
    "ss_unknown.py": TINY + "SEARCH_SPACE = {'layers': [1, 2]}\n",
    "ss_empty.py": TINY + "SEARCH_SPACE = {'depth': []}\n",
    "ss_duplicate.py": TINY + "SEARCH_SPACE = {'depth': [2, 4, 2]}\n",
    "ss_string.py": TINY + "SEARCH_SPACE = {'depth': [2, 'four']}\n",
    "ss_nan.py": TINY + "SEARCH_SPACE = {'width': [4, float('nan')]}\n",
    "ss_notdict.py": TINY + "SEARCH_SPACE = [('depth', [1, 2])]\n",
    "resolution_str.py": TINY + "RESOLUTION = '32'\n",
    "dataset_int.py": TINY + "DATASET = 10\n",
    "classes.py": HEAD
    + "def build_model(width: int = 4, *, in_channels):\n"
    + "    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1),\n"
    + "                         nn.Flatten(), nn.Linear(width, 7))\n",
    "notensor.py": HEAD
    + "class M(nn.Module):\n    def forward(self, x):\n        return {'logits': x}\n"
    + BUILD
    + "    return M()\n",
    "buildraises.py": HEAD + BUILD + "    raise ValueError(f'depth {depth} is not supported')\n",
    "notmodule.py": HEAD + BUILD + "    return 'a network'\n",
    "fixed.py": HEAD + "model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n",
}


# the fix a message names: "…; pass --out with …", "…: use one of …"
FIX = re.compile(
    r"[;:—] (use|pass|fix|give|write|add|define|check|install|run|raise|move|remove|put|make|"
    r"return|choose|drop|flatten|assign|list|rerun|keep)\b"
)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated working directory holding the model files and a few data roots."""
    monkeypatch.chdir(tmp_path)
    # torchvision roots must not come from the user's cache
    monkeypatch.setenv("SATADVISOR_DATA_DIR", str(tmp_path / "no-data-here"))
    for name, source in MODEL_FILES.items():
        if isinstance(source, bytes):
            (tmp_path / name).write_bytes(source)
        else:
            (tmp_path / name).write_text(source)
    (tmp_path / "emptyroot").mkdir()
    (tmp_path / "emptyfolder").mkdir()
    (tmp_path / "adir.py").mkdir()
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "dangling.py").symlink_to(tmp_path / "gone" / "model.py")
    (tmp_path / "corrupt.db").write_bytes(b"\x13\x37 this is not a database " * 200)
    with sqlite3.connect(tmp_path / "foreign.db") as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    (tmp_path / "garbage.log").write_text("garbage {not json\n")
    (tmp_path / "foreign.journal").write_text('{"op_code": 0, "who": "someone else"}\n')
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file\n")
    return tmp_path


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


OPT = ["optimize", "tiny.py", "--budget", "2", "--epochs", "1", "--validate-top", "0"]

# (id, args, what the message must contain); click's usage errors are marked with "click:"
BAD_INPUT: list[tuple[str, list[str], str]] = [
    # options out of range or of the wrong type (click validates, exit 2)
    ("epochs 0", ["analyze", "tiny.py", "--epochs", "0"], "click:--epochs"),
    ("epochs not int", ["analyze", "tiny.py", "--epochs", "abc"], "click:--epochs"),
    ("max-epochs 1", ["analyze", "tiny.py", "--epochs", "auto", "--max-epochs", "1"], "click:"),
    ("epochs auto (optimize)", [*OPT[:4], "--epochs", "auto"], "--epochs auto is for analyze"),
    ("batch-size 0", ["analyze", "tiny.py", "--batch-size", "0"], "click:--batch-size"),
    ("batch-size float", ["analyze", "tiny.py", "--batch-size", "1.5"], "click:--batch-size"),
    ("lr 0", ["analyze", "tiny.py", "--lr", "0"], "click:--lr"),
    ("lr negative", ["analyze", "tiny.py", "--lr", "-1"], "click:--lr"),
    ("lr not float", ["analyze", "tiny.py", "--lr", "fast"], "click:--lr"),
    ("resolution 3", ["analyze", "tiny.py", "--resolution", "3"], "click:--resolution"),
    ("resolution 1025", ["analyze", "tiny.py", "--resolution", "1025"], "click:--resolution"),
    ("seed negative", ["analyze", "tiny.py", "--seed", "-1"], "click:--seed"),
    ("unknown option", ["analyze", "tiny.py", "--epoch", "3"], "click:--epoch"),
    ("data-dir is a file", ["analyze", "tiny.py", "--data-dir", "afile"], "click:--data-dir"),
    ("out is a file", ["analyze", "tiny.py", "--out", "afile"], "click:--out"),
    ("budget missing", ["optimize", "tiny.py"], "click:--budget"),
    ("budget 0", ["optimize", "tiny.py", "--budget", "0"], "click:--budget"),
    ("budget not int", ["optimize", "tiny.py", "--budget", "many"], "click:--budget"),
    ("strategy unknown", [*OPT, "--strategy", "grid"], "click:--strategy"),
    ("workers 0", [*OPT, "--workers", "0"], "click:--workers"),
    ("validate-top -1", [*OPT[:-1], "-1"], "click:--validate-top"),
    ("full-epochs 0", [*OPT, "--full-epochs", "0"], "click:--full-epochs"),
    ("timeout 0", [*OPT, "--timeout", "0"], "click:--timeout"),
    ("report without study", ["report"], "click:STUDY"),
    ("name empty", ["analyze", "tiny.py", "--no-train", "--name", ""], "click:--name"),
    ("name ..", ["analyze", "tiny.py", "--no-train", "--name", ".."], "click:--name"),
    ("name with /", ["analyze", "tiny.py", "--no-train", "--name", "a/b"], "click:--name"),
    ("study-name .", [*OPT, "--study-name", "."], "click:--study-name"),
    # option values only satadvisor can judge
    ("device unknown", ["analyze", "tiny.py", "--device", "gpu0"], "unknown device 'gpu0'"),
    ("device tpu", ["analyze", "tiny.py", "--device", "tpu"], "unknown device 'tpu'"),
    ("device xpu", ["analyze", "tiny.py", "--device", "xpu"], "does not run on xpu"),
    ("device meta", [*OPT, "--device", "meta"], "does not run on meta"),
    ("storage in memory", [*OPT, "--storage", "sqlite://"], "in-memory database is lost"),
    (
        "storage :memory:",
        [*OPT, "--storage", "sqlite:///:memory:"],
        "in-memory database is lost",
    ),
    ("report in memory", ["report", "s", "--storage", "sqlite://"], "holds no study"),
    ("report study ../x", ["report", "../x"], "only a plain name"),
    ("objectives unknown", [*OPT, "--objectives", "accuracy,speed"], "--objectives"),
    ("objectives no accuracy", [*OPT, "--objectives", "macs"], "use accuracy, optionally"),
    ("objectives twice", [*OPT, "--objectives", "accuracy,accuracy"], "--objectives"),
    # unknown names
    ("dataset unknown", ["analyze", "tiny.py", "--dataset", "imagenet"], "unknown dataset"),
    ("dataset unknown (optimize)", [*OPT, "--dataset", "imagenet"], "unknown dataset"),
    ("model name unknown", ["analyze", "vgg17", "--no-train"], "vgg17: no such file"),
    # missing or unreadable files
    ("model file missing", ["analyze", "missing.py"], "missing.py: no such file"),
    ("model path dangling link", ["analyze", "dangling.py"], "dangling.py: no such file"),
    ("model path is a directory", ["analyze", "adir.py"], "is a directory"),
    ("model argument empty", ["analyze", ""], "empty MODEL argument"),
    # model files that fail in each way
    ("syntax error", ["analyze", "syntax.py", "--no-train"], "syntax.py:1: syntax error"),
    ("null bytes", ["analyze", "nullbyte.py", "--no-train"], "nullbyte.py: syntax error"),
    ("import error", ["analyze", "importerr.py", "--no-train"], "importerr.py:1: import failed"),
    ("raises at load", ["analyze", "raises.py", "--no-train"], "raises.py:2: loading the file"),
    ("sys.exit at load", ["analyze", "exits.py", "--no-train"], "the file exits when loaded"),
    ("no build_model/model", ["analyze", "nothing.py"], "defines neither build_model nor model"),
    ("build_model not callable", ["analyze", "notcallable.py"], "not a function"),
    ("knob without default", ["analyze", "nodefault.py"], "parameter 'depth' has no default"),
    ("model is a class", ["analyze", "modelclass.py"], "model is the class Linear"),
    ("SEARCH_SPACE unknown knob", ["analyze", "ss_unknown.py"], "SEARCH_SPACE names 'layers'"),
    ("SEARCH_SPACE empty", ["analyze", "ss_empty.py"], "SEARCH_SPACE['depth'] is empty"),
    ("SEARCH_SPACE duplicate", ["analyze", "ss_duplicate.py"], "lists 2 twice"),
    ("SEARCH_SPACE non-numeric", ["analyze", "ss_string.py"], "holds 'four' (str)"),
    ("SEARCH_SPACE NaN", ["analyze", "ss_nan.py"], "SEARCH_SPACE['width'] holds nan"),
    ("SEARCH_SPACE not a dict", ["analyze", "ss_notdict.py"], "SEARCH_SPACE is a list"),
    ("RESOLUTION wrong type", ["analyze", "resolution_str.py"], "RESOLUTION is '32'"),
    ("DATASET wrong type", ["analyze", "dataset_int.py"], "DATASET is a int"),
    ("output != classes", ["analyze", "classes.py", "--no-train"], "has 10 classes"),
    ("output != classes (optimize)", ["optimize", "classes.py", "--budget", "2"], "10 classes"),
    ("output not a tensor", ["analyze", "notensor.py", "--no-train"], "outputs a dict"),
    ("build_model raises", ["analyze", "buildraises.py", "--no-train"], "raised ValueError"),
    ("build_model no module", ["analyze", "notmodule.py", "--no-train"], "returned str"),
    ("model fails at resolution", ["analyze", "kernel7.py", "--set", "resolution=5"], "at 5 px"),
    # --set
    ("--set unknown knob", ["analyze", "tiny.py", "--set", "layers=3"], "unknown knob 'layers'"),
    ("--set unknown (optimize)", [*OPT, "--set", "layers=3"], "unknown knob 'layers'"),
    ("--set wrong type", ["analyze", "tiny.py", "--set", "depth=deep"], "expects an int"),
    ("--set without =", ["analyze", "tiny.py", "--set", "depth"], "write KNOB=VALUE"),
    ("--set resolution 0", ["analyze", "tiny.py", "--set", "resolution=0"], "from 4 to 1024"),
    (
        "--set resolution 2000 (no training)",
        ["analyze", "tiny.py", "--no-train", "--set", "resolution=2000"],
        "from 4 to 1024",
    ),
    ("--set on fixed model", ["analyze", "fixed.py", "--set", "depth=3"], "unknown knob 'depth'"),
    ("--set resolution 2 (optimize)", [*OPT, "--set", "resolution=2"], "from 4 to 1024"),
    (
        "--set pins everything",
        [*OPT, "--set", "depth=2", "--set", "width=4", "--set", "resolution=8"],
        "nothing to search",
    ),
    ("optimize a fixed model", ["optimize", "fixed.py", "--budget", "2"], "fixed `model`"),
    # data roots without the expected files
    (
        "torchvision root empty",
        ["analyze", "tiny.py", "--epochs", "1", "--dataset", "mnist", "--data-dir", "emptyroot"],
        "mnist: no data in emptyroot",
    ),
    (
        "torchvision root empty (optimize)",
        [*OPT, "--dataset", "cifar10", "--data-dir", "emptyroot"],
        "cifar10: no data in emptyroot",
    ),
    (
        "image folder missing",
        ["analyze", "tiny.py", "--dataset", "imagefolder:nowhere"],
        "nowhere is not a directory",
    ),
    (
        "image folder empty",
        ["analyze", "tiny.py", "--dataset", "imagefolder:emptyfolder"],
        "imagefolder: no images in emptyfolder",
    ),
    # output directories that cannot be written
    (
        "out under a file",
        ["analyze", "tiny.py", "--no-train", "--out", "afile/reports"],
        "afile is not a directory",
    ),
    ("out under a file (optimize)", [*OPT, "--out", "afile/reports"], "afile is not a directory"),
    (
        "out is a foreign directory",
        ["analyze", "tiny.py", "--no-train", "--out", ".", "--name", "mine"],
        "holds files satadvisor did not write",
    ),
    # storages: unknown scheme, corrupt, foreign, missing
    ("storage scheme", [*OPT, "--storage", "redis://localhost/0"], "unknown storage scheme"),
    ("storage corrupt", [*OPT, "--storage", "sqlite:///corrupt.db"], "not an SQLite database"),
    ("storage foreign", [*OPT, "--storage", "sqlite:///foreign.db"], "of another program"),
    ("journal garbage", [*OPT, "--storage", "journal:garbage.log"], "not an Optuna journal"),
    ("journal foreign", [*OPT, "--storage", "foreign.journal"], "foreign.journal"),
    ("report corrupt", ["report", "s", "--storage", "sqlite:///corrupt.db"], "not an SQLite"),
    ("report foreign", ["report", "s", "--storage", "sqlite:///foreign.db"], "another program"),
    ("report garbage journal", ["report", "s", "--storage", "garbage.log"], "not an Optuna"),
    ("report missing study", ["report", "nostudy"], "studies/nostudy.db does not exist"),
]


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    work: Path, args: list[str], expected: str, request: pytest.FixtureRequest
) -> None:
    before = _tree(work)
    result = invoke(args)
    err = result.stderr
    record("bad input", request.node.callspec.id, args, result.exit_code, err.strip())
    assert result.exit_code == 2, (result.exit_code, err, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in err
    if expected.startswith("click:"):
        # click's usage error: "Usage: …", "Try … --help", "Error: <names the option>"
        error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
        assert len(error_lines) == 1, err
        assert expected.removeprefix("click:") in error_lines[0], err
    else:
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
        assert err.startswith("satadvisor: error: "), err
        assert expected in err, err
        assert FIX.search(err), f"no fix named: {err!r}"
    assert _tree(work) == before, "bad input left files behind"


def test_device_cuda_without_cuda(work: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = invoke(["analyze", "tiny.py", "--device", "cuda", "--no-train"])
    record("bad input", "device cuda (none here)", ["--device", "cuda"], 2, result.stderr.strip())
    assert result.exit_code == 2
    assert result.stderr == (
        "satadvisor: error: --device cuda: CUDA is not available here; use --device cpu or auto\n"
    )
    assert not (work / "reports").exists()


def test_device_index_beyond_the_cuda_devices(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device cuda:7`` on a machine with one GPU (simulated where there is none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    before = _tree(work)
    result = invoke(["analyze", "tiny.py", "--device", "cuda:7", "--no-train"])
    record(
        "bad input",
        "device cuda:7 (one GPU)",
        ["--device", "cuda:7"],
        result.exit_code,
        result.stderr.strip(),
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "satadvisor: error: --device cuda:7: this machine has 1 CUDA device (cuda:0 to cuda:0); "
        "use one of them\n"
    )
    assert _tree(work) == before


def test_device_mps_without_mps(work: Path) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    result = invoke(["analyze", "tiny.py", "--device", "mps", "--epochs", "1"])
    record("bad input", "device mps (none here)", ["--device", "mps"], 2, result.stderr.strip())
    assert result.exit_code == 2
    assert result.stderr == (
        "satadvisor: error: --device mps: MPS is not available here; use --device cpu or auto\n"
    )
    assert not (work / "reports").exists()


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root reads all")
def test_unreadable_model_file(work: Path) -> None:
    (work / "tiny.py").chmod(0)
    result = invoke(["analyze", "tiny.py", "--no-train"])
    assert result.exit_code == 2
    assert result.stderr.startswith("satadvisor: error: tiny.py: cannot be read (Permission")


def test_unreadable_model_file_as_any_user(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read failure itself, simulated (root can read a chmod 000 file)."""
    import builtins

    real_open = builtins.open

    def deny(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith("tiny.py"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    result = invoke(["analyze", "tiny.py", "--no-train"])
    monkeypatch.undo()
    record("bad input", "model file unreadable", ["analyze", "tiny.py"], 2, result.stderr.strip())
    assert result.exit_code == 2
    assert result.stderr == (
        "satadvisor: error: tiny.py: cannot be read (Permission denied); check the file's "
        "permissions\n"
    )


def test_corrupt_image_in_image_folder(work: Path) -> None:
    import numpy as np
    from PIL import Image

    for label in ("cat", "dog"):
        (work / "imgs" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.full((12, 12, 3), 20 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(work / "imgs" / label / f"{i:02d}.png")
    (work / "imgs" / "dog" / "99.png").write_bytes(b"not a png")
    before = _tree(work)
    args = ["analyze", "tiny.py", "--epochs", "1", "--dataset", "imagefolder:imgs"]
    result = invoke(args)
    record("bad input", "corrupt image in image folder", args, result.exit_code, result.stderr)
    assert result.exit_code == 2, result.exception
    assert result.stderr.count("\n") == 1
    assert "cannot read an image" in result.stderr and "99.png" in result.stderr
    assert _tree(work) == before


# ------------------------------------------------------------------ happy paths
def test_analyze_no_train(work: Path) -> None:
    result = invoke(["analyze", "tiny.py", "--no-train"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip().endswith("report: reports/tiny/index.html")
    payload = json.loads((work / "reports" / "tiny" / "analysis.json").read_text())
    assert payload["training"] is None and payload["resolution"] == 8
    assert [row["r_min"] for row in payload["layers"]] == [3, 8, None]


def test_analyze_says_how_each_epoch_went_unless_quiet(work: Path) -> None:
    # Piped (CliRunner's stderr is not a terminal): one plain line per epoch, so a long run in
    # the background is not silent; --quiet silences it.
    args = ["analyze", "tiny.py", "--epochs", "3", "--device", "cpu", "--batch-size", "256"]
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    payload = json.loads((work / "reports" / "tiny" / "analysis.json").read_text())
    for line, epoch in zip(lines, payload["training"]["history"], strict=True):
        assert f"val acc {epoch['eval_accuracy']:.3f}" in line
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    assert "profile moved" not in lines[0] and "profile moved" in lines[1]  # needs 2 epochs
    quiet = invoke([*args, "--quiet", "--name", "q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_a_report_of_another_dataset_or_resolution_is_not_replaced_silently(work: Path) -> None:
    first = invoke(["analyze", "tiny.py", "--no-train"])
    assert first.exit_code == 0 and first.stderr == ""
    again = invoke(["analyze", "tiny.py", "--no-train"])  # the same run replaces its own
    assert again.exit_code == 0 and again.stderr == ""
    other = invoke(["analyze", "tiny.py", "--no-train", "--resolution", "12"])
    assert other.exit_code == 0
    assert other.stderr == (
        "satadvisor: note: reports/tiny held the report of tiny.py on digits at 8 px; it was "
        "replaced (pass --name to keep reports side by side)\n"
    )
    kept = invoke(["analyze", "tiny.py", "--no-train", "--name", "tiny-8px"])
    assert kept.exit_code == 0 and kept.stderr == ""
    assert (work / "reports" / "tiny-8px" / "index.html").is_file()


def test_analyze_json_prints_what_it_writes(work: Path) -> None:
    args = [
        "analyze",
        "tiny.py",
        "--epochs",
        "1",
        "--json",
        "--device",
        "cpu",
        "--batch-size",
        "512",
    ]
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["schema"] == "satadvisor.analysis/2"
    assert payload["training"]["epochs"] == 1
    assert 0.0 <= payload["training"]["accuracy"] <= 1.0
    assert all(0.0 <= row["saturation"] <= 1.0 for row in payload["layers"] if row["saturation"])
    written = json.loads((work / "reports" / "tiny" / "analysis.json").read_text())
    assert written == payload


def test_the_terminal_shows_what_analysis_json_holds_and_its_try_commands_run(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The terminal summary is made from the analysis record: its head, bars and marks say what
    # analysis.json says, and each "try:" command, run as printed, analyses the model with the
    # recommended change made, into its own folder (the analysed report is kept).
    args = ["analyze", "vgg", "--no-train"]
    monkeypatch.setattr(sys, "argv", ["satadvisor", *args])  # as the installed command sees it
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    analysed = work / "reports" / "vgg" / "analysis.json"
    payload = json.loads(analysed.read_text())
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"vgg on digits at {payload['resolution']} px — ")
    for row in payload["layers"]:
        (shown,) = [line for line in lines if line.startswith(f"  {row['label']} ")]
        marks = {"tail"} if row["tail"] else set()
        marks |= (
            {"unproductive"} if row["unproductive"] else {"critical"} if row["critical"] else set()
        )
        assert set(shown.split()) & {"tail", "unproductive", "critical"} == marks, shown
        assert (f"r={row['r_min']}" in shown.split()) == (row["r_min"] is not None), shown
    assert payload["verdict"] in lines
    tries = [line.split("try: ", 1)[1] for line in lines if line.startswith("     try: ")]
    assert len(tries) == len(payload["recommendations"]) >= 2
    for number, (command, rec) in enumerate(zip(tries, payload["recommendations"], strict=True), 1):
        assert f"  {number}. {rec['title']} (" in result.stdout
        words = shlex.split(command)
        assert words[:2] == ["satadvisor", "analyze"] and rec["model"] is None
        tried = invoke([*words[1:], "--no-train"])
        assert tried.exit_code == 0, tried.stderr
        folder = work / "reports" / f"vgg-try{number}"
        knobs = json.loads((folder / "analysis.json").read_text())["knobs"]
        assert knobs == {**payload["knobs"], **rec["changes"]}
    assert json.loads(analysed.read_text()) == payload


def test_analyze_subset_caps_the_proxy_training_images(work: Path) -> None:
    # The final Linear sees one row per training image in the profiled (last) epoch.
    args = ["analyze", "tiny.py", "--epochs", "1", "--json", "--device", "cpu"]
    capped = invoke([*args, "--subset", "40", "--name", "capped"])
    assert capped.exit_code == 0, capped.stderr
    whole = invoke([*args, "--name", "whole"])
    assert whole.exit_code == 0, whole.stderr
    seen = {
        name: json.loads(result.stdout)["layers"][-1]["samples"]
        for name, result in (("capped", capped), ("whole", whole))
    }
    assert seen["capped"] == 40
    assert seen["whole"] > 1000  # digits: 1,797 images, a validation share held out
    usage = invoke([*args, "--subset", "0"])
    assert usage.exit_code == 2 and "--subset" in usage.stderr


def test_optimize_report_and_refused_rerun(work: Path) -> None:
    args = ["optimize", "tiny.py", "--budget", "3", "--epochs", "1", "--validate-top", "1"]
    args += ["--full-epochs", "1", "--device", "cpu", "--batch-size", "512"]
    args += ["--subset", "300", "--full-subset", "60"]
    first = invoke(args)
    assert first.exit_code == 0, (first.stderr, first.exception)
    index = work / "reports" / "tiny-digits" / "index.html"
    summary = json.loads((work / "reports" / "tiny-digits" / "study.json").read_text())
    assert summary["counted_trials"] == 3 and summary["budget"] == 3
    assert summary["validation"][0]["baseline"] is True
    assert {(v["train_images"], v["test_images"]) for v in summary["validation"]} == {(60, 60)}
    assert (work / "studies" / "tiny-digits.db").is_file()
    _check_progress_lines(first.stderr, budget=3, planned=(1 + 1) * 3)
    page = index.read_bytes()
    again = invoke(args)
    record("bad input", "optimize rerun at budget", args, again.exit_code, again.stderr.strip())
    assert again.exit_code == 2
    assert again.stderr.startswith("satadvisor: error: study 'tiny-digits' already has 3 trials")
    assert again.stderr.count("\n") == 1
    assert index.read_bytes() == page
    lower = invoke([*args[:3], "2", *args[4:]])
    assert lower.exit_code == 2 and "already has 3 trials of a budget of 2" in lower.stderr
    # re-render from the storage alone, into another folder: the refused runs changed nothing
    rendered = invoke(["report", "tiny-digits", "--out", "again"])
    assert rendered.exit_code == 0, rendered.stderr
    assert rendered.stdout.startswith("study tiny-digits: 3 trials (budget 3)")
    pareto = len(summary["pareto"])
    assert first.stdout.startswith(f"study tiny-digits: 3 trials (budget 3), {pareto} on the")
    # the summary read back from the storage alone prints as the run's own did
    assert rendered.stdout.replace("again/", "reports/", 1) == first.stdout
    again_summary = json.loads((work / "again" / "tiny-digits" / "study.json").read_text())
    assert again_summary["trials"] == summary["trials"]
    assert again_summary["validation"] == summary["validation"]
    assert again_summary["budget"] == 3


def _check_progress_lines(stderr: str, *, budget: int, planned: int) -> None:
    """optimize's progress, piped (CliRunner is no terminal): one plain line per trial and per
    full run, each with one ETA over the search and the validation runs."""
    trials = [line for line in stderr.splitlines() if line.startswith("trial ")]
    assert [line.split()[1] for line in trials] == [f"{i}/{budget}" for i in range(1, budget + 1)]
    # while both phases lie ahead, the ETA says so: the validation's runs are counted in it
    # (baseline and --validate-top picks, times the seeds)
    assert re.search(rf"\(search .+ \+ validation .+, {planned} full runs\)\)$", trials[0])
    eta = re.search(r"\(ETA (≥ )?([0-9.]+) (s|min)", trials[-1])
    assert eta is not None and float(eta[2]) > 0, trials[-1]  # the search is done, not the call
    start = [line for line in stderr.splitlines() if line.startswith("search done; validation:")]
    assert len(start) == 1 and "(ETA" in start[0]
    runs = int(re.search(r"validation: (\d+) full run", start[0])[1])  # type: ignore[index]
    assert 1 <= runs <= planned
    done = [line for line in stderr.splitlines() if line.startswith("full run ")]
    assert [line.split()[2] for line in done] == [f"{k}/{runs}" for k in range(1, runs + 1)]
    assert all("(ETA" in line for line in done)
    assert done[-1].endswith("(ETA 0 s)")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_help_does_not_import_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from click.testing import CliRunner
        from satadvisor.cli import main
        for args in (["--help"], ["analyze", "--help"], ["optimize", "--help"],
                     ["report", "--help"], ["--version"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, (args, result.output)
            assert result.output.strip(), args
        print(sorted(m for m in ("torch", "optuna", "numpy", "sklearn") if m in sys.modules))
        """
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.integration
def test_real_process_bad_input(work: Path) -> None:
    """``python -m satadvisor`` as a user runs it: exit codes and stderr of a real process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "satadvisor", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    before = _tree(work)
    bad = run("analyze", "ss_unknown.py", "--no-train")
    record("bad input", "real process", ["analyze", "ss_unknown.py"], bad.returncode, bad.stderr)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == (
        "satadvisor: error: ss_unknown.py: SEARCH_SPACE names 'layers', which build_model does "
        "not take; use its knobs (depth, width, kernel_size, resolution)\n"
    )
    debug = run("analyze", "ss_unknown.py", "--no-train", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "satadvisor.errors.ModelFileError: ss_unknown.py: SEARCH_SPACE names" in debug.stderr
    assert _tree(work) == before


FLAGGED_MODEL = TINY + textwrap.dedent(
    """
    import pathlib

    _build = build_model

    class _Flag(nn.Module):
        def forward(self, x):
            if self.training:
                pathlib.Path("training-started").touch()
            return x

    def build_model(depth=2, width=4, kernel_size=3, *, num_classes, in_channels):
        net = _build(depth, width, kernel_size, num_classes=num_classes, in_channels=in_channels)
        return nn.Sequential(_Flag(), net)
    """
)


def _analyze_process(work: Path) -> subprocess.Popen[str]:
    args = ["analyze", "flagged.py", "--epochs", "5000", "--device", "cpu", "--batch-size", "512"]
    return subprocess.Popen(
        [sys.executable, "-m", "satadvisor", *args],
        cwd=work,
        preexec_fn=as_in_a_terminal,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_sigint_while_analyze_trains_exits_130(work: Path) -> None:
    """Ctrl-C outside the search (analyze's training) ends like one in the search: exit 130."""
    import signal
    import time

    (work / "flagged.py").write_text(FLAGGED_MODEL)
    proc = _analyze_process(work)
    deadline = time.monotonic() + 180
    while not (work / "training-started").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    record(
        "faults",
        "SIGINT during analyze",
        ["analyze", "flagged.py", "--epochs", "5000"],
        proc.returncode,
        err.strip().splitlines()[-1] if err.strip() else "",
    )
    assert proc.returncode == 130, err
    assert err.endswith("satadvisor: interrupted\n") and "Traceback" not in err, err
    assert out == ""
    assert not (work / "reports").exists()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 1.0, 2.0, 3.0])
def test_sigint_at_any_moment_of_analyze_exits_130(work: Path, delay: float) -> None:
    """While the command line loads, torch imports, the model traces, the data loads.

    Not earlier: a SIGINT within the interpreter's own start (the first ~0.1 s, before any of
    satadvisor runs: ``site``, ``runpy``) ends in Python's traceback, exit -2 or 1.
    """
    import signal
    import time

    (work / "flagged.py").write_text(FLAGGED_MODEL)
    proc = _analyze_process(work)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (delay, err)
    assert err.endswith("satadvisor: interrupted\n") and "Traceback" not in err, err
    assert out == ""
    assert not (work / "reports").exists()
