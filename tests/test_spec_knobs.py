"""Knob types from build_model's annotations: --set and SEARCH_SPACE values parsed by what the
file declares, with and without ``from __future__ import annotations``; the default's type when
a knob is unannotated or its annotation cannot be resolved."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from satadvisor import spec
from satadvisor.errors import ModelFileError, UsageError

BODY = """
def build_model(width: float = 8, scale: int | None = None, mode: Literal["a", "b"] = "a",
                depth: Optional[int] = 3, flag: "bool" = False, plain=4,
                later: "NotDefinedAnywhere" = 2, *, num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
"""
IMPORTS = "from typing import Literal, Optional\nfrom torch import nn\n"
FUTURE = "from __future__ import annotations\n"


@pytest.fixture(params=["plain", "future"])
def loaded(request: pytest.FixtureRequest, tmp_path: Path) -> spec.ModelSpec:
    head = FUTURE if request.param == "future" else ""
    source = head + IMPORTS + textwrap.dedent(BODY)
    path = tmp_path / "annotated.py"
    path.write_text(source)
    return spec.load(path)


def set_error(loaded: spec.ModelSpec, item: str) -> str:
    with pytest.raises(UsageError) as info:
        loaded.parse_set([item])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_annotation_wins_over_the_default_type(loaded: spec.ModelSpec) -> None:
    assert loaded.knobs["width"] == 8  # the default as written ...
    parsed = loaded.parse_set(["width=8.5"])
    assert parsed == {"width": 8.5}  # ... but float values, as annotated
    assert type(loaded.parse_set(["width=8"])["width"]) is float
    assert loaded.resolve({"width": 3})["width"] == 3.0


def test_optional_int_takes_ints_and_none(loaded: spec.ModelSpec) -> None:
    assert loaded.parse_set(["scale=3"]) == {"scale": 3}
    assert loaded.parse_set(["scale=none"]) == {"scale": None}
    assert loaded.parse_set(["scale=NULL"]) == {"scale": None}
    assert loaded.parse_set(["depth=5", "depth=none"]) == {"depth": None}
    message = set_error(loaded, "scale=2.5")
    assert message.startswith("knob 'scale' of ")
    assert "annotated.py expects an int or none (default None), got '2.5'" in message
    assert message.endswith("fix the --set")


def test_literal_choices(loaded: spec.ModelSpec) -> None:
    assert loaded.parse_set(["mode=b"]) == {"mode": "b"}
    message = set_error(loaded, "mode=c")
    assert "knob 'mode' of" in message
    assert "expects one of 'a', 'b' (default 'a'), got 'c'; fix the --set" in message


def test_a_string_annotation_of_a_builtin_type(loaded: spec.ModelSpec) -> None:
    assert loaded.parse_set(["flag=yes"]) == {"flag": True}
    assert "expects a bool" in set_error(loaded, "flag=maybe")


def test_unannotated_and_unresolvable_knobs_take_the_default_type(
    loaded: spec.ModelSpec,
) -> None:
    assert loaded.parse_set(["plain=6"]) == {"plain": 6}
    assert "expects an int (default 4)" in set_error(loaded, "plain=6.5")
    # an annotation naming nothing the module defines: the default (2) decides
    assert loaded.parse_set(["later=7"]) == {"later": 7}
    assert "expects an int (default 2)" in set_error(loaded, "later=x")


def test_search_space_values_follow_the_annotation(tmp_path: Path) -> None:
    source = FUTURE + IMPORTS + textwrap.dedent(BODY)
    space_line = "SEARCH_SPACE = {'width': [8, 8.5], 'scale': [None, 2], 'mode': ['a', 'b']}"
    path = tmp_path / "space.py"
    path.write_text(source + space_line + "\n")
    space = spec.load(path).search_space
    assert space == {"width": (8.0, 8.5), "scale": (None, 2), "mode": ("a", "b")}
    assert [type(v) for v in space["width"]] == [float, float]

    def error(extra: str) -> str:
        path.write_text(source + extra + "\n")
        with pytest.raises(ModelFileError) as info:
            spec.load(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: SEARCH_SPACE[")
        return message

    assert "holds 'c' (str), but build_model declares mode as one of 'a', 'b'" in error(
        "SEARCH_SPACE = {'mode': ['a', 'c']}"
    )
    assert "holds 2.5 (float), but build_model declares scale as an int or none" in error(
        "SEARCH_SPACE = {'scale': [2.5]}"
    )
    assert "holds None (NoneType), but the default plain=4 is an int" in error(
        "SEARCH_SPACE = {'plain': [None]}"
    )
    assert "lists 8.0 twice" in error("SEARCH_SPACE = {'width': [8, 8.0]}")


def test_builtin_families_read_their_annotations() -> None:
    plain = spec.load("plain")
    assert plain.knobs["stages"] is None
    assert plain.parse_set(["stages=3"]) == {"stages": 3}  # int | None
    assert plain.parse_set(["stages=none"]) == {"stages": None}
    with pytest.raises(UsageError, match=r"knob 'stages' of builtin:plain expects an int or none"):
        plain.parse_set(["stages=[1, 2]"])
