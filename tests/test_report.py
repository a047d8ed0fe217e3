"""The analysis report: files, page content and order, escaping, plot data, atomicity, browser."""

from __future__ import annotations

import copy
import csv
import html
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from satadvisor.errors import OutputError, UsageError
from satadvisor.report import (
    LAYER_COLUMNS,
    SCHEMA,
    _plots,
    _plots_analysis,
    render_analysis,
    write_analysis,
    write_report,
)
from satadvisor.report._page import plotly_js

EVIL = "<script>alert(1)</script>"

# VGG16 (13 convs, 2×2 max-pools after conv2, 4, 7, 10, 13) on CIFAR-10 at 32 px. Published
# saturation (Richter et al., BMVC 2021): conv1–7 ≈ 0.12–0.61, a tail conv8–13 from 0.17 to 0.02.
VGG_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG_POOL_AFTER = (2, 4, 7, 10, 13)
VGG_SATURATION = (0.31, 0.44, 0.52, 0.61, 0.48, 0.39, 0.12, 0.17, 0.09, 0.06, 0.04, 0.03, 0.02)


def vgg_receptive_fields(resolution: int) -> list[dict[str, Any]]:
    """r, input r_min and input size per conv by the recurrence r += (k−1)·j, j *= s."""
    r, jump, size, out = 1, 1, resolution, []
    for i in range(1, 14):
        input_r, input_size = r, size
        r += 2 * jump
        out.append({"r": r, "input_r": input_r, "input_size": input_size})
        if i in VGG_POOL_AFTER:
            r += jump
            jump *= 2
            size //= 2
    return out


