"""Tail removal and the performance move: does acting on the advice pay off on real data?

A VGG16-style network — the built-in ``vgg`` family at 13 convs over 5 max-pools, i.e. VGG16's
conv stack (``--width`` channels in the first stage) — on Fashion-MNIST at 32 px:

1. ``satadvisor.analyze`` (a proxy run, ``--epochs``) gives the baseline's measured saturation
   profile, its findings (is the measured tail found? where does it start against the
   receptive-field border?), the verdict, and the recommendations;
2. the first *efficiency* recommendation (the tail removed) and the first *performance*
   recommendation, used exactly as given, and the baseline are each trained in full
   (``full=True``: the training set minus the validation split, ``--full-epochs``; the test
   set evaluated once at the end) with ``--seeds`` seeds, on one split (drawn with seed 0) so
   the runs pair by seed. Seed 0 runs through ``analyze`` (so its profile is measured too);
   the other seeds train untracked, which gives the same accuracy.

Reported: validation accuracy (mean ± std over seeds: what decides), the paired difference of
each move to the baseline with its 95 % t-interval and the verdict (confirmed / not confirmed /
tie, as ``satadvisor optimize`` judges a pick: a cheaper move must stay above −0.5 points, a
more accurate one above 0), test accuracy (reported only), MACs and parameters against the
baseline, the baseline's per-conv saturation profile with the receptive field, and the verdict.
Published expectation (Richter et al. 2021): removing the tail costs at most ~0.5 points of
accuracy for a large cut in compute, and the performance move gains accuracy.

GPU-sized defaults (width 64 = VGG16's channels, whole dataset, 3 seeds)::

    .venv/bin/python benchmarks/tail_removal.py --device cuda

Reduced CPU run recorded in RESULTS.md::

    .venv/bin/python benchmarks/tail_removal.py --device cpu --threads 1 --width 16 \\
        --subset 3000 --full-subset 3000 --epochs 5 --full-epochs 6 --seeds 3

``--analyze-only`` records the proxy profile, findings and verdict without the full runs.
``--performance-moves N`` trains the first N performance recommendations (default 1: for
VGG16 at 32 px the one-step move, the earliest pool removed; 2 adds the verified fix).
``--reuse FILE`` takes the full runs of an earlier result whose model (knobs, resolution) and
training options (data, subsets, epochs, seeds, device, threads) are the same instead of
training them again (CPU training is deterministic); their seed-0 measured tail is re-read
from the recorded profile with the current tail rule. Everything else is trained.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as common
import torch

from satadvisor import data as data_mod
from satadvisor import spec as spec_mod
from satadvisor._env import resolve_device
from satadvisor._flags import set_args
from satadvisor.advisor import Analysis, analyze, build_model
from satadvisor.config import TrainConfig
from satadvisor.rules import Recommendation, tail_layers
from satadvisor.saturation import LayerSaturation
from satadvisor.search import summary as summary_mod
from satadvisor.search.study_record import SeedRun, ValidatedConfig
from satadvisor.search.summary import evenness
from satadvisor.train import run, seed_everything

NAME = "tail_removal"
DATASET = "fashion-mnist"
#: Accuracy a cheaper move may lose and still be confirmed (``optimize``'s default tolerance).
TOLERANCE = 0.005


def baseline_knobs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "depth": args.depth,
        "downsamplings": args.downsamplings,
        "kernel_size": 3,
        "width": args.width,
    }


def profile_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """Per conv layer: proxy saturation (train and eval phase) and the receptive field."""
    assert analysis.run is not None
    eval_sat = {s.name: s.saturation for s in analysis.run.profile("eval")}
    return [
        {
            "layer": row.name.rsplit(".", 1)[-1],
            "width": row.width,
            "saturation_train": row.saturation,
            "saturation_eval": eval_sat.get(row.name),
            "r_min": row.r_min,
            "unproductive": row.unproductive,
            "critical": row.critical,
            "tail": row.tail,
        }
        for row in analysis.layers()
        if "conv" in row.type.lower()
    ]


def tail_summary(analysis: Analysis) -> dict[str, Any]:
    """Whether the measured tail was found, where it starts, and the receptive-field border."""
    measured = next((f for f in analysis.findings if f.kind == "tail" and not f.predicted), None)
    predicted = next((f for f in analysis.findings if f.kind == "tail" and f.predicted), None)
    short = [name.rsplit(".", 1)[-1] for name in analysis.tail]
    border = analysis.receptive_field.border_layer
    return {
        "measured_tail_found": measured is not None,
        "measured_tail": short,
        "measured_tail_start": short[0] if short else None,
        "rf_border": border.rsplit(".", 1)[-1] if border else None,
        "rf_offset": measured.evidence.get("rf_offset") if measured else None,
        "rf_agrees": measured.evidence.get("rf_agrees") if measured else None,
        "predicted_only": predicted is not None and measured is None,
        "findings": [f.to_dict() for f in analysis.findings],
    }


def pick(recs: Sequence[Recommendation], kind: str, count: int = 1) -> list[Recommendation]:
    """The first ``count`` recommendations of ``kind`` that change knobs (trainable ones)."""
    return [r for r in recs if r.kind == kind and r.changes][:count]


def to_train(recs: Sequence[Recommendation], args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(row name, recommendation): the first efficiency move, the first N performance moves."""
    rows: list[tuple[str, Any]] = []
    for kind, count in (("efficiency", 1), ("performance", args.performance_moves)):
        found = pick(recs, kind, count)
        if not found:
            print(f"no {kind} recommendation with knob changes: skipped", flush=True)
        rows += [(kind if i == 0 else f"{kind} {i + 1}", r) for i, r in enumerate(found)]
    return rows


