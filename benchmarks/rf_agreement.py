"""Receptive fields and MACs of the torchvision classifiers against independent tools.

    .venv/bin/python benchmarks/rf_agreement.py [--models NAME ...] [--resolutions 32 64 224]

Part 1, receptive fields: for every torchvision classifier below at 32, 64 and 224 px (built
without weights), every Conv2d that rfa_toolbox 1.7.0 (Richter et al.'s receptive-field
toolbox) reports is compared with ``satadvisor.receptive.analyze``: the output r_min and r_max,
the smallest r_min among the layer's inputs, and the unproductive verdict, the latter against
rfa_toolbox's *own* ``is_border`` (not against our conventions applied to its fields, as
``tests/test_receptive_rfa.py`` does). rfa_toolbox builds its graph from ``torch.jit.trace``
with its own code, so it is an independent reference. Every disagreement is listed with both
values and an explanation when a documented convention accounts for it:

* ``r_min_tie``: an input sees exactly the image (r_min == I): critical here (strictly
  greater is required), unproductive there (rfa_toolbox's ``is_border`` uses ≥);
* ``size_estimate_small``: rfa_toolbox estimates the input map as ``I // jump`` and flags the
  layer because that estimate is no larger than the kernel; the real map (measured here with
  forward pre-hooks: padding and ceil-mode pools round up) is larger than the kernel;
* ``size_estimate_large``: the real map is no larger than the kernel, rfa_toolbox's estimate
  ``I // jump`` is (valid convolutions and floor-mode pools without padding shrink the map
  below ``I // jump``): flagged here by the size rule, not there;
* ``one_by_one``: a 1×1 kernel on an (estimated) 1×1 map: rfa_toolbox's size rule flags it,
  ours never flags a 1×1 kernel by size (it reads all there is);
* ``se_gate``: a squeeze-and-excitation conv reads a global pool: it has no receptive field
  here and is absent from rfa_toolbox (which treats the SE block as an opaque pass-through).

Anything else is ``unexplained`` (a bug on one side: read the details). Convs rfa_toolbox
cannot trace are skipped with the reason.

Part 2, MACs at 224 px, 3 channels: ``satadvisor.cost.count_macs`` (torch's FlopCounterMode:
convolutions and matmuls, FLOPs / 2) against fvcore (its conv + linear/matmul operators alone,
and its total, which adds norms and pools), ptflops (aten back end: convolutions and matmuls;
pytorch back end: module hooks, adds biases, norms, activations, pools), thop (module hooks) —
whichever of these is installed — and the MACs torchvision publishes (``meta["_ops"]`` of the
default weights, in GMACs despite the name, at the weights' crop size: 299 px for Inception-v3,
so ours is counted there too for that column).

It writes ``benchmarks/results/rf_agreement.json`` and prints the markdown tables of
``benchmarks/RESULTS.md``. CPU only, one thread by default; a few minutes.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import contextlib
import copy
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common as common
import numpy as np
import torch
import torchvision
from torch import nn

from satadvisor.cost import count_macs
from satadvisor.receptive import analyze

if not hasattr(collections, "Sequence"):  # rfa_toolbox 1.7.0 imports collections.Sequence
    collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]

MODELS = (
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "densenet121",
    "efficientnet_b0",
    "googlenet",
    "mnasnet1_0",
    "squeezenet1_1",
    "regnet_x_400mf",
    "shufflenet_v2_x1_0",
    "vgg16",
    "alexnet",
    "convnext_tiny",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "inception_v3",
)
RESOLUTIONS = (32, 64, 224)
MAC_RESOLUTION = 224
OUT = common.RESULTS_DIR / "rf_agreement.json"

EXPLANATIONS = {
    "r_min_tie": "an input sees exactly the image (input r_min == I): critical here (> I "
    "required), unproductive in rfa_toolbox (≥ I); a documented convention, not an error",
    "size_estimate_small": "rfa_toolbox estimates the input map as I // jump, no larger than the "
    "kernel; the real map (padding / ceil-mode pools round up) is larger than the kernel, so "
    "the layer still slides its kernel: satadvisor is right",
    "size_estimate_large": "the real input map is no larger than the kernel, rfa_toolbox's "
    "estimate I // jump is larger (unpadded convs / floor-mode pools shrink the map below "
    "I // jump): satadvisor is right",
    "one_by_one": "a 1×1 kernel on a map rfa_toolbox estimates at 1×1: its size rule flags it, "
    "ours never flags a 1×1 kernel by size (it reads everything there is, like a Linear "
    "layer); documented convention",
    "se_gate": "squeeze-and-excitation conv reading a global pool: no receptive field here, "
    "absent in rfa_toolbox (the SE block is an opaque pass-through there); documented",
}


# -- rfa_toolbox -----------------------------------------------------------------------------


@dataclass
class RfaConv:
    r_min: float
    r_max: float
    input_r_min: float
    border: bool  # rfa_toolbox's own is_border(I)
    border_by_size: bool  # its size rule: every input's I // jump <= kernel
    border_by_r_min: bool  # its r_min rule: every input r_min >= I and own r_min > I
    estimate: int  # I // (largest jump among the inputs)
    kernel: tuple[int, ...]
    calls: int = 1


def _min(value: Any) -> float:
    return float(np.min(np.asarray(value, dtype=float)))


def _max(value: Any) -> float:
    return float(np.max(np.asarray(value, dtype=float)))


@contextlib.contextmanager
def _labels_recorded(store: dict[str, str]) -> Iterator[None]:
    """Record each rfa_toolbox graph node's label ("layer1.0.conv1 (Conv2d)"): the module."""
    from rfa_toolbox.encodings.pytorch import intermediate_graph

    original = intermediate_graph.Digraph.node

    def node(self: Any, name: str, label: str | None = None, **kwargs: Any) -> None:
        store[name] = label or name
        original(self, name, label=label, **kwargs)

    intermediate_graph.Digraph.node = node  # type: ignore[method-assign]
    try:
        yield
    finally:
        intermediate_graph.Digraph.node = original  # type: ignore[method-assign]