def make_analysis(*, resolution: int = 32, epochs: int = 5, trained: bool = True) -> dict[str, Any]:
    """A realistic ``satadvisor.analysis/2`` dict: VGG16-like profile with a conv8–13 tail."""
    rfs = vgg_receptive_fields(resolution)
    layers = []
    for i, (width, sat, rf) in enumerate(zip(VGG_WIDTHS, VGG_SATURATION, rfs, strict=True), 1):
        unproductive = rf["input_r"] > resolution or rf["input_size"] <= 3
        layers.append(
            {
                "name": f"conv{i}",
                "type": "Conv2d",
                "width": width,
                "saturation": sat if trained else None,
                "intrinsic_dimension": max(1, round(sat * width)) if trained else None,
                "samples": 50_000 * rf["input_size"] ** 2 if trained else None,  # positions
                "r_min": rf["r"],
                "r_max": rf["r"],
                "unproductive": unproductive,
                "critical": rf["r"] > resolution and not unproductive,
                "tail": trained and i >= 8,
            }
        )
    layers.append(
        {
            "name": "classifier",
            "type": "Linear",
            "width": 10,
            "saturation": 0.8 if trained else None,
            "intrinsic_dimension": 8 if trained else None,
            "samples": 50_000 if trained else None,
            "r_min": None,
            "r_max": None,
            "unproductive": False,
            "critical": False,
            "tail": False,
        }
    )
    border = next(layer["name"] for layer in layers if layer["unproductive"])
    history = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_accuracy": 1 - 0.5 / e,
            "eval_loss": 2.2 / e,
            "eval_accuracy": 0.95 - 0.5 / e,
            "lr": 0.1,
            "seconds": 12.5,
        }
        for e in range(1, epochs + 1)
    ]
    # Saturation settles within the first epochs: start near 0.35, approach the final profile.
    saturation_history = [
        {
            "epoch": e,
            "layers": {
                layer["name"]: round(
                    layer["saturation"]
                    + (0.35 - layer["saturation"]) * (0.5 ** (e - 1) - 0.5 ** (epochs - 1)),
                    4,
                )
                for layer in layers
            },
        }
        for e in range(1, epochs + 1)
        if trained
    ]
    training = {
        "status": "completed",
        "reason": None,
        "epochs": epochs,
        "eval_name": "val",
        "accuracy": history[-1]["eval_accuracy"],
        "params": 14_728_266,
        "macs": 313_478_154,
        "wall_time": 12.5 * epochs,
        "images_per_second": 3980.4,
        "device": "cuda",
        "history": history,
        "saturation_history": saturation_history,
    }
    tail_finding = {
        "kind": "tail",
        "layers": [f"conv{i}" for i in range(8, 14)],
        "message": "conv8–conv13 form a tail: saturation drops from 0.12 to 0.02 while their "
        "receptive field already exceeds the 32 px input.",
        "evidence": {"median_before": 0.44, "median_tail": 0.05, "border_layer": "conv8"},
        "predicted": False,
    }
    recommendations = [
        {
            "kind": "remove_tail",
            "title": "Remove the tail: 7 conv layers instead of 13",
            "changes": {"depth": [13, 7]},
            "knobs": {"depth": 7, "kernel_size": 3, "width": 64},
            "resolution": resolution,
            "rationale": "The tail layers add compute but no accuracy.",
            "cost": {
                "macs": 201_000_000,
                "params": 2_300_000,
                "macs_ratio": 0.641,
                "params_ratio": 0.156,
            },
            "unproductive_after": 0,
            "set_args": "--set depth=7",
        },
        {
            "kind": "raise_resolution",
            "title": "Raise the input resolution to 64 px",
            "changes": {"resolution": [resolution, 64]},
            "knobs": {"depth": 13, "kernel_size": 3, "width": 64},
            "resolution": 64,
            "rationale": "At 64 px the receptive field fits the image up to conv10.",
            "cost": {
                "macs": 1_254_000_000,
                "params": 14_728_266,
                "macs_ratio": 4.0,
                "params_ratio": 1.0,
            },
            "unproductive_after": 3,
            "set_args": "--set resolution=64",
        },
    ]
    return {
        "schema": SCHEMA,
        "name": "vgg16-cifar10",
        "command": "satadvisor analyze vgg --dataset cifar10 --resolution 32 --epochs 5 --seed 0",
        "seed": 0,
        "model": {"name": "VGG16", "source": "vgg"},
        "knobs": {"depth": 13, "kernel_size": 3, "width": 64},
        "dataset": "cifar10",
        "resolution": resolution,
        "training": training if trained else None,
        "cost": {"macs": 313_478_154, "params": 14_728_266},
        "layers": layers,
        "receptive_field": {
            "supported": True,
            "reason": None,
            "feasible_range": [rfs[-2]["input_r"], rfs[-1]["r"]],
            "border_layer": border,
        },
        "findings": [{**tail_finding, "predicted": not trained}],
        "recommendations": recommendations,
        "verdict": "VGG16 has a 6-layer tail at 32 px; remove it or raise the input resolution.",
        "environment": {
            "versions": {"satadvisor": "0.1.0", "python": "3.11.9", "torch": "2.5.1"},
            "device": "cuda",
            "device_name": "NVIDIA H100 80GB HBM3",
            "platform": "Linux-6.8.0-x86_64-with-glibc2.36",
            "time": "2025-11-21T10:52:00+00:00",
        },
    }


@pytest.fixture()
def analysis() -> dict[str, Any]:
    return make_analysis()


def test_fixture_matches_published_vgg16_receptive_fields() -> None:
    # DESIGN.md calibration: at 32 px VGG16 is unproductive exactly from conv8 and conv7
    # (reading r_min = 32) is critical; the receptive field of conv13 is 196 px.
    a = make_analysis()
    flags = {layer["name"]: layer for layer in a["layers"]}
    assert [n for n, layer in flags.items() if layer["unproductive"]] == [
        f"conv{i}" for i in range(8, 14)
    ]
    assert flags["conv7"]["critical"] and not flags["conv6"]["critical"]
    assert flags["conv13"]["r_min"] == 196