#: Options that change what a full run trains; a recorded run is reused only when they match.
REUSE_OPTIONS = ("device", "full_subset", "full_epochs", "seeds", "data_dir", "threads", "model")


def _model_key(knobs: dict[str, Any], resolution: int) -> str:
    """Knobs left at None are the model's defaults: a run without them is the same model."""
    kept = {k: v for k, v in knobs.items() if v is not None and k != "resolution"}
    return json.dumps([kept, resolution], sort_keys=True)


def reusable(path: Path | None, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """model key -> a full-run row of ``path`` trained with the same options ({} if none)."""
    if path is None:
        return {}
    recorded = json.loads(path.read_text())
    options = recorded.get("options", {})
    if any(options.get(k) != getattr(args, k) for k in REUSE_OPTIONS):
        return {}
    # Runs scored on the test set (before the validation split) cannot decide anything now.
    return {
        _model_key(r["knobs"], r["resolution"]): r
        for r in recorded.get("runs", [])
        if "val_accuracy_mean" in r
    }


def current_tail(profile: dict[str, float]) -> list[str]:
    """The measured tail of a recorded seed-0 profile (short name -> saturation), current rule."""
    layers = [
        LayerSaturation(name, "Conv2d" if "conv" in name else "Linear", 0, 0, value, 0)
        for name, value in profile.items()
    ]
    return tail_layers(layers)


def reuse_row(row: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    drop = ("change", "title", "predicted_cost", "name", "judged")
    out = {k: v for k, v in row.items() if k not in drop}
    # A row reused twice keeps the file it was trained for and the tail recorded there.
    out.update(
        name=name,
        reused_from=row.get("reused_from", str(path)),
        tail_full_seed0_recorded=row.get("tail_full_seed0_recorded", row["tail_full_seed0"]),
    )
    out["tail_full_seed0"] = current_tail(row.get("profile_full_seed0", {}))
    print(f"  {name}: reused from {path} (val {row['val_accuracy_mean']})", flush=True)
    return out


def full_runs(
    name: str,
    knobs: dict[str, Any],
    resolution: int,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Train ``knobs`` in full with every seed; seed 0 tracked (profile), the others not."""
    spec = spec_mod.load(args.model)
    knobs = {k: v for k, v in knobs.items() if k != "resolution"}
    recorded = args.reusable.get(_model_key(knobs, resolution))
    if recorded is not None:
        return reuse_row(recorded, name, args.reuse)
    seeds: list[dict[str, Any]] = []
    out: dict[str, Any] = {"name": name, "knobs": knobs, "resolution": resolution}
    # One validation split (seed 0) for every run: the differences to the baseline pair by seed.
    bundle = data_mod.load(
        DATASET,
        resolution=resolution,
        data_dir=args.data_root,
        full=True,
        seed=0,
        device=device,
        subset=args.full_subset,
    )
    for seed in range(args.seeds):
        config = TrainConfig(epochs=args.full_epochs, seed=seed, device=str(device), full=True)
        if seed == 0:
            analysis = analyze(
                spec, knobs={**knobs, "resolution": resolution}, data=bundle, config=config
            )
            result = analysis.run
            assert result is not None
            out.update(macs=analysis.macs, params=analysis.params)
            out["profile_full_seed0"] = {
                s.name.rsplit(".", 1)[-1]: round(s.saturation, 4) for s in analysis.profile
            }
            out["tail_full_seed0"] = [n.rsplit(".", 1)[-1] for n in analysis.tail]
            out["evenness_full_seed0"] = evenness(analysis.profile)
        else:
            seed_everything(seed)
            net = build_model(spec, knobs, num_classes=10, in_channels=1)
            result = run(net, bundle, config=config)
        scored = result.status not in summary_mod.UNFINISHED
        seeds.append(
            {
                "seed": seed,
                "val_accuracy": result.accuracy if scored else None,
                "test_accuracy": result.test_accuracy if scored else None,
                "status": result.status,
                "seconds": round(result.wall_time, 1),
            }
        )
        print(
            f"  {name} seed {seed}: val {result.accuracy} test {result.test_accuracy} "
            "(reported only)",
            flush=True,
        )
    out["seeds"] = seeds
    out["val_images"], out["test_images"] = len(bundle.eval), len(bundle.test or [])
    for key in ("val", "test"):
        accs = [s[f"{key}_accuracy"] for s in seeds if s[f"{key}_accuracy"] is not None]
        out[f"{key}_accuracy_mean"], out[f"{key}_accuracy_std"] = common.mean_std(accs)
    return out


def judge(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The paired comparison of a move's validation accuracy to the baseline's, and its verdict
    (:func:`satadvisor.search.summary.judge_claim`: what ``optimize`` would say of it)."""
    paired = summary_mod.compare(_validated(base["seeds"]), _validated(row["seeds"]))
    comparison = paired.to_dict()
    cheaper = row["macs"] < base["macs"]
    if paired.mean is None:
        return {"comparison": comparison, "verdict": "not confirmed", "basis": "missing runs"}
    if not (cheaper and paired.mean >= -TOLERANCE) and paired.mean <= 0:
        return {"comparison": comparison, "verdict": "not confirmed", "basis": "worse"}
    claim, verdict, basis = summary_mod.judge_claim(paired, cheaper=cheaper, tolerance=TOLERANCE)
    return {"comparison": comparison, "claim": claim, "verdict": verdict, "basis": basis}


def _validated(seeds: list[dict[str, Any]]) -> ValidatedConfig:
    """One configuration's runs as the search's record (what :func:`compare` pairs)."""
    runs = tuple(
        SeedRun(seed=s["seed"], status=s["status"], val_accuracy=s["val_accuracy"]) for s in seeds
    )
    return ValidatedConfig(seeds=tuple(r.seed for r in runs), runs=runs)


def tables(result: dict[str, Any]) -> str:
    if not result["runs"]:  # --analyze-only
        return f"{profile_table(result, {})}\n\nverdict: {result['verdict']}"
    base = result["runs"][0]
    rows = []
    for r in result["runs"]:
        c = (r.get("judged") or {}).get("comparison") or {}
        if r is base or c.get("mean") is None:
            delta = "—"
        elif c.get("low") is None:
            delta = f"{100 * c['mean']:+.2f} (one seed)"
        else:
            delta = f"{100 * c['mean']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"
        rows.append(
            [
                r["name"],
                r.get("change", "—"),
                f"{r['resolution']}",
                common.pct(r["val_accuracy_mean"], r["val_accuracy_std"]),
                delta,
                "—" if r is base else (r.get("judged") or {}).get("verdict", "—"),
                common.pct(r["test_accuracy_mean"], r["test_accuracy_std"]),
                common.human(r["macs"]),
                f"{r['macs'] / base['macs']:.2f}×",
                common.human(r["params"]),
                f"{r['params'] / base['params']:.2f}×",
                ", ".join(r["tail_full_seed0"][:1] + r["tail_full_seed0"][-1:]) or "none",
            ]
        )
    headers = ["model", "change", "px", "val acc. % (decides)", "Δ val points [95 % CI]"]
    headers += ["verdict", "test acc. % (reported)", "MACs", "MACs ×"]
    first = common.markdown_table(
        [*headers, "params", "params ×", "measured tail (full, seed 0)"], rows
    )
    second = profile_table(result, base.get("profile_full_seed0", {}))
    return f"{first}\n\n{second}\n\nverdict: {result['verdict']}"


def profile_table(result: dict[str, Any], full0: dict[str, float]) -> str:
    """The baseline's per-conv profile (proxy, and seed 0's full run when given)."""
    prof = [
        [
            p["layer"],
            p["width"],
            f"{p['saturation_train']:.3f}",
            f"{p['saturation_eval']:.3f}" if p["saturation_eval"] is not None else "",
            f"{full0[p['layer']]:.3f}" if p["layer"] in full0 else "",
            p["r_min"],
            "unproductive" if p["unproductive"] else ("critical" if p["critical"] else ""),
            "tail" if p["tail"] else "",
        ]
        for p in result["baseline_profile"]
    ]
    return common.markdown_table(
        [
            "layer",
            "width",
            "sat. proxy train",
            "sat. proxy eval",
            "sat. full train (seed 0)",
            "r_min px",
            "receptive field",
            "measured tail",
        ],
        prof,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_run_options(
        parser,
        subset=None,
        epochs=5,
        full_epochs=30,
        seeds=3,
        out=common.RESULTS_DIR / f"{NAME}.json",
    )
    parser.add_argument("--model", default="vgg", help="built-in family (default vgg)")
    parser.add_argument("--depth", type=int, default=13, help="convs (default 13 = VGG16)")
    parser.add_argument("--downsamplings", type=int, default=5, help="max-pools (default 5)")
    parser.add_argument("--width", type=int, default=64, help="first-stage channels (default 64)")
    parser.add_argument("--resolution", type=int, default=32, help="input px (default 32)")
    parser.add_argument(
        "--full-subset", type=int, default=None, help="cap the full runs' splits (default all)"
    )
    parser.add_argument(
        "--analyze-only", action="store_true", help="the proxy analysis only, no full runs"
    )
    parser.add_argument(
        "--performance-moves",
        type=int,
        default=1,
        help="train the first N performance recommendations with knob changes (default 1)",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier result JSON: reuse its full runs of the same model and options",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    common.setup(args)
    started = time.time()
    device = resolve_device(args.device)
    args.data_root = args.data_dir or common.fashion_root()
    args.reusable = reusable(args.reuse, args)
    knobs = baseline_knobs(args)
    proxy_data = data_mod.load(
        DATASET,
        resolution=args.resolution,
        data_dir=args.data_root,
        seed=0,
        device=device,
        subset=args.subset,
    )
    config = TrainConfig(epochs=args.epochs, seed=0, device=str(device))
    analysis = analyze(
        args.model, knobs={**knobs, "resolution": args.resolution}, data=proxy_data, config=config
    )
    del proxy_data
    print(analysis.verdict, flush=True)
    runs = (
        [] if args.analyze_only else [full_runs("baseline", knobs, args.resolution, args, device)]
    )
    for name, rec in [] if args.analyze_only else to_train(analysis.recommendations, args):
        row = full_runs(name, dict(rec.knobs), rec.resolution, args, device)
        row.update(
            change=set_args(rec.settings) or rec.title,
            title=rec.title,
            predicted_cost=rec.cost.to_dict() if rec.cost else None,
        )
        runs.append(row)
    for row in runs[1:]:
        row["judged"] = judge(row, runs[0])
    del args.data_root, args.reusable
    result = {
        "benchmark": NAME,
        **common.record(args, started=started, finished=time.time()),
        "dataset": DATASET,
        "baseline_knobs": knobs,
        "proxy_accuracy": analysis.run.accuracy if analysis.run else None,
        "verdict": analysis.verdict,
        "tail": tail_summary(analysis),
        "baseline_profile": profile_rows(analysis),
        "recommendations": [r.to_dict() for r in analysis.recommendations],
        "runs": runs,
    }
    print(tables(result))
    print(f"wrote {common.write_json(args.out, result)}")


if __name__ == "__main__":
    main()