def rfa_reference(model: nn.Module, resolution: int) -> dict[str, RfaConv]:
    """Qualified Conv2d name -> rfa_toolbox's fields and verdict at ``resolution``."""
    import rfa_toolbox

    labels: dict[str, str] = {}
    with _labels_recorded(labels), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        graph = rfa_toolbox.create_graph_from_pytorch_model(
            model, input_res=(1, 3, resolution, resolution)
        )
    out: dict[str, RfaConv] = {}
    for n in graph.all_layers:
        label = labels.get(n.name, "")
        if not label.endswith("(Conv2d)"):
            continue
        name = label.split(" ")[0]
        preds = n.predecessors
        reads = min((_min(p.receptive_field_min) for p in preds), default=1.0)
        jump = max((_max(p.get_maximum_scale_factor()) for p in preds), default=1.0)
        by_size = bool(preds) and all(
            bool(n._feature_map_size_larger_than_kernel(p, resolution)) for p in preds
        )
        by_r_min = all(resolution <= _min(p.receptive_field_min) for p in preds) and bool(
            resolution < _min(n.receptive_field_min)
        )
        kernel = n.layer_info.kernel_size
        entry = RfaConv(
            r_min=_min(n.receptive_field_min),
            r_max=_max(n.receptive_field_max),
            input_r_min=reads,
            border=bool(n.is_border(resolution)),
            border_by_size=by_size,
            border_by_r_min=by_r_min,
            estimate=int(resolution // jump) if np.isfinite(jump) and jump > 0 else 0,
            kernel=tuple(int(k) for k in np.atleast_1d(kernel)),
        )
        if name in out:  # a module called twice: one entry, like satadvisor's
            old = out[name]
            entry.r_min, entry.input_r_min = (
                min(old.r_min, entry.r_min),
                min(old.input_r_min, entry.input_r_min),
            )
            entry.r_max = max(old.r_max, entry.r_max)
            entry.border = old.border and entry.border
            entry.calls = old.calls + 1
        out[name] = entry
    return out


def input_sizes(model: nn.Module, resolution: int) -> dict[str, tuple[int, ...]]:
    """Every Conv2d's real input map size at ``resolution`` (forward pre-hooks, a real run)."""
    sizes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes.setdefault(name, tuple(int(s) for s in args[0].shape[2:]))

        return record

    handles = [
        m.register_forward_pre_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


# -- comparison ------------------------------------------------------------------------------


@dataclass
class Disagreement:
    model: str
    resolution: int
    layer: str
    what: str  # "r_min", "r_max", "input_r_min", "verdict", "missing"
    ours: Any
    rfa: Any
    kind: str  # a key of EXPLANATIONS, or "unexplained"
    right: str  # "satadvisor", "rfa_toolbox", "convention (neither)", "?"
    detail: str


@dataclass
class Comparison:
    model: str
    resolution: int
    status: str = "ok"  # "ok" or "skipped"
    reason: str = ""
    convs_rfa: int = 0
    convs_ours: int = 0
    compared: int = 0
    agree_r_min: int = 0
    agree_r_max: int = 0
    agree_input_r_min: int = 0
    agree_verdict: int = 0
    agree_all: int = 0
    unproductive_ours: int = 0
    unproductive_rfa: int = 0
    se_gates: list[str] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    seconds: float = 0.0


def _value(v: float | int | None) -> float:
    return np.inf if v is None else float(v)


def _shown(v: float | int | None) -> Any:
    if v is None or not np.isfinite(float(v)):
        return "global"
    return int(v)


def explain_verdict(
    ours: Any, ref: RfaConv, size: tuple[int, ...], resolution: int
) -> tuple[str, str, str]:
    """(kind, who is right, detail) of a verdict where satadvisor and rfa_toolbox differ."""
    keff = ours.effective_kernel or 1
    real_small = keff > 1 and min(size) <= keff
    detail = (
        f"input r_min {_shown(ours.input_r_min)} (rfa {_shown(ref.input_r_min)}), "
        f"kernel {keff}, real input map {'×'.join(map(str, size))}, rfa estimate "
        f"I // jump = {ref.estimate}"
    )
    if ref.border and not ours.unproductive:
        if ref.border_by_size and max(ref.kernel) == 1 and ref.estimate <= 1:
            return "one_by_one", "convention (satadvisor's documented choice)", detail
        if ref.border_by_size and not real_small and ref.estimate <= keff < min(size):
            return "size_estimate_small", "satadvisor", detail
        if ref.border_by_r_min and _value(ours.input_r_min) == resolution:
            return "r_min_tie", "convention (satadvisor's documented choice)", detail
    if ours.unproductive and not ref.border:
        reads_beyond = _value(ours.input_r_min) > resolution
        if real_small and not reads_beyond and ref.estimate > keff:
            return "size_estimate_large", "satadvisor", detail
    return "unexplained", "?", detail


def build(name: str) -> tuple[nn.Module, nn.Module]:
    """``name`` without weights, in eval mode: a real copy (for rfa_toolbox, the hooks and the
    other counters) and one on the meta device (for satadvisor, which needs no data)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    try:
        with torch.device("meta"):
            meta_model = torchvision.models.get_model(name, weights=None).eval()
    except (NotImplementedError, RuntimeError):  # the constructor computes with tensors (RegNet)
        meta_model = copy.deepcopy(model).to("meta")
    return model, meta_model


def _is_se_gate(model: nn.Module, layer: str) -> bool:
    parent = model.get_submodule(layer.rpartition(".")[0])
    return isinstance(parent, torchvision.ops.SqueezeExcitation)


def compare(name: str, model: nn.Module, meta_model: nn.Module, resolution: int) -> Comparison:
    """Compare ``model`` (torchvision's ``name``) with rfa_toolbox at ``resolution``."""
    started = time.perf_counter()
    result = Comparison(name, resolution)
    try:
        sizes = input_sizes(model, resolution)
    except Exception as exc:  # the model itself refuses the input (e.g. too small)
        result.status, result.reason = "skipped", f"the model fails at {resolution} px: {exc}"
        result.reason = result.reason.splitlines()[0]
        return result
    try:
        ref = rfa_reference(model, resolution)
    except Exception as exc:
        result.status = "skipped"
        result.reason = f"rfa_toolbox cannot trace it: {type(exc).__name__}: {exc}"
        result.reason = result.reason.splitlines()[0]
        return result
    analysis = analyze(meta_model, resolution, feasible_range=False)
    if not analysis.supported:
        result.status, result.reason = "skipped", f"satadvisor: {analysis.reason}"
        return result
    ours = {x.name: x for x in analysis.layers if x.module_type == "Conv2d"}
    result.convs_rfa, result.convs_ours = len(ref), len(ours)
    result.unproductive_rfa = sum(r.border for r in ref.values())
    result.unproductive_ours = sum(x.unproductive for x in ours.values())

    def add(layer: str, what: str, a: Any, b: Any, kind: str, right: str, detail: str) -> None:
        result.disagreements.append(
            Disagreement(name, resolution, layer, what, a, b, kind, right, detail)
        )

    for layer in ours.keys() - ref.keys():
        x = ours[layer]
        if x.r_min is None and x.input_r_min is None and _is_se_gate(model, layer):
            result.se_gates.append(layer)
        else:
            add(layer, "missing", "present", "absent", "unexplained", "?", "absent in rfa_toolbox")
    result.se_gates.sort()
    for layer in ref.keys() - ours.keys():
        add(layer, "missing", "absent", "present", "unexplained", "?", "absent in satadvisor")
    for layer in [n for n in ours if n in ref]:  # forward order
        x, r = ours[layer], ref[layer]
        result.compared += 1
        same = {
            "r_min": _value(x.r_min) == r.r_min,
            "r_max": _value(x.r_max) == r.r_max,
            "input_r_min": _value(x.input_r_min) == r.input_r_min,
            "verdict": x.unproductive == r.border,
        }
        result.agree_r_min += same["r_min"]
        result.agree_r_max += same["r_max"]
        result.agree_input_r_min += same["input_r_min"]
        result.agree_verdict += same["verdict"]
        result.agree_all += all(same.values())
        pairs = {
            "r_min": (x.r_min, r.r_min),
            "r_max": (x.r_max, r.r_max),
            "input_r_min": (x.input_r_min, r.input_r_min),
        }
        for what, (a, b) in pairs.items():
            if not same[what]:
                add(layer, what, _shown(a), _shown(b), "unexplained", "?", "field differs")
        if not same["verdict"]:
            size = sizes.get(layer, (0,))
            kind, right, detail = explain_verdict(x, r, size, resolution)
            verdict = {True: "unproductive", False: "critical" if x.critical else "productive"}
            add(
                layer,
                "verdict",
                verdict[x.unproductive],
                "unproductive" if r.border else "productive",
                kind,
                right,
                detail,
            )
    result.seconds = round(time.perf_counter() - started, 2)
    return result


# -- MACs ------------------------------------------------------------------------------------


def other_counts(model: nn.Module, resolution: int) -> dict[str, float | None]:
    """MACs of ``model`` at ``resolution`` by every installed third-party counter."""
    x = torch.zeros(1, 3, resolution, resolution)
    out: dict[str, float | None] = {}
    try:
        from fvcore.nn import FlopCountAnalysis

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_op = analysis.by_operator()
        out["fvcore_total"] = float(analysis.total())
        same_ops = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")
        out["fvcore_conv_matmul"] = float(sum(v for k, v in by_op.items() if k in same_ops))
    except ImportError:
        pass
    try:
        from ptflops import get_model_complexity_info

        for backend in ("aten", "pytorch"):
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                macs, _ = get_model_complexity_info(
                    model,
                    (3, resolution, resolution),
                    as_strings=False,
                    print_per_layer_stat=False,
                    backend=backend,
                )
            out[f"ptflops_{backend}"] = None if macs is None else float(macs)
    except ImportError:
        pass
    try:
        import thop

        with (
            warnings.catch_warnings(),
            torch.no_grad(),
            contextlib.redirect_stdout(None),  # type: ignore[type-var]
        ):
            warnings.simplefilter("ignore")
            macs, _ = thop.profile(copy.deepcopy(model), inputs=(x,), verbose=False)
        out["thop"] = float(macs)
    except ImportError:
        pass
    return out


def mac_row(name: str, model: nn.Module, meta_model: nn.Module) -> dict[str, Any]:
    """satadvisor's MACs (counted on the meta device) vs the other counters (on ``model``)
    and torchvision's published figure."""
    started = time.perf_counter()
    ours = count_macs(meta_model, in_channels=3, resolution=MAC_RESOLUTION)
    row: dict[str, Any] = {"model": name, "resolution": MAC_RESOLUTION, "satadvisor": ours}
    row["others"] = other_counts(model, MAC_RESOLUTION)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    crop = int(weights.transforms().crop_size[0])
    ours_at_crop = (
        ours if crop == MAC_RESOLUTION else count_macs(meta_model, in_channels=3, resolution=crop)
    )
    row["published"] = {
        "weights": str(weights),
        "resolution": crop,
        "gmacs": float(weights.meta["_ops"]),
        "satadvisor_at_resolution": ours_at_crop,
    }
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


# -- tables ----------------------------------------------------------------------------------


def _frac(a: int, n: int) -> str:
    return f"{a}/{n}" if n else "—"


def agreement_table(comparisons: list[Comparison]) -> str:
    headers = [
        "model",
        "px",
        "convs compared",
        "r_min",
        "r_max",
        "input r_min",
        "verdict",
        "all four",
        "unproductive (ours / rfa)",
        "SE gates (absent there)",
        "disagreements (kind)",
    ]
    rows = []
    for c in comparisons:
        if c.status != "ok":
            rows.append([c.model, c.resolution, f"skipped: {c.reason}"] + [""] * 8)
            continue
        kinds = collections.Counter(d.kind for d in c.disagreements)
        rows.append(
            [
                c.model,
                c.resolution,
                c.compared,
                _frac(c.agree_r_min, c.compared),
                _frac(c.agree_r_max, c.compared),
                _frac(c.agree_input_r_min, c.compared),
                _frac(c.agree_verdict, c.compared),
                _frac(c.agree_all, c.compared),
                f"{c.unproductive_ours} / {c.unproductive_rfa}",
                len(c.se_gates),
                ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none",
            ]
        )
    return common.markdown_table(headers, rows)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.4f}"


COUNTERS = {
    "fvcore_conv_matmul": "fvcore conv+matmul",
    "fvcore_total": "fvcore total",
    "ptflops_aten": "ptflops aten",
    "ptflops_pytorch": "ptflops pytorch",
    "thop": "thop",
}


def mac_table(rows: list[dict[str, Any]]) -> str:
    """satadvisor's MACs and, per other counter, its count and satadvisor / it."""
    found = {k for r in rows for k in r["others"]}
    keys = [k for k in COUNTERS if k in found] + sorted(found - COUNTERS.keys())
    headers = ["model", f"satadvisor @{MAC_RESOLUTION}"]
    headers += [f"{COUNTERS.get(k, k)} (ours ÷ it)" for k in keys]
    headers += ["torchvision published (px)", "ours ÷ published"]
    table = []
    for r in rows:
        ours = r["satadvisor"]
        line = [r["model"], common.human(ours)]
        for k in keys:
            v = r["others"].get(k)
            line.append("n/a" if v is None else f"{common.human(v)} ({_ratio(ours, v)})")
        pub = r["published"]
        line.append(f"{pub['gmacs']:.3f}G ({pub['resolution']})")
        line.append(_ratio(pub["satadvisor_at_resolution"], pub["gmacs"] * 1e9))
        table.append(line)
    return common.markdown_table(headers, table)


def disagreement_list(comparisons: list[Comparison]) -> str:
    lines = []
    for c in comparisons:
        for d in c.disagreements:
            lines.append(
                f"- {d.model} @ {d.resolution} px, `{d.layer}`, {d.what}: satadvisor "
                f"{d.ours}, rfa_toolbox {d.rfa} — {d.kind}; right: {d.right} ({d.detail})"
            )
    return "\n".join(lines) or "(none)"


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--resolutions", nargs="+", type=int, default=list(RESOLUTIONS))
    parser.add_argument("--no-macs", action="store_true", help="skip part 2 (MACs)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--date", default=None, help="date to record (default: today, UTC)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT})")
    args = parser.parse_args(argv)
    args.device = "cpu"
    common.setup(args)
    started = time.perf_counter()
    import rfa_toolbox  # noqa: F401  # fail early when it is not installed

    comparisons = []
    macs = []
    for name in args.models:
        model, meta_model = build(name)
        for resolution in args.resolutions:
            c = compare(name, model, meta_model, resolution)
            comparisons.append(c)
            kinds = collections.Counter(d.kind for d in c.disagreements)
            print(
                f"{name} @ {resolution}: {c.status} {c.reason} compared {c.compared}, "
                f"all agree {c.agree_all}, SE {len(c.se_gates)}, {dict(kinds)} ({c.seconds} s)",
                flush=True,
            )
        if not args.no_macs:
            row = mac_row(name, model, meta_model)
            macs.append(row)
            print(f"MACs {name}: {row['satadvisor']} {row['others']} ({row['seconds']} s)")
        del model, meta_model
    finished = time.perf_counter()
    versions: dict[str, str] = {}
    for package in ("rfa_toolbox", "fvcore", "ptflops", "thop"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package.replace("_", "-"))
    all_disagreements = [d for c in comparisons for d in c.disagreements]
    payload = {
        **common.record(args, started=started, finished=finished),
        "third_party_versions": versions,
        "explanations": EXPLANATIONS,
        "summary": {
            "compared": sum(c.compared for c in comparisons),
            "agree_all": sum(c.agree_all for c in comparisons),
            "disagreements_by_kind": dict(collections.Counter(d.kind for d in all_disagreements)),
            "unexplained": sum(d.kind == "unexplained" for d in all_disagreements),
            "se_gates": sum(len(c.se_gates) for c in comparisons),
            "skipped": [
                f"{c.model} @ {c.resolution}: {c.reason}" for c in comparisons if c.status != "ok"
            ],
        },
        "comparisons": [asdict(c) for c in comparisons],
        "macs": macs,
    }
    common.write_json(args.out, payload)
    print()
    print(agreement_table(comparisons))
    print()
    if macs:
        print(mac_table(macs))
        print()
    print(disagreement_list(comparisons))
    print(f"\nwrote {args.out} ({finished - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
