"""The analysis report: files, page content and order, escaping, plot data, atomicity, browser.

Every page here renders what the library really returns: a real ``satadvisor.analyze`` of the
embedded default (a VGG-style network on digits at 16 px), written to ``analysis.json`` and read
back with ``AnalysisRecord.from_dict``. A situation a tiny run cannot produce (a measured tail,
a diverged run, hostile strings) is made with ``dataclasses.replace`` on a real record.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch
from plotly.offline import get_plotlyjs

from satadvisor import analyze
from satadvisor.advisor import Analysis
from satadvisor.analysis_record import AnalysisRecord, ReceptiveFieldSummary
from satadvisor.config import TrainConfig
from satadvisor.errors import OutputError, UsageError
from satadvisor.report import (
    LAYER_COLUMNS,
    _plots,
    _plots_analysis,
    render_analysis,
    with_commands,
    write_analysis,
    write_report,
)
from satadvisor.report._page import plotly_js

EVIL = "<script>alert(1)</script>"
QUICK = TrainConfig(epochs=2, batch_size=32, device="cpu")
#: The command line of a CLI run of the trained analysis (a test run has pytest's).
CLI = "satadvisor analyze vgg --dataset digits --resolution 16 --epochs 2 --seed 0"
#: The default network's layers as the page names them, and their qualified names.
LABELS = [f"conv{i}" for i in range(1, 9)] + ["classifier"]
NAMES = [f"features.conv{i}" for i in range(1, 9)] + ["classifier"]


@pytest.fixture(scope="session")
def one_core() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _through_json(analysis: Analysis, out: Path) -> AnalysisRecord:
    """The record as ``analysis.json`` holds it (written by the report, read back)."""
    write_report(analysis, out)
    return AnalysisRecord.from_dict(json.loads((out / "analysis.json").read_text("utf-8")))


@pytest.fixture(scope="session")
def live(one_core: None) -> Analysis:
    """The embedded default trained for 2 epochs on digits: it learns (a test below checks)."""
    return analyze(config=QUICK)


@pytest.fixture(scope="session")
def trained_record(live: Analysis, tmp_path_factory: pytest.TempPathFactory) -> AnalysisRecord:
    return _through_json(live, tmp_path_factory.mktemp("trained") / "report")


@pytest.fixture(scope="session")
def untrained_record(one_core: None, tmp_path_factory: pytest.TempPathFactory) -> AnalysisRecord:
    return _through_json(analyze(train=False), tmp_path_factory.mktemp("untrained") / "report")


@pytest.fixture()
def analysis(trained_record: AnalysisRecord) -> AnalysisRecord:
    """The trained record as if run from the command line (so "try it" repeats that run)."""
    return replace(trained_record, command=CLI)


def with_tail(record: AnalysisRecord, *labels: str) -> AnalysisRecord:
    """``record`` with a measured tail on the layers ``labels``."""
    return replace(
        record, layers=tuple(replace(row, tail=row.label in labels) for row in record.layers)
    )


def test_the_real_analysis_learned_and_predicts_a_tail_at_16px(
    trained_record: AnalysisRecord, untrained_record: AnalysisRecord
) -> None:
    # What the tests below rely on, from the receptive-field recurrence r += (k−1)·j, j *= s of
    # the default network (3×3 convs, a 2×2 pool after conv2, conv4 and conv6... at 16 px)
    assert trained_record.training is not None and trained_record.training.learned
    for record in (trained_record, untrained_record):
        assert [row.label for row in record.layers] == LABELS
        assert [row.name for row in record.layers] == NAMES
        assert [row.r_min for row in record.layers] == [3, 5, 10, 14, 18, 28, 36, 44, None]
        assert [row.unproductive for row in record.layers] == [False] * 5 + [True] * 3 + [False]
        assert [row.critical for row in record.layers] == [False] * 4 + [True] + [False] * 4
        assert record.receptive_field.border_layer == "features.conv6"
        assert record.recommendations[0].changes == {"depth": 5}


def test_vgg16_matches_the_published_receptive_fields(one_core: None) -> None:
    # DESIGN.md calibration: at 32 px VGG16 is unproductive exactly from conv8 and conv7
    # (reading r_min = 32) is critical; the receptive field of conv13 is 196 px.
    record = analyze("vgg16", train=False, dataset="synthetic", resolution=32).record()
    rows = {row.label: row for row in record.layers}
    assert [label for label, row in rows.items() if row.unproductive] == [
        f"conv{i}" for i in range(8, 14)
    ]
    assert rows["conv7"].critical and not rows["conv6"].critical
    assert rows["conv13"].r_min == 196


# ---------------------------------------------------------------------------------------------
# Files


def test_write_analysis_writes_the_four_files(tmp_path: Path, analysis: AnalysisRecord) -> None:
    second = analysis.recommendations[1]
    raises = replace(second, changes={"resolution": 32}, knobs=analysis.knobs, resolution=32)
    analysis = replace(analysis, recommendations=(analysis.recommendations[0], raises))
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
    # the record, plus each recommendation's reproducing command
    expected = analysis.to_dict()
    assert {k: v for k, v in written.items() if k != "recommendations"} == {
        k: v for k, v in expected.items() if k != "recommendations"
    }
    assert [{k: v for k, v in r.items() if k != "command"} for r in written["recommendations"]] == (
        expected["recommendations"]
    )
    assert [r["command"] for r in written["recommendations"]] == [
        f"{CLI} --set depth=5 --name vgg-try1",
        # the recommendation sets the resolution: the run's --resolution is left out
        "satadvisor analyze vgg --dataset digits --epochs 2 --seed 0 --set resolution=32 "
        "--name vgg-try2",
    ]
    assert AnalysisRecord.from_dict(written) == analysis
    assert (out / "analysis.json").read_text("utf-8").startswith('{\n  "schema"')
    assert (out / "plotly.min.js").read_text("utf-8") == get_plotlyjs()
    page = index.read_text("utf-8")
    assert '<script src="plotly.min.js"></script>' in page
    # Self-contained: nothing loaded over the network.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_write_report_takes_the_analysis_its_record_or_the_loaded_dict(
    tmp_path: Path, live: Analysis, trained_record: AnalysisRecord
) -> None:
    pages = []
    for i, result in enumerate((live, live.record(), live.to_dict(), trained_record)):
        index = write_report(result, tmp_path / str(i))
        pages.append(json.loads((index.parent / "analysis.json").read_text("utf-8")))
    assert pages[0] == pages[1] == pages[2] == pages[3]


def test_layers_csv_has_the_exact_columns_and_values(
    tmp_path: Path, analysis: AnalysisRecord, live: Analysis
) -> None:
    write_analysis(analysis, tmp_path)
    rows = list(csv.reader(io.StringIO((tmp_path / "layers.csv").read_text("utf-8"))))
    assert tuple(rows[0]) == LAYER_COLUMNS == (
        "name", "type", "width", "saturation", "saturation_se", "intrinsic_dimension", "samples",
        "r_min", "r_max", "unproductive", "critical", "tail", "label",
    )  # fmt: skip
    assert len(rows) == 1 + 9
    conv6 = dict(zip(rows[0], rows[6], strict=True))
    measured = next(s for s in live.profile if s.name == "features.conv6")  # the live tracker's
    assert conv6 == {
        "name": "features.conv6",
        "type": "Conv2d",
        "width": "64",
        "saturation": repr(measured.saturation),
        "saturation_se": repr(measured.saturation_se),
        "intrinsic_dimension": str(measured.intrinsic_dimension),
        "samples": str(measured.samples),
        "r_min": "28",
        "r_max": "28",
        "unproductive": "true",
        "critical": "false",
        "tail": "false",
        "label": "conv6",
    }
    assert int(conv6["intrinsic_dimension"]) / 64 == pytest.approx(float(conv6["saturation"]))
    classifier = dict(zip(rows[0], rows[-1], strict=True))
    assert classifier["r_min"] == "" and classifier["tail"] == "false"
    assert classifier["type"] == "Linear" and classifier["width"] == "10"


def test_non_finite_values_become_null_in_json_and_page(
    tmp_path: Path, analysis: AnalysisRecord
) -> None:
    training = analysis.training
    assert training is not None
    last = replace(training.history[-1], train_loss=math.nan, eval_loss=math.inf)
    training = replace(
        training,
        history=(*training.history[:-1], last),
        status="diverged",
        reason="training loss became nan in epoch 2",
    )
    write_analysis(replace(analysis, training=training), tmp_path)

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads((tmp_path / "analysis.json").read_text("utf-8"), parse_constant=reject)
    assert data["training"]["history"][-1]["train_loss"] is None
    assert data["training"]["history"][-1]["eval_loss"] is None
    page = (tmp_path / "index.html").read_text("utf-8")
    assert "NaN" not in page and "Infinity" not in page
    assert "Training diverged: training loss became nan in epoch 2." in page


def test_unknown_schema_is_a_usage_error(tmp_path: Path, analysis: AnalysisRecord) -> None:
    d = {**analysis.to_dict(), "schema": "satadvisor.analysis/99"}
    for write in (write_analysis, write_report):
        with pytest.raises(UsageError, match=r"analysis/99.*re-run") as info:
            write(d, tmp_path / "r")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# Page content


def _section_positions(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)"', page)


def test_sections_in_the_required_order(analysis: AnalysisRecord) -> None:
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


def test_verdict_lists_every_finding_and_recommendation(analysis: AnalysisRecord) -> None:
    page = render_analysis(analysis)
    verdict = page[page.index('<section id="verdict"') : page.index('<section id="saturation"')]
    text = html.unescape(verdict)
    # the lead (e.g. the profile had not settled) stands above the rest of the verdict
    lead = " ".join(analysis.lead)
    assert analysis.verdict.startswith(lead)
    assert lead in text and analysis.verdict[len(lead) :].strip() in text
    assert analysis.findings
    for finding in analysis.findings:
        # the verdict's own finding is pointed at, not said twice
        assert finding.message[1:] in text
    for rec in analysis.recommendations:
        assert rec.title in text
    # the predicted costs of depth 5 and of two downsamplings against the default network's
    assert "0.51× MACs (−49 %)" in verdict
    assert "3.47× MACs (+247 %)" in verdict


def test_layer_table_rows_and_flags(analysis: AnalysisRecord, live: Analysis) -> None:
    page = render_analysis(with_tail(analysis, "conv7", "conv8"))
    table = page[page.index('<table class="layers">') : page.index("</table>")]
    assert re.findall(r'<td class="name">([^<]*)', table) == [
        f"{label} " for label in LABELS[:-1]
    ] + [
        "classifier"  # its label is its name: no qualified name beside it
    ]
    assert re.findall(r'<span class="muted">(features\.conv\d)</span>', table) == NAMES[:-1]
    rows = re.findall(r'<tr class="([^"]*)">\s*<td class="num muted">(\d+)</td>', table)
    classes = {int(i): cls.split() for cls, i in rows}
    assert classes[5] == ["critical"]
    assert classes[6] == ["unproductive", "border"]
    assert classes[7] == classes[8] == ["tail", "unproductive"]
    assert classes[9] == []
    # The border label sits right before conv6 and only there.
    assert table.count("receptive-field border") == 1
    assert table.index("receptive-field border") < table.index(">conv6 <") < table.index(">conv7 <")
    # Numbers: conv6's saturation and k as the tracker measured them, its samples, r_min 28.
    measured = next(s for s in live.profile if s.name == "features.conv6")
    conv6 = table[table.index(">conv6 <") : table.index(">conv7 <")]
    assert f"{measured.saturation:.3f}" in conv6
    assert f">{measured.intrinsic_dimension}<" in conv6
    assert f">{measured.samples:,}<" in conv6 and ">28<" in conv6
    # the border label spans every column after the index
    header = table[: table.index("</tr>")]
    assert f'colspan="{header.count("</th>") - 1}"' in table


def test_recommendation_cost_and_commands(analysis: AnalysisRecord) -> None:
    page = render_analysis(analysis)
    recs = page[page.index('<section id="recommendations"') : page.index('<section id="training"')]
    first = recs[recs.index('id="rec-1"') : recs.index('id="rec-2"')]
    # depth 8 → 5 from the knobs diff; cost bars and ratio vs baseline.
    assert re.search(r"<td>depth</td><td>8</td><td[^>]*>→</td><td[^>]*>5</td>", first)
    assert "0.51×" in first and "1.81 M" in first and "−49 %" in first
    assert "0.59×" in first and "70.5 k" in first
    assert "<code>--set depth=5</code>" in first
    assert f"<code>{CLI} --set depth=5 --name vgg-try1</code>" in first
    second = recs[recs.index('id="rec-2"') : recs.index('id="rec-3"')]
    assert re.search(r"<td>downsamplings</td><td>3</td><td[^>]*>→</td><td[^>]*>2</td>", second)
    assert "3.47×" in second and "12.4 M" in second
    assert f"<code>{CLI} --set downsamplings=2 --set stages=3 --name vgg-try2</code>" in second
    raises = replace(
        analysis.recommendations[0],
        changes={"resolution": 32},
        knobs=analysis.knobs,
        resolution=32,
    )
    page = render_analysis(replace(analysis, recommendations=(raises,)))
    assert re.search(r"<td>resolution</td><td>16 px</td><td[^>]*>→</td><td[^>]*>32 px</td>", page)
    assert (
        "<code>satadvisor analyze vgg --dataset digits --epochs 2 --seed 0 --set resolution=32 "
        "--name vgg-try1</code>" in page
    )


def test_try_command_repeats_the_run_with_the_change_in_its_own_folder(
    analysis: AnalysisRecord,
) -> None:
    analysis = replace(
        analysis,
        command=(
            "satadvisor analyze 'my models/net.py' --dataset imagefolder:data --data-dir /d "
            "--epochs auto --max-epochs 12 --subset 500 --batch-size 32 --lr 0.1 --seed 3 "
            "--device cpu --set width=32 --name first --json -q --no-train --resolution=32"
        ),
    )
    raises = replace(analysis.recommendations[1], changes={"resolution": 64}, resolution=64)
    analysis = replace(analysis, recommendations=(analysis.recommendations[0], raises))
    first, second = (r["command"] for r in with_commands(analysis)["recommendations"])
    assert first == (
        "satadvisor analyze 'my models/net.py' --dataset imagefolder:data --data-dir /d "
        "--epochs auto --max-epochs 12 --subset 500 --batch-size 32 --lr 0.1 --seed 3 "
        "--device cpu --set width=32 --resolution=32 --set depth=5 --name vgg-try1"
    )
    assert "--resolution" not in second.replace("--set resolution=64", "")


def test_the_short_options_a_try_command_drops_are_real_options() -> None:
    import click

    from satadvisor._flags import SHORT_OPTIONS, flag
    from satadvisor.cli import main

    params = main.commands["analyze"].params  # type: ignore[attr-defined]
    options = [p for p in params if isinstance(p, click.Option)]
    for name, short in SHORT_OPTIONS.items():
        assert any(flag(name) in o.opts and short in o.opts for o in options), name


def test_a_family_move_analyses_the_family_without_the_models_own_pins(
    analysis: AnalysisRecord,
) -> None:
    move = replace(analysis.recommendations[0], model="vgg", pins={"depth": 5, "width": 64})
    analysis = replace(
        analysis,
        command="satadvisor analyze vgg16 --dataset digits --set width=32 --resolution 16",
        recommendations=(move,),
    )
    (rec,) = with_commands(analysis)["recommendations"]
    assert rec["command"] == (
        "satadvisor analyze vgg --dataset digits --resolution 16 --set depth=5 --set width=64 "
        "--name vgg-try1"
    )
    assert "<code>vgg --set depth=5 --set width=64</code>" in render_analysis(analysis)


def test_paths_are_quoted_in_a_command_built_from_the_record(analysis: AnalysisRecord) -> None:
    analysis = replace(
        analysis,
        model_source="my models/net.py",
        dataset="imagefolder:my data",
        command="python my_script.py",  # analysed from Python: built from the record
    )
    page = render_analysis(analysis)
    expected = (
        "<code>satadvisor analyze &#39;my models/net.py&#39; --dataset &#39;imagefolder:my data&#39; "
        "--resolution 16 --set depth=5</code>"
    )
    assert expected in page
    assert "this analysis was not run from the command line" in page


def test_reproduce_section_records_command_seed_versions_device_time(
    analysis: AnalysisRecord,
) -> None:
    page = render_analysis(analysis)
    repro = page[page.index('<section id="reproduce"') :]
    assert f"<code>{analysis.command}</code>" in repro
    env = analysis.environment
    for text in (
        "<dt>seed</dt><dd>0</dd>",
        f"<dt>torch</dt><dd>{torch.__version__}</dd>",
        f"cpu ({html.escape(env['device_name'])})",
        env["time"],
    ):
        assert text in repro


def test_no_train_analysis_has_rf_table_and_note_but_no_saturation_or_training(
    untrained_record: AnalysisRecord,
) -> None:
    page = render_analysis(untrained_record)
    assert _section_positions(page) == ["verdict", "layers", "recommendations", "reproduce"]
    assert "Not trained (--no-train)" in page
    assert "fig-profile" not in page and "fig-loss" not in page and "fig-evolution" not in page
    assert 'data-figure="fig-rf-data"' in page  # the training-free chart stays
    table = page[page.index('<table class="layers">') : page.index("</table>")]
    assert table.count('<td class="name">') == 9
    assert '<span class="badge predicted">training-free (receptive field)</span>' in page


def test_unsupported_receptive_field_shows_the_reason(analysis: AnalysisRecord) -> None:
    analysis = replace(
        analysis,
        receptive_field=ReceptiveFieldSummary(
            supported=False, reason="adaptive pooling before conv3 cannot be traced"
        ),
        layers=tuple(
            replace(row, r_min=None, r_max=None, unproductive=False, critical=False)
            for row in analysis.layers
        ),
    )
    page = render_analysis(analysis)
    assert "Receptive-field analysis not available: adaptive pooling before conv3" in page
    assert "fig-rf" not in page and "receptive-field border:" not in page


def test_tail_legend_only_when_there_is_a_tail(analysis: AnalysisRecord) -> None:
    assert not any(row.tail for row in analysis.layers)  # the real run's tail is predicted
    assert "tail: saturation far below the rest" in render_analysis(with_tail(analysis, "conv8"))
    page = render_analysis(analysis)
    assert "tail: saturation far below the rest" not in page
    assert "unproductive: every input the layer reads" in page


def test_no_recommendations_says_so(analysis: AnalysisRecord) -> None:
    page = render_analysis(replace(analysis, recommendations=()))
    assert "No changes recommended for this architecture at 16 px." in page


# ---------------------------------------------------------------------------------------------
# Escaping


def _hostile(a: AnalysisRecord) -> AnalysisRecord:
    assert a.training is not None
    history = a.training.saturation_history
    finding, rec = a.findings[0], a.recommendations[0]
    return replace(
        a,
        model_name=EVIL,
        model_source=f"/tmp/{EVIL}.py",
        name=EVIL,
        dataset=f"imagefolder:{EVIL}",
        command=f"satadvisor analyze '{EVIL}'",
        knobs={**a.knobs, "activation": EVIL},
        layers=(
            *a.layers[:2],
            replace(a.layers[2], name=EVIL, label=EVIL, type=EVIL),
            *a.layers[3:],
        ),
        training=replace(
            a.training,
            eval_name=EVIL,
            saturation_history=(
                replace(history[0], layers={**history[0].layers, EVIL: 0.5}),
                *history[1:],
            ),
        ),
        receptive_field=replace(a.receptive_field, border_layer=EVIL),
        findings=(
            replace(finding, message=EVIL, evidence={**finding.evidence, EVIL: EVIL}),
            *a.findings[1:],
        ),
        recommendations=(
            replace(
                rec,
                title=EVIL,
                rationale=EVIL,
                knobs={**rec.knobs, "activation": f"{EVIL}2"},
                changes={**rec.changes, "activation": EVIL},
            ),
            *a.recommendations[1:],
        ),
        verdict=EVIL,
        environment={
            **a.environment,
            "versions": {**a.environment["versions"], EVIL: EVIL},
            "device_name": EVIL,
        },
    )


def test_user_strings_are_escaped_everywhere_including_plot_json(
    analysis: AnalysisRecord,
) -> None:
    page = render_analysis(_hostile(analysis))
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


def test_profile_data_is_forward_order_with_tail_and_border(
    analysis: AnalysisRecord, live: Analysis
) -> None:
    data = _plots_analysis.profile_data(with_tail(analysis, "conv7", "conv8"))
    assert data is not None
    assert data.layers == tuple(NAMES) and data.labels == tuple(LABELS)
    assert data.saturation == tuple(s.saturation for s in live.profile)  # the tracker's values
    assert data.errors == tuple(s.saturation_se for s in live.profile)
    assert data.border_layer == "features.conv6" and data.border_index == 5
    assert [n for n, t in zip(data.labels, data.tail, strict=True) if t] == ["conv7", "conv8"]


def test_profile_figure_colors_tail_hatches_unproductive_marks_border(
    analysis: AnalysisRecord, live: Analysis
) -> None:
    analysis = with_tail(analysis, "conv6", "conv7", "conv8")
    *convs, classifier = analysis.layers
    # a non-tail unproductive layer, for the hatch
    analysis = replace(analysis, layers=(*convs, replace(classifier, unproductive=True)))
    data = _plots_analysis.profile_data(analysis)
    assert data is not None
    fig = _plots_analysis.profile_figure(data)
    go.Figure(fig)  # plotly's own validator: every property exists
    style = {
        x: (trace["marker"]["color"], trace["marker"]["pattern"]["shape"], y)
        for trace in fig["data"]
        for x, y in zip(trace["x"], trace["y"], strict=True)
    }
    assert set(style) == set(LABELS)
    for i in range(1, 6):
        assert style[f"conv{i}"][:2] == (_plots.COLOR_LAYER, "")
    for i in range(6, 9):
        assert style[f"conv{i}"][:2] == (_plots.COLOR_TAIL, _plots.HATCH_UNPRODUCTIVE)
    assert style["classifier"][:2] == (_plots.COLOR_LAYER, _plots.HATCH_UNPRODUCTIVE)
    assert style["conv5"][2] == live.profile[4].saturation
    # Category order is forward order; the border line sits between conv5 (4) and conv6 (5).
    assert fig["layout"]["xaxis"]["categoryarray"] == LABELS
    (shape,) = fig["layout"]["shapes"]
    assert shape["x0"] == shape["x1"] == 4.5
    assert "receptive-field border" in fig["layout"]["annotations"][0]["text"]


def test_profile_without_border_has_no_marker(analysis: AnalysisRecord) -> None:
    analysis = replace(
        analysis, receptive_field=replace(analysis.receptive_field, border_layer=None)
    )
    data = _plots_analysis.profile_data(analysis)
    assert data is not None
    assert "shapes" not in _plots_analysis.profile_figure(data)["layout"]


def test_evolution_data_matches_the_history(analysis: AnalysisRecord, live: Analysis) -> None:
    assert analysis.training is not None and live.run is not None
    first, *rest = analysis.training.saturation_history
    without = {k: v for k, v in first.layers.items() if k != "features.conv3"}
    analysis = replace(
        with_tail(analysis, "conv8"),
        training=replace(
            analysis.training, saturation_history=(replace(first, layers=without), *rest)
        ),
    )
    data = _plots_analysis.evolution_data(analysis)
    assert data is not None
    assert data.layers == tuple(NAMES)
    assert data.epochs == (1, 2)
    row = data.layers.index("features.conv7")
    per_epoch = [{s.name: s.saturation for s in ep["train"]} for ep in live.run.saturation]
    assert data.saturation[row] == tuple(ep["features.conv7"] for ep in per_epoch)
    assert data.saturation[data.layers.index("features.conv3")][0] is None  # missing → gap
    fig = _plots_analysis.evolution_figure(data)
    go.Figure(fig)
    assert fig["data"][0]["z"][row][-1] == pytest.approx(per_epoch[-1]["features.conv7"])
    ticks = dict(
        zip(fig["layout"]["yaxis"]["tickvals"], fig["layout"]["yaxis"]["ticktext"], strict=True)
    )
    assert _plots.COLOR_TAIL in ticks["conv8"] and _plots.COLOR_TAIL not in ticks["conv7"]


def test_curves_and_rf_figures(analysis: AnalysisRecord, live: Analysis) -> None:
    assert live.run is not None
    curves = _plots_analysis.curves_data(analysis)
    assert curves is not None
    assert curves.epochs == (1, 2)
    assert curves.eval_loss == tuple(e.eval_loss for e in live.run.epochs)
    loss, acc = _plots_analysis.loss_figure(curves), _plots_analysis.accuracy_figure(curves)
    go.Figure(loss), go.Figure(acc)
    assert [t["name"] for t in acc["data"]] == ["train", "val"]
    assert acc["data"][1]["y"] == [e.eval_accuracy for e in live.run.epochs]
    rf = _plots_analysis.receptive_field_data(analysis)
    assert rf is not None
    fig = _plots_analysis.receptive_field_figure(rf)
    go.Figure(fig)
    r_min = next(t for t in fig["data"] if t["name"] == "r_min")
    assert r_min["y"] == [3, 5, 10, 14, 18, 28, 36, 44, None]
    assert r_min["marker"]["color"][5] == _plots.COLOR_TAIL  # conv6 unproductive
    assert r_min["marker"]["color"][4] == _plots.COLOR_LAYER
    line = next(t for t in fig["data"] if t["name"].startswith("input"))
    assert line["y"] == [16, 16]
    assert fig["layout"]["shapes"][0]["x0"] == 4.5


def test_no_train_has_no_training_plots(untrained_record: AnalysisRecord) -> None:
    assert _plots_analysis.profile_data(untrained_record) is None
    assert _plots_analysis.evolution_data(untrained_record) is None
    assert _plots_analysis.curves_data(untrained_record) is None
    assert _plots_analysis.receptive_field_data(untrained_record) is not None


# ---------------------------------------------------------------------------------------------
# Atomic output


def test_failure_while_rendering_or_writing_keeps_the_previous_report(
    tmp_path: Path, analysis: AnalysisRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    write_analysis(analysis, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    from satadvisor.report import _page

    def crash() -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_page, "plotly_js", crash)  # runs after the first files are staged
    assert analysis.training is not None
    changed = replace(analysis, training=replace(analysis.training, epochs=3))
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_analysis(changed, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging leftovers

    monkeypatch.undo()
    write_analysis(changed, out)
    assert json.loads((out / "analysis.json").read_text("utf-8"))["training"]["epochs"] == 3


def test_unwritable_target_is_an_output_error(tmp_path: Path, analysis: AnalysisRecord) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError) as info:
        write_analysis(analysis, blocker / "sub")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write report to {blocker / 'sub'}: ")
    assert message.endswith("; pass --out with a writable directory")


def test_existing_foreign_directory_is_not_replaced(
    tmp_path: Path, analysis: AnalysisRecord
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
def test_page_renders_charts_in_a_real_browser(
    tmp_path: Path, variant: str, analysis: AnalysisRecord, untrained_record: AnalysisRecord
) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    a = {"vgg": analysis, "hostile": _hostile(analysis), "no-train": untrained_record}[variant]
    index = write_analysis(a, tmp_path / "report")
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
    tmp_path: Path, analysis: AnalysisRecord
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
    tmp_path: Path, analysis: AnalysisRecord
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
    tmp_path: Path, analysis: AnalysisRecord
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