# ---------------------------------------------------------------------------------------------
# Files


def test_write_analysis_writes_the_four_files(tmp_path: Path, analysis: dict[str, Any]) -> None:
    index = write_analysis(analysis, tmp_path / "report")
    out = tmp_path / "report"
    assert index == out / "index.html"
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "index.html",
        "analysis.json",
        "layers.csv",
        "plotly.min.js",
    }
    written = json.loads((out / "analysis.json").read_text("utf-8"))
    # what it was given, plus each recommendation's reproducing command
    assert {k: v for k, v in written.items() if k != "recommendations"} == {
        k: v for k, v in analysis.items() if k != "recommendations"
    }
    assert [{k: v for k, v in r.items() if k != "command"} for r in written["recommendations"]] == (
        analysis["recommendations"]
    )
    assert [r["command"] for r in written["recommendations"]] == [
        "satadvisor analyze vgg --dataset cifar10 --resolution 32 --epochs 5 --seed 0 "
        "--set depth=7 --name vgg16-cifar10-try1",
        # the recommendation sets the resolution: the run's --resolution is left out
        "satadvisor analyze vgg --dataset cifar10 --epochs 5 --seed 0 --set resolution=64 "
        "--name vgg16-cifar10-try2",
    ]
    assert (out / "analysis.json").read_text("utf-8").startswith('{\n  "schema"')
    assert (out / "plotly.min.js").read_text("utf-8") == get_plotlyjs()
    page = index.read_text("utf-8")
    assert '<script src="plotly.min.js"></script>' in page
    # Self-contained: nothing loaded over the network.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_layers_csv_has_the_exact_columns_and_values(
    tmp_path: Path, analysis: dict[str, Any]
) -> None:
    write_analysis(analysis, tmp_path)
    rows = list(csv.reader(io.StringIO((tmp_path / "layers.csv").read_text("utf-8"))))
    assert tuple(rows[0]) == LAYER_COLUMNS == (
        "name", "type", "width", "saturation", "saturation_se", "intrinsic_dimension", "samples",
        "r_min", "r_max", "unproductive", "critical", "tail", "label",
    )  # fmt: skip
    assert len(rows) == 1 + 14
    conv8 = dict(zip(rows[0], rows[8], strict=True))
    assert conv8 == {
        "name": "conv8",
        "type": "Conv2d",
        "width": "512",
        "saturation": "0.17",
        "saturation_se": "",  # a hand-made analysis without standard errors
        "intrinsic_dimension": "87",
        "samples": str(50_000 * 4**2),
        "r_min": "60",
        "r_max": "60",
        "unproductive": "true",
        "critical": "false",
        "tail": "true",
        "label": "conv8",  # a dict without labels (an older analysis.json): the name
    }
    classifier = dict(zip(rows[0], rows[-1], strict=True))
    assert classifier["r_min"] == "" and classifier["tail"] == "false"


def test_non_finite_values_become_null_in_json_and_page(tmp_path: Path) -> None:
    a = make_analysis()
    a["training"]["history"][-1]["train_loss"] = math.nan
    a["training"]["history"][-1]["eval_loss"] = math.inf
    a["training"]["status"] = "diverged"
    a["training"]["reason"] = "training loss became nan in epoch 5"
    write_analysis(a, tmp_path)

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads((tmp_path / "analysis.json").read_text("utf-8"), parse_constant=reject)
    assert data["training"]["history"][-1]["train_loss"] is None
    page = (tmp_path / "index.html").read_text("utf-8")
    assert "NaN" not in page and "Infinity" not in page
    assert "Training diverged: training loss became nan in epoch 5." in page


