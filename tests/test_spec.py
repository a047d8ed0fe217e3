"""The model-file contract: loading, knobs, search spaces, defaults, one-line errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from satadvisor import spec
from satadvisor.errors import ModelBuildError, ModelFileError, UsageError
from satadvisor.models import list_models

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

GOOD = """
from torch import nn

def build_model(depth: int = 2, kernel_size: int = 3, width: int = 4, lr_scale: float = 1.0,
                batch_norm: bool = False, act: str = "relu", *, num_classes, in_channels):
    if act not in ("relu", "gelu"):
        raise ValueError(f"unknown activation {act}")
    layers, c = [], in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, kernel_size, padding=kernel_size // 2)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU() if act == "relu" else nn.GELU())
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

SEARCH_SPACE = {"depth": [1, 2, 3], "kernel_size": (3, 5), "lr_scale": [1, 0.5],
                "resolution": range(8, 17, 8), "batch_norm": [True, False]}
DATASET = "digits"
RESOLUTION = 12
"""


def write(tmp_path: Path, source: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def load_error(path: Path | str, error: type[Exception] = ModelFileError) -> str:
    with pytest.raises(error) as info:
        spec.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- a good file -----------------------------------------------------------------------------


def test_build_model_file_gives_knobs_accepts_and_defaults(tmp_path: Path) -> None:
    loaded = spec.load(write(tmp_path, GOOD))
    assert loaded.name == "model"
    assert loaded.optimisable and loaded.model is None
    assert loaded.knobs == {
        "depth": 2,
        "kernel_size": 3,
        "width": 4,
        "lr_scale": 1.0,
        "batch_norm": False,
        "act": "relu",
    }
    assert loaded.accepts == frozenset({"num_classes", "in_channels"})
    assert loaded.search_space == {
        "depth": (1, 2, 3),
        "kernel_size": (3, 5),
        "lr_scale": (1.0, 0.5),
        "resolution": (8, 16),
        "batch_norm": (True, False),
    }
    assert isinstance(loaded.search_space["lr_scale"][0], float)
    assert (loaded.dataset, loaded.resolution) == ("digits", 12)


def test_create_injects_classes_and_channels_and_coerces(tmp_path: Path) -> None:
    loaded = spec.load(write(tmp_path, GOOD))
    model = loaded.create(num_classes=7, in_channels=1, depth="3", kernel_size=5.0, resolution=8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert convs[0].in_channels == 1 and convs[0].kernel_size == (5, 5)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 7)
    spec.check_output(model, num_classes=7, in_channels=1, resolution=8, source=loaded.source)


def test_resolve_and_parse_set_use_the_default_types(tmp_path: Path) -> None:
    loaded = spec.load(write(tmp_path, GOOD))
    parsed = loaded.parse_set(
        ["depth=6", "lr_scale=0.25", "batch_norm=yes", "act=gelu", "resolution=24", "depth=4"]
    )
    assert parsed == {
        "depth": 4,
        "lr_scale": 0.25,
        "batch_norm": True,
        "act": "gelu",
        "resolution": 24,
    }
    assert type(parsed["depth"]) is int and type(parsed["lr_scale"]) is float
    resolved = loaded.resolve({"depth": 5, "batch_norm": "off", "lr_scale": 2})
    assert resolved == {**loaded.knobs, "depth": 5, "batch_norm": False, "lr_scale": 2.0}
    assert loaded.resolve() == loaded.knobs


def test_parse_set_knob_with_none_default_takes_literals_and_none() -> None:
    vgg = spec.load("vgg")
    assert vgg.knobs["stages"] is None
    for text in ("none", "None", "NULL"):
        assert vgg.parse_set([f"stages={text}"]) == {"stages": None}
    assert vgg.parse_set(["stages=4"]) == {"stages": 4}


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["depth"], "write KNOB=VALUE"),
        (["=3"], "write KNOB=VALUE"),
        (
            ["layers=3"],
            "unknown knob 'layers' for .*known knobs are depth, kernel_size, .*resolution",
        ),
        (["depth=three"], "knob 'depth' .* expects an int"),
        (["depth=2.5"], "knob 'depth' .* expects an int"),
        (["lr_scale=fast"], "knob 'lr_scale' .* expects a float"),
        (["batch_norm=maybe"], "knob 'batch_norm' .* expects a bool"),
        (["resolution=0"], "resolution .* must be an int from 4 to 1024"),
        (["resolution=2000"], "resolution .* must be an int from 4 to 1024"),
        (["resolution=big"], "resolution .* must be an int from 4 to 1024"),
    ],
)
def test_parse_set_errors(tmp_path: Path, items: list[str], match: str) -> None:
    loaded = spec.load(write(tmp_path, GOOD))
    with pytest.raises(UsageError, match=match) as info:
        loaded.parse_set(items)
    assert "\n" not in str(info.value)


def test_create_rejects_unknown_knobs_and_wrong_types(tmp_path: Path) -> None:
    loaded = spec.load(write(tmp_path, GOOD))
    with pytest.raises(UsageError, match="unknown knob 'layers'"):
        loaded.create(num_classes=10, in_channels=1, layers=3)
    with pytest.raises(UsageError, match=r"knob 'act' .* expects a string"):
        loaded.create(num_classes=10, in_channels=1, act=3)
    with pytest.raises(UsageError, match=r"knob 'depth' .* expects an int"):
        loaded.create(num_classes=10, in_channels=1, depth=True)


def test_exceptions_in_build_model_become_model_build_errors(tmp_path: Path) -> None:
    loaded = spec.load(write(tmp_path, GOOD))
    with pytest.raises(ModelBuildError) as info:
        loaded.create(num_classes=10, in_channels=1, act="tanh", depth=1)
    message = str(info.value)
    assert message.startswith(f"{loaded.source}: build_model(depth=1, ")
    assert "act='tanh'" in message
    assert "raised ValueError: unknown activation tanh" in message
    assert "\n" not in message


def test_build_model_returning_a_non_module(tmp_path: Path) -> None:
    path = write(tmp_path, "def build_model(depth=2, *, num_classes, in_channels):\n    return 3\n")
    with pytest.raises(ModelBuildError, match=r"returned int, not a torch\.nn\.Module"):
        spec.load(path).create(num_classes=10, in_channels=1)


def test_build_model_without_injected_parameters(tmp_path: Path) -> None:
    source = """
    from torch import nn
    def build_model(width=4):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    """
    loaded = spec.load(write(tmp_path, source))
    assert loaded.accepts == frozenset()
    model = loaded.create(num_classes=10, in_channels=1)  # not passed: build_model takes neither
    with pytest.raises(ModelBuildError) as info:
        spec.check_output(model, num_classes=10, in_channels=1, resolution=4, source="model.py")
    assert str(info.value) == (
        "model.py: the model outputs shape (2, 3) but the dataset has 10 classes; "
        "make build_model use num_classes"
    )


def test_kwargs_build_model_accepts_everything(tmp_path: Path) -> None:
    source = """
    from torch import nn
    def build_model(width=4, **extra):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(extra["num_classes"]))
    """
    loaded = spec.load(write(tmp_path, source))
    assert loaded.accepts == frozenset({"num_classes", "in_channels"})
    model = loaded.create(num_classes=6, in_channels=2)
    spec.check_output(model, num_classes=6, in_channels=2, resolution=4, source=loaded.source)


def test_build_model_taking_resolution_gets_it(tmp_path: Path) -> None:
    source = """
    from torch import nn
    def build_model(resolution=8, *, num_classes, in_channels):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * resolution**2, num_classes))
    """
    loaded = spec.load(write(tmp_path, source))
    assert loaded.knobs == {"resolution": 8}
    model = loaded.create(num_classes=3, in_channels=1, resolution=5)
    spec.check_output(model, num_classes=3, in_channels=1, resolution=5, source=loaded.source)


def test_sibling_imports_work_and_sys_path_is_restored(tmp_path: Path) -> None:
    (tmp_path / "helpers_for_satadvisor_test.py").write_text("WIDTH = 5\n")
    source = """
    from dataclasses import dataclass
    from torch import nn
    import helpers_for_satadvisor_test as helpers

    @dataclass(frozen=True)
    class Cfg:
        width: int = helpers.WIDTH

    def build_model(width: int = Cfg().width, *, num_classes, in_channels):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    """
    before = list(sys.path)
    loaded = spec.load(write(tmp_path, source, "net.py"))
    assert loaded.knobs == {"width": 5}
    assert loaded.name == "net"
    assert sys.path == before
    sys.modules.pop("helpers_for_satadvisor_test", None)


def test_source_can_be_loaded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GOOD, "mine.py")
    loaded = spec.load("mine.py")
    assert loaded.source == "mine.py"
    assert spec.load(loaded.source).knobs == loaded.knobs
    assert spec.load(spec.load("vgg").source).source == "builtin:vgg"


# --- fixed models ------------------------------------------------------------------------------


def test_fixed_model_file_is_analysable_not_optimisable(tmp_path: Path) -> None:
    source = """
    import torch
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))
    RESOLUTION = 8
    SEARCH_SPACE = {"resolution": [8, 16]}
    """
    loaded = spec.load(write(tmp_path, source))
    assert not loaded.optimisable
    assert loaded.build is None and isinstance(loaded.model, nn.Sequential)
    assert loaded.knobs == {} and loaded.search_space == {"resolution": (8, 16)}
    first = loaded.create(num_classes=10, in_channels=1, resolution=8)
    second = loaded.create(num_classes=10, in_channels=1)
    assert first is not loaded.model and first is not second  # fresh copies ...
    for a, b in zip(first.parameters(), loaded.model.parameters(), strict=True):
        assert torch.equal(a, b)  # ... of the same weights
    spec.check_output(first, num_classes=10, in_channels=1, resolution=8, source=loaded.source)
    assert loaded.parse_set(["resolution=16"]) == {"resolution": 16}
    with pytest.raises(UsageError, match="fixed `model`, so knob 'depth' cannot be set"):
        loaded.create(num_classes=10, in_channels=1, depth=3)
    with pytest.raises(UsageError, match="unknown knob 'depth'"):
        loaded.parse_set(["depth=3"])


def test_build_model_wins_over_model(tmp_path: Path) -> None:
    source = GOOD + "\nmodel = build_model(num_classes=10, in_channels=3)\n"
    loaded = spec.load(write(tmp_path, source))
    assert loaded.optimisable and loaded.model is None


# --- default resolution ------------------------------------------------------------------------


def test_no_argument_loads_model_py_in_cwd(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    loaded = spec.load(None, cwd=tmp_path)
    assert loaded.name == "model" and loaded.dataset == "digits" and loaded.resolution == 12
    assert Path(loaded.source).resolve() == (tmp_path / "model.py").resolve()


def test_no_argument_and_no_model_py_is_the_embedded_default(tmp_path: Path) -> None:
    loaded = spec.load(cwd=tmp_path)
    assert loaded.name == spec.DEFAULT_MODEL == "vgg"
    assert loaded.source == "builtin:vgg"
    assert (loaded.dataset, loaded.resolution) == ("digits", 16)
    assert loaded.knobs["depth"] == 8 and loaded.knobs["downsamplings"] == 3
    model = loaded.create(num_classes=10, in_channels=1)
    spec.check_output(model, num_classes=10, in_channels=1, resolution=16, source=loaded.source)


@pytest.mark.parametrize("name", list_models())
def test_every_builtin_name_loads(name: str, tmp_path: Path) -> None:
    loaded = spec.load(name, cwd=tmp_path)
    assert loaded.name == name and loaded.source == f"builtin:{name}"
    assert loaded.optimisable and loaded.search_space is None and loaded.dataset is None
    assert loaded.accepts == frozenset({"num_classes", "in_channels"})
    assert "width" in loaded.knobs


def test_builtin_build_errors_name_the_family() -> None:
    loaded = spec.load("vgg")
    with pytest.raises(ModelBuildError) as info:
        loaded.create(num_classes=10, in_channels=1, depth=2, downsamplings=3)
    message = str(info.value)
    assert message.startswith("builtin:vgg: vgg(depth=2, kernel_size=3, width=16, downsamplings=3")
    assert "raised ValueError: vgg needs 0 <= downsamplings <= depth" in message


def test_an_existing_file_wins_over_a_builtin_name(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "vgg")
    assert spec.load("vgg", cwd=tmp_path).knobs["act"] == "relu"


# --- failures at load time ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.py")
    assert message.startswith(f"{tmp_path / 'nope.py'}: no such file; pass a model file")
    assert "vgg" in message and "resnet" in message and message.endswith("or nothing")


def test_unknown_bare_name(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as info:
        spec.load("vgg17", cwd=tmp_path)
    message = str(info.value)
    assert message.startswith("vgg17: no such file; pass a model file, a built-in name (")


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in load_error(tmp_path)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1\n\ndef build_model(depth=2:\n    pass\n")
    message = load_error(path)
    assert message.startswith(f"{path}:3: syntax error:")
    assert message.endswith("fix the model file")


def test_import_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import torch\nimport satadvisor_no_such_package\n")
    message = load_error(path)
    assert message.startswith(f"{path}:2: import failed:")
    assert "satadvisor_no_such_package" in message and "install the package" in message
    # the half-run module is not left behind
    assert all(getattr(m, "__file__", None) != str(path) for m in list(sys.modules.values()))


def test_exception_at_import_names_the_line_inside_the_file(tmp_path: Path) -> None:
    source = "def helper():\n    return 1 / 0\n\nVALUE = helper()\n"
    message = load_error(write(tmp_path, source))
    assert ":2: loading the file raised ZeroDivisionError: division by zero" in message


def test_sys_exit_at_import(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "import sys\nsys.exit(3)\n"))
    assert ":2: the file exits when loaded" in message and "__main__" in message


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("x = 1\n", "defines neither build_model nor model"),
        ("build_model = 3\n", "build_model is a int, not a function"),
        ("def build_model(depth, *, num_classes):\n    pass\n", "parameter 'depth' has no default"),
        ("model = [1, 2]\n", "model is a list, not a torch.nn.Module"),
        ("from torch import nn\nmodel = nn.Linear\n", "model is the class Linear, not a network"),
    ],
)
def test_contract_violations(tmp_path: Path, source: str, match: str) -> None:
    path = write(tmp_path, source)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert match in message


BUILD = "def build_model(depth: int = 2, scale: float = 1.0, bn: bool = True, *, num_classes):\n    pass\n"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("SEARCH_SPACE = [('depth', [1, 2])]", "SEARCH_SPACE is a list, not a dict"),
        (
            "SEARCH_SPACE = {'layers': [1, 2]}",
            "SEARCH_SPACE names 'layers', which build_model does not take",
        ),
        ("SEARCH_SPACE = {'num_classes': [1, 2]}", "SEARCH_SPACE names 'num_classes'"),
        ("SEARCH_SPACE = {'depth': []}", "SEARCH_SPACE['depth'] is empty"),
        ("SEARCH_SPACE = {'depth': 3}", "SEARCH_SPACE['depth'] is a int; give a list"),
        ("SEARCH_SPACE = {'depth': '123'}", "SEARCH_SPACE['depth'] is a str; give a list"),
        ("SEARCH_SPACE = {'depth': [2, 4, 2]}", "SEARCH_SPACE['depth'] lists 2 twice"),
        ("SEARCH_SPACE = {'scale': [1, 1.0]}", "SEARCH_SPACE['scale'] lists 1.0 twice"),
        (
            "SEARCH_SPACE = {'depth': [2, 'four']}",
            "SEARCH_SPACE['depth'] holds 'four' (str), but build_model declares depth as an int",
        ),
        (
            "SEARCH_SPACE = {'depth': [2, 4.5]}",
            "holds 4.5 (float), but build_model declares depth as an int",
        ),
        ("SEARCH_SPACE = {'depth': [True, 4]}", "holds True (bool)"),
        ("SEARCH_SPACE = {'scale': ['big']}", "declares scale as a float"),
        ("SEARCH_SPACE = {'scale': [float('nan')]}", "holds nan"),
        ("SEARCH_SPACE = {'bn': [1, 0]}", "declares bn as a bool"),
        (
            "SEARCH_SPACE = {'resolution': [16, 0]}",
            "SEARCH_SPACE['resolution'] holds 0; resolutions are ints from 4 to 1024",
        ),
        ("SEARCH_SPACE = {'resolution': [16.0]}", "SEARCH_SPACE['resolution'] holds 16.0"),
        ("DATASET = 10", "DATASET is a int, not a string"),
        ("RESOLUTION = 0", "RESOLUTION is 0; give the input size in pixels as an int from 4"),
        ("RESOLUTION = 4096", "RESOLUTION is 4096; give the input size in pixels as an int"),
        ("RESOLUTION = '32'", "RESOLUTION is '32'"),
        ("RESOLUTION = True", "RESOLUTION is True"),
    ],
)
def test_bad_module_constants(tmp_path: Path, extra: str, match: str) -> None:
    path = write(tmp_path, BUILD + extra + "\n")
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert match in message


# --- check_output ------------------------------------------------------------------------------


def test_check_output_restores_training_mode_and_names_the_fix() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(1))
    model.train()
    with pytest.raises(ModelBuildError) as info:
        spec.check_output(model, num_classes=3, in_channels=1, resolution=8, source="m.py")
    assert str(info.value) == (
        "m.py: the model outputs shape (2, 3, 1, 1), expected (2, 3) for a batch of 2; "
        "flatten the output to (batch, num_classes) logits"
    )
    assert model.training
    assert model[1].num_batches_tracked.item() == 0  # eval mode: BN statistics untouched


def test_check_output_reports_forward_failures_and_non_tensors() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ModelBuildError, match=r"m.py: the model fails on a \(2, 1, 8, 8\) input"):
        spec.check_output(net, num_classes=10, in_channels=1, resolution=8, source="m.py")

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    with pytest.raises(ModelBuildError, match="outputs a tuple, not a tensor"):
        spec.check_output(Pair(), num_classes=10, in_channels=1, resolution=8, source="m.py")


# --- the examples ------------------------------------------------------------------------------


def test_digits_example_loads_and_builds() -> None:
    loaded = spec.load(EXAMPLES / "digits_cnn.py")
    assert (loaded.dataset, loaded.resolution) == ("digits", 16)
    assert set(loaded.knobs) == {"depth", "kernel_size", "width"}
    assert loaded.search_space is not None
    assert {"depth", "kernel_size", "resolution"} <= set(loaded.search_space)
    for resolution in loaded.search_space["resolution"]:
        for depth in loaded.search_space["depth"]:
            model = loaded.create(num_classes=10, in_channels=1, depth=depth)
            spec.check_output(
                model, num_classes=10, in_channels=1, resolution=resolution, source=loaded.source
            )


def test_vgg16_fashion_example_loads_and_builds() -> None:
    loaded = spec.load(EXAMPLES / "vgg16_fashion.py")
    assert (loaded.dataset, loaded.resolution) == ("fashion-mnist", 32)
    assert loaded.search_space is not None and loaded.search_space["depth"] == (8, 10, 13)
    model = loaded.create(num_classes=10, in_channels=1, width=8)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1] == "features.conv13" and len(convs) == 13
    spec.check_output(model, num_classes=10, in_channels=1, resolution=32, source=loaded.source)