def test_unknown_schema_is_a_usage_error(tmp_path: Path, analysis: dict[str, Any]) -> None:
    analysis["schema"] = "satadvisor.analysis/99"
    with pytest.raises(UsageError, match=r"analysis/99.*re-run"):
        write_analysis(analysis, tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# Page content


def _section_positions(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)"', page)


def test_sections_in_the_required_order(analysis: dict[str, Any]) -> None:
    page = render_analysis(analysis)
    assert _section_positions(page) == [
        "verdict",
        "saturation",
        "layers",
        "recommendations",
        "training",
        "reproduce",
    ]
    for figure in ("fig-profile", "fig-evolution", "fig-rf", "fig-loss", "fig-accuracy"):
        assert f'data-figure="{figure}-data"' in page
        assert f'<script type="application/json" id="{figure}-data">' in page


def test_verdict_lists_every_finding_and_recommendation(analysis: dict[str, Any]) -> None:
    page = render_analysis(analysis)
    verdict = page[page.index('<section id="verdict"') : page.index('<section id="saturation"')]
    assert html.escape(analysis["verdict"]) in verdict
    for finding in analysis["findings"]:
        assert html.escape(finding["message"]) in verdict
    for rec in analysis["recommendations"]:
        assert html.escape(rec["title"]) in verdict
    assert "0.64× MACs (−36 %)" in verdict
    assert "4.00× MACs (+300 %)" in verdict


def test_layer_table_rows_and_flags(analysis: dict[str, Any]) -> None:
    page = render_analysis(analysis)
    table = page[page.index('<table class="layers">') : page.index("</table>")]
    names = re.findall(r'<td class="name">([^<]*)</td>', table)
    assert names == [layer["name"] for layer in analysis["layers"]]
    rows = re.findall(r'<tr class="([^"]*)">\s*<td class="num muted">(\d+)</td>', table)
    classes = {int(i): cls.split() for cls, i in rows}
    assert classes[7] == ["critical"]
    assert classes[8] == ["tail", "unproductive", "border"]
    assert classes[13] == ["tail", "unproductive"]
    assert classes[14] == []
    # The border label sits right before conv8 and only there.
    assert table.count("receptive-field border") == 1
    assert table.index("receptive-field border") < table.index(">conv8<") < table.index(">conv9<")
    # Numbers: conv8 saturation 0.170, k = 87, 800,000 samples (4×4 positions), r_min 60.
    conv8 = table[table.index(">conv8<") : table.index(">conv9<")]
    assert "0.170" in conv8 and ">87<" in conv8 and ">800,000<" in conv8 and ">60<" in conv8
    # the border label spans every column after the index
    header = table[: table.index("</tr>")]
    assert f'colspan="{header.count("</th>") - 1}"' in table


def test_recommendation_cost_and_commands(analysis: dict[str, Any]) -> None:
    page = render_analysis(analysis)
    recs = page[page.index('<section id="recommendations"') : page.index('<section id="training"')]
    first = recs[recs.index('id="rec-1"') : recs.index('id="rec-2"')]
    # depth 13 → 7 from the knobs diff; cost bars and ratio vs baseline.
    assert re.search(r"<td>depth</td><td>13</td><td[^>]*>→</td><td[^>]*>7</td>", first)
    assert "0.64×" in first and "201 M" in first and "−36 %" in first
    assert "0.16×" in first and "2.3 M" in first
    assert "<code>--set depth=7</code>" in first
    assert (
        "<code>satadvisor analyze vgg --dataset cifar10 --resolution 32 --epochs 5 --seed 0 "
        "--set depth=7 --name vgg16-cifar10-try1</code>" in first
    )
    second = recs[recs.index('id="rec-2"') :]
    assert re.search(r"<td>resolution</td><td>32 px</td><td[^>]*>→</td><td[^>]*>64 px</td>", second)
    assert "4.00×" in second and "1.25 G" in second
    assert (
        "<code>satadvisor analyze vgg --dataset cifar10 --epochs 5 --seed 0 --set resolution=64 "
        "--name vgg16-cifar10-try2</code>" in second
    )


def test_try_command_repeats_the_run_with_the_change_in_its_own_folder(
    analysis: dict[str, Any],
) -> None:
    from satadvisor.report._analysis import with_commands

    analysis["command"] = (
        "satadvisor analyze 'my models/net.py' --dataset imagefolder:data --data-dir /d "
        "--epochs auto --max-epochs 12 --subset 500 --batch-size 32 --lr 0.1 --seed 3 "
        "--device cpu --set width=32 --name first --json -q --resolution=32"
    )
    first, second = (r["command"] for r in with_commands(analysis)["recommendations"])
    assert first == (
        "satadvisor analyze 'my models/net.py' --dataset imagefolder:data --data-dir /d "
        "--epochs auto --max-epochs 12 --subset 500 --batch-size 32 --lr 0.1 --seed 3 "
        "--device cpu --set width=32 --resolution=32 --set depth=7 --name vgg16-cifar10-try1"
    )
    assert "--resolution" not in second.replace("--set resolution=64", "")


def test_set_args_without_option_get_set_prefix_and_paths_are_quoted(
    analysis: dict[str, Any],
) -> None:
    analysis["model"]["source"] = "my models/net.py"
    analysis["recommendations"][0]["set_args"] = "depth=7"
    analysis["dataset"] = "imagefolder:my data"
    analysis["command"] = "python my_script.py"  # analysed from Python: built from the analysis
    page = render_analysis(analysis)
    expected = (
        "<code>satadvisor analyze &#39;my models/net.py&#39; --dataset &#39;imagefolder:my data&#39; "
        "--resolution 32 --set depth=7</code>"
    )
    assert expected in page


def test_reproduce_section_records_command_seed_versions_device_time(
    analysis: dict[str, Any],
) -> None:
    page = render_analysis(analysis)
    repro = page[page.index('<section id="reproduce"') :]
    assert f"<code>{analysis['command']}</code>" in repro
    for text in ("<dt>seed</dt><dd>0</dd>", "<dt>torch</dt><dd>2.5.1</dd>",
                 "cuda (NVIDIA H100 80GB HBM3)", "2025-11-21T10:52:00+00:00"):  # fmt: skip
        assert text in repro


def test_no_train_analysis_has_rf_table_and_note_but_no_saturation_or_training() -> None:
    a = make_analysis(trained=False)
    page = render_analysis(a)
    assert _section_positions(page) == ["verdict", "layers", "recommendations", "reproduce"]
    assert "Not trained (--no-train)" in page
    assert "fig-profile" not in page and "fig-loss" not in page and "fig-evolution" not in page
    assert 'data-figure="fig-rf-data"' in page  # the training-free chart stays
    table = page[page.index('<table class="layers">') : page.index("</table>")]
    assert table.count('<td class="name">') == 14
    assert '<span class="badge predicted">training-free (receptive field)</span>' in page


def test_unsupported_receptive_field_shows_the_reason(analysis: dict[str, Any]) -> None:
    analysis["receptive_field"] = {
        "supported": False,
        "reason": "adaptive pooling before conv3 cannot be traced",
        "feasible_range": None,
        "border_layer": None,
    }
    for layer in analysis["layers"]:
        layer.update(r_min=None, r_max=None, unproductive=False, critical=False)
    page = render_analysis(analysis)
    assert "Receptive-field analysis not available: adaptive pooling before conv3" in page
    assert "fig-rf" not in page and "receptive-field border:" not in page


def test_tail_legend_only_when_there_is_a_tail(analysis: dict[str, Any]) -> None:
    assert "tail: saturation far below the rest" in render_analysis(analysis)
    for layer in analysis["layers"]:
        layer["tail"] = False
    page = render_analysis(analysis)
    assert "tail: saturation far below the rest" not in page
    assert "unproductive: every input the layer reads" in page


def test_no_recommendations_says_so(analysis: dict[str, Any]) -> None:
    analysis["recommendations"] = []
    page = render_analysis(analysis)
    assert "No changes recommended for this architecture at 32 px." in page


# ---------------------------------------------------------------------------------------------
# Escaping


def _hostile() -> dict[str, Any]:
    a = make_analysis()
    a["model"]["name"] = EVIL
    a["model"]["source"] = f"/tmp/{EVIL}.py"
    a["name"] = EVIL
    a["dataset"] = f"imagefolder:{EVIL}"
    a["command"] = f"satadvisor analyze '{EVIL}'"
    a["knobs"]["activation"] = EVIL
    a["layers"][2]["name"] = EVIL
    a["layers"][2]["type"] = EVIL
    a["training"]["saturation_history"][0]["layers"][EVIL] = 0.5
    a["training"]["eval_name"] = EVIL
    a["receptive_field"]["border_layer"] = EVIL
    a["findings"][0]["message"] = EVIL
    a["findings"][0]["evidence"][EVIL] = EVIL
    a["recommendations"][0]["title"] = EVIL
    a["recommendations"][0]["rationale"] = EVIL
    a["recommendations"][0]["knobs"]["activation"] = f"{EVIL}2"
    a["recommendations"][0]["set_args"] = f"--set activation='{EVIL}'"
    a["verdict"] = EVIL
    a["environment"]["versions"][EVIL] = EVIL
    a["environment"]["device_name"] = EVIL
    return a


def test_user_strings_are_escaped_everywhere_including_plot_json() -> None:
    page = render_analysis(_hostile())
    assert EVIL not in page
    assert "alert(1)" in page  # the strings are there, only escaped
    assert html.escape(EVIL) in page
    # Every <script> element is one we opened: inline JS, plotly, five JSON figures.
    assert page.count("<script") == page.count("</script>") == 2 + 5
    # Inside the JSON, '<' is written \u003c and decodes back to the original string.
    blob = re.search(r'id="fig-profile-data">(.*?)</script>', page, re.S)
    assert blob is not None
    figure = json.loads(blob.group(1))
    xs = [x for trace in figure["data"] for x in trace["x"]]
    assert html.escape(EVIL, quote=False) in xs  # escaped for plotly's HTML-like labels


def test_script_json_escapes_script_breakers() -> None:
    from satadvisor.report._page import script_json

    text = str(script_json({"a": "</script><!-- & \u2028"}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


# ---------------------------------------------------------------------------------------------
# Plot data (two steps: data object, then figure dict)


def test_profile_data_is_forward_order_with_tail_and_border(analysis: dict[str, Any]) -> None:
    data = _plots_analysis.profile_data(analysis)
    assert data is not None
    assert data.layers == tuple(layer["name"] for layer in analysis["layers"])
    assert data.saturation[:13] == VGG_SATURATION
    assert data.border_layer == "conv8" and data.border_index == 7
    assert [n for n, t in zip(data.layers, data.tail, strict=True) if t] == [
        f"conv{i}" for i in range(8, 14)
    ]


def test_profile_figure_colors_tail_hatches_unproductive_marks_border(
    analysis: dict[str, Any],
) -> None:
    analysis["layers"][13]["unproductive"] = True  # a non-tail unproductive layer, for the hatch
    data = _plots_analysis.profile_data(analysis)
    assert data is not None
    fig = _plots_analysis.profile_figure(data)
    go.Figure(fig)  # plotly's own validator: every property exists
    style = {
        x: (trace["marker"]["color"], trace["marker"]["pattern"]["shape"], y)
        for trace in fig["data"]
        for x, y in zip(trace["x"], trace["y"], strict=True)
    }
    assert set(style) == set(data.layers)
    for i in range(1, 8):
        assert style[f"conv{i}"][:2] == (_plots.COLOR_LAYER, "")
    for i in range(8, 14):
        assert style[f"conv{i}"][:2] == (_plots.COLOR_TAIL, _plots.HATCH_UNPRODUCTIVE)
    assert style["classifier"][:2] == (_plots.COLOR_LAYER, _plots.HATCH_UNPRODUCTIVE)
    assert style["conv5"][2] == 0.48
    # Category order is forward order; the border line sits between conv7 (6) and conv8 (7).
    assert fig["layout"]["xaxis"]["categoryarray"] == list(data.layers)
    (shape,) = fig["layout"]["shapes"]
    assert shape["x0"] == shape["x1"] == 6.5
    assert "receptive-field border" in fig["layout"]["annotations"][0]["text"]


def test_profile_without_border_has_no_marker(analysis: dict[str, Any]) -> None:
    analysis["receptive_field"]["border_layer"] = None
    data = _plots_analysis.profile_data(analysis)
    assert data is not None
    assert "shapes" not in _plots_analysis.profile_figure(data)["layout"]


def test_evolution_data_matches_the_history(analysis: dict[str, Any]) -> None:
    del analysis["training"]["saturation_history"][0]["layers"]["conv3"]
    data = _plots_analysis.evolution_data(analysis)
    assert data is not None
    assert data.layers == tuple(layer["name"] for layer in analysis["layers"])
    assert data.epochs == (1, 2, 3, 4, 5)
    history = analysis["training"]["saturation_history"]
    row = data.layers.index("conv9")
    assert data.saturation[row] == tuple(h["layers"]["conv9"] for h in history)
    assert data.saturation[data.layers.index("conv3")][0] is None  # missing → gap
    fig = _plots_analysis.evolution_figure(data)
    go.Figure(fig)
    assert fig["data"][0]["z"][row][-1] == pytest.approx(0.09)
    ticks = dict(
        zip(fig["layout"]["yaxis"]["tickvals"], fig["layout"]["yaxis"]["ticktext"], strict=True)
    )
    assert _plots.COLOR_TAIL in ticks["conv8"] and _plots.COLOR_TAIL not in ticks["conv7"]


def test_curves_and_rf_figures(analysis: dict[str, Any]) -> None:
    curves = _plots_analysis.curves_data(analysis)
    assert curves is not None
    assert curves.epochs == (1, 2, 3, 4, 5)
    assert curves.eval_loss == tuple(2.2 / e for e in range(1, 6))
    loss, acc = _plots_analysis.loss_figure(curves), _plots_analysis.accuracy_figure(curves)
    go.Figure(loss), go.Figure(acc)
    assert [t["name"] for t in acc["data"]] == ["train", "val"]
    assert acc["data"][1]["y"] == [0.95 - 0.5 / e for e in range(1, 6)]
    rf = _plots_analysis.receptive_field_data(analysis)
    assert rf is not None
    fig = _plots_analysis.receptive_field_figure(rf)
    go.Figure(fig)
    r_min = next(t for t in fig["data"] if t["name"] == "r_min")
    assert r_min["y"][:8] == [3, 5, 10, 14, 24, 32, 40, 60]
    assert r_min["marker"]["color"][7] == _plots.COLOR_TAIL  # conv8 unproductive
    assert r_min["marker"]["color"][6] == _plots.COLOR_LAYER
    line = next(t for t in fig["data"] if t["name"].startswith("input"))
    assert line["y"] == [32, 32]
    assert fig["layout"]["shapes"][0]["x0"] == 6.5


def test_no_train_has_no_training_plots() -> None:
    a = make_analysis(trained=False)
    assert _plots_analysis.profile_data(a) is None
    assert _plots_analysis.evolution_data(a) is None
    assert _plots_analysis.curves_data(a) is None
    assert _plots_analysis.receptive_field_data(a) is not None


# ---------------------------------------------------------------------------------------------
# Atomic output


def test_failure_while_rendering_or_writing_keeps_the_previous_report(
    tmp_path: Path, analysis: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    write_analysis(analysis, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    from satadvisor.report import _page

    def crash() -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_page, "plotly_js", crash)  # runs after the first files are staged
    changed = make_analysis(epochs=3)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_analysis(changed, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging leftovers

    monkeypatch.undo()
    write_analysis(changed, out)
    assert json.loads((out / "analysis.json").read_text("utf-8"))["training"]["epochs"] == 3


def test_unwritable_target_is_an_output_error(tmp_path: Path, analysis: dict[str, Any]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError) as info:
        write_analysis(analysis, blocker / "sub")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write report to {blocker / 'sub'}: ")
    assert message.endswith("; pass --out with a writable directory")


def test_existing_foreign_directory_is_not_replaced(
    tmp_path: Path, analysis: dict[str, Any]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds files satadvisor did not write"):
        write_analysis(analysis, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------------------------------------
# Real browser


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _headless(browser: str, index: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={index.parent.parent / 'chrome-profile'}",
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["vgg", "hostile", "no-train"])
def test_page_renders_charts_in_a_real_browser(tmp_path: Path, variant: str) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    a = {
        "vgg": make_analysis,
        "hostile": _hostile,
        "no-train": lambda: make_analysis(trained=False),
    }[variant]()
    index = write_analysis(copy.deepcopy(a), tmp_path / "report")
    result = _headless(browser, index, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    expected = 1 if variant == "no-train" else 5
    # Plotly draws each chart into <svg class="main-svg">: every figure div got its chart.
    drawn = re.findall(
        r'<div class="plot[^"]*" id="(fig-[a-z]+)"[^>]*>\s*<div[^>]*plot-container', dom
    )
    assert len(drawn) == expected, drawn
    assert dom.count('class="main-svg"') >= expected
    assert 'class="plot plot-missing"' not in dom
    assert EVIL not in dom  # no injected element survived into the live DOM
    console = [
        line
        for line in result.stderr.splitlines()
        if "CONSOLE" in line and ("index.html" in line or "plotly.min.js" in line)
    ]
    assert console == [], console


@pytest.mark.integration
def test_page_without_plotly_bundle_says_where_the_charts_went(
    tmp_path: Path, analysis: dict[str, Any]
) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    index = write_analysis(analysis, tmp_path / "report")
    (tmp_path / "report" / "plotly.min.js").unlink()
    dom = _headless(browser, index, "--dump-dom").stdout
    assert dom.count('class="plot plot-missing"') == 5
    assert "plotly.min.js was not found next to this page" in dom


def test_single_file_report_holds_plotly_and_writes_no_bundle(
    tmp_path: Path, analysis: dict[str, Any]
) -> None:
    index = write_report(analysis, tmp_path / "report", single_file=True)
    assert sorted(
        p.name for p in (tmp_path / "report").iterdir() if not p.name.startswith(".")
    ) == [
        "analysis.json",
        "index.html",
        "layers.csv",
    ]
    page = index.read_text("utf-8")
    assert 'src="plotly.min.js"' not in page
    assert plotly_js() in page  # the installed bundle, inlined verbatim (it holds no </script)
    # nothing of ours loads over the network (plotly's own strings hold links it never loads
    # offline, as in the folder's plotly.min.js)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.replace(plotly_js(), ""))


@pytest.mark.integration
def test_single_file_report_opens_alone_in_a_real_browser(
    tmp_path: Path, analysis: dict[str, Any]
) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    index = write_report(analysis, tmp_path / "report", single_file=True)
    alone = tmp_path / "shared" / "sent.html"  # the file on its own, as someone received it
    alone.parent.mkdir()
    shutil.copy(index, alone)
    dom = _headless(browser, alone, "--dump-dom").stdout
    drawn = re.findall(
        r'<div class="plot[^"]*" id="(fig-[a-z]+)"[^>]*>\s*<div[^>]*plot-container', dom
    )
    assert len(drawn) == 5, drawn
    assert 'class="plot plot-missing"' not in dom
