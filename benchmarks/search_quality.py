"""Search quality: saturation-guided search (hybrid, rules) against plain TPE at the same budget.

For every seed and every strategy, ``satadvisor.search.optimize`` runs one study (objectives
accuracy and MACs, its own SQLite storage in a temporary folder) with the same budget of proxy
trials, then validates its picks in full. Per study:

- the **recommendation**: the first *confirmed* entry of ``summary["recommended"]``, else the
  baseline. The study chooses on validation accuracy only (full runs with
  ``--validate-seeds`` seeds, paired by seed with the baseline: cheaper and its 95 % interval
  above −half a point, or more accurate with the interval above 0); the chosen
  configuration's validation accuracy (what chose) and test accuracy (reported only, never
  used to choose) and MACs are recorded, with the verdict of the first candidate when none is
  confirmed;
- the **hypervolume** of the proxy Pareto front (accuracy maximised, MACs minimised) against
  the reference point (accuracy 0, MACs = 1.1 × the largest MACs of any trial of any study),
  divided by the reference box (1 × reference MACs), so 1.0 would be a free perfect model.

GPU-sized defaults (the ``plain`` family on the whole of Fashion-MNIST, its derived search
space, budget 20, 3 seeds)::

    .venv/bin/python benchmarks/search_quality.py --device cuda

Reduced CPU run recorded in RESULTS.md (width pinned to 8, 2,500-image proxies, full runs on
4,000 images; seeds 3-5 were added with ``--resume``)::

    .venv/bin/python benchmarks/search_quality.py --device cpu --threads 1 \\
        --model plain --dataset fashion-mnist --resolution 16 --set width=8 \\
        --subset 2500 --epochs 4 --full-subset 4000 --full-epochs 10 \\
        --budget 20 --seeds 6 --validate-top 3 \\
        --out benchmarks/results/search_quality_fashion.json

After every study the results so far go to ``<out>.partial.json``; ``--resume`` reuses the
studies of that file (or of a finished ``--out`` made with the same options), e.g. to add seeds.

``--selftest`` checks the 2-D hypervolume on hand-computed examples and exits.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as common

from satadvisor._env import resolve_device
from satadvisor.config import TrainConfig
from satadvisor.search import optimize

NAME = "search_quality"
STRATEGIES = ("hybrid", "tpe", "rules")

Point = tuple[float, float]  # (accuracy, MACs)
#: What is kept of the chosen configuration and of every validated one (study.json fields).
CHOSEN_KEYS = ("knobs", "val_accuracy", "val_std", "test_accuracy", "macs", "params", "source")
CHOSEN_KEYS += ("verdict", "comparison")
VALIDATION_KEYS = ("knobs", "baseline", "proxy_accuracy", "val_accuracy", "test_accuracy")
VALIDATION_KEYS += ("macs", "seeds", "runs", "comparison")


# --------------------------------------------------------------------------- hypervolume


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates (accuracy ≥ and MACs ≤, one of them strictly),
    sorted by MACs; duplicates kept once."""
    unique = sorted(set(points), key=lambda p: (p[1], -p[0]))
    front: list[Point] = []
    for acc, macs in unique:
        if not front or acc > front[-1][0]:
            front.append((acc, macs))
    return front


def hypervolume_2d(points: Sequence[Point], *, ref_accuracy: float, ref_macs: float) -> float:
    """Area dominated by ``points`` inside the box (ref_accuracy, ∞) × (0, ref_macs).

    Accuracy is maximised and MACs minimised; a point dominates the rectangle from itself to
    the reference point. Points at or beyond the reference contribute nothing.
    """
    inside = [(a, m) for a, m in points if a > ref_accuracy and m < ref_macs]
    front = pareto_front(inside)
    area = 0.0
    for i, (acc, macs) in enumerate(front):
        right = front[i + 1][1] if i + 1 < len(front) else ref_macs
        area += (acc - ref_accuracy) * (right - macs)
    return area


def selftest() -> None:
    """Hand-computed hypervolumes."""
    pts = [(0.8, 1.0), (0.9, 2.0), (0.5, 3.0)]  # (0.5, 3) is dominated by (0.9, 2)
    # MACs [1, 2): height 0.8; [2, 4): height 0.9 -> 0.8 + 1.8 = 2.6
    assert math.isclose(hypervolume_2d(pts, ref_accuracy=0.0, ref_macs=4.0), 2.6)
    assert pareto_front(pts) == [(0.8, 1.0), (0.9, 2.0)]
    # Adding a dominated point or a duplicate changes nothing; one beyond the reference neither.
    more = [*pts, (0.7, 2.5), (0.9, 2.0), (0.99, 5.0)]
    assert math.isclose(hypervolume_2d(more, ref_accuracy=0.0, ref_macs=4.0), 2.6)
    # A single point: its rectangle to the reference, here with a non-zero accuracy floor.
    assert math.isclose(hypervolume_2d([(0.75, 1.0)], ref_accuracy=0.5, ref_macs=3.0), 0.5)
    assert hypervolume_2d([], ref_accuracy=0.0, ref_macs=1.0) == 0.0
    # Equal MACs, different accuracy: only the better one counts.
    assert math.isclose(
        hypervolume_2d([(0.6, 1.0), (0.7, 1.0)], ref_accuracy=0.0, ref_macs=2.0), 0.7
    )
    print("selftest passed: hypervolume of the hand example = 2.6")


# --------------------------------------------------------------------------- studies


def run_study(
    strategy: str, seed: int, args: argparse.Namespace, storage_dir: Path
) -> dict[str, Any]:
    """One optimize() study; returns what the comparison needs (and the raw trial points)."""
    name = f"{strategy}-seed{seed}"
    config = TrainConfig(epochs=args.epochs, seed=seed, device=args.device)
    started = time.time()
    summary = optimize(
        args.model,
        budget=args.budget,
        strategy=strategy,
        objectives=("accuracy", "macs"),
        study_name=name,
        storage=f"sqlite:///{storage_dir / name}.db",
        validate_top=args.validate_top,
        validate_seeds=args.validate_seeds,
        full_epochs=args.full_epochs,
        config=config,
        dataset=args.dataset,
        resolution=args.resolution,
        data_dir=args.data_root,
        subset=args.subset,
        full_subset=args.full_subset,
        pinned=args.pinned or None,
    )
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    baseline = next(v for v in summary["validation"] if v.get("baseline"))
    rec = next((r for r in summary["recommended"] if r.get("confirmed")), None)
    candidate = summary["recommended"][0] if summary["recommended"] else None
    chosen = rec or baseline
    return {
        "strategy": strategy,
        "seed": seed,
        "seconds": round(time.time() - started, 1),
        "counted_trials": summary["counted_trials"],
        "complete_trials": len(complete),
        "sources": sorted({t["source"] for t in complete}),
        "rule_trials": sum(str(t["source"]).startswith("rule") for t in complete),
        "points": [[t["accuracy"], t["macs"]] for t in complete],
        "trials": [
            {k: t[k] for k in ("number", "source", "knobs", "accuracy", "macs", "tail_length")}
            for t in complete
        ],
        "baseline": {
            k: baseline.get(k)
            for k in ("knobs", "val_accuracy", "test_accuracy", "macs", "proxy_accuracy", "runs")
        },
        "recommended": rec is not None,
        "chosen": {k: chosen.get(k) for k in CHOSEN_KEYS},
        # the best candidate when none is confirmed: why it was not adopted
        "candidate": None
        if candidate is None or candidate is rec
        else {k: candidate.get(k) for k in ("knobs", "val_accuracy", "verdict", "basis")},
        "validation": [{k: v.get(k) for k in VALIDATION_KEYS} for v in summary["validation"]],
        "rank_agreement": summary["rank_agreement"],
    }


def add_hypervolumes(studies: list[dict[str, Any]]) -> float:
    """Set every study's normalised hypervolume; returns the reference MACs used."""
    ref_macs = 1.1 * max(m for s in studies for _, m in s["points"])
    for s in studies:
        points = [(float(a), float(m)) for a, m in s["points"]]
        s["hypervolume"] = hypervolume_2d(points, ref_accuracy=0.0, ref_macs=ref_macs) / ref_macs
        s["front"] = [list(p) for p in pareto_front(points)]
    return ref_macs


def aggregate(studies: Sequence[dict[str, Any]], strategies: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for strategy in strategies:
        mine = [s for s in studies if s["strategy"] == strategy]
        acc = common.mean_std([s["chosen"]["test_accuracy"] for s in mine])
        val = common.mean_std([s["chosen"]["val_accuracy"] for s in mine])
        macs = common.mean_std([float(s["chosen"]["macs"]) for s in mine])
        hv = common.mean_std([s["hypervolume"] for s in mine])
        rows.append(
            {
                "strategy": strategy,
                "studies": len(mine),
                "val_accuracy": val,
                "test_accuracy": acc,
                "macs": macs,
                "hypervolume": hv,
                "recommended_found": sum(s["recommended"] for s in mine),
                "trials": common.mean_std([float(s["complete_trials"]) for s in mine])[0],
                "rule_trials": common.mean_std([float(s["rule_trials"]) for s in mine])[0],
            }
        )
    return rows


def paired(studies: Sequence[dict[str, Any]], *, against: str = "tpe") -> list[dict[str, Any]]:
    """Per seed, each strategy minus ``against``: hypervolume, chosen test accuracy, MACs ratio."""
    ref = {s["seed"]: s for s in studies if s["strategy"] == against}
    out = []
    for s in studies:
        base = ref.get(s["seed"])
        if s["strategy"] == against or base is None:
            continue
        out.append(
            {
                "strategy": s["strategy"],
                "seed": s["seed"],
                "hypervolume": s["hypervolume"] - base["hypervolume"],
                "val_accuracy": s["chosen"]["val_accuracy"] - base["chosen"]["val_accuracy"],
                "test_accuracy": s["chosen"]["test_accuracy"] - base["chosen"]["test_accuracy"],
                "macs_ratio": s["chosen"]["macs"] / base["chosen"]["macs"],
            }
        )
    return out


def _kept(study: dict[str, Any]) -> str:
    """`` (baseline)``, with why the best candidate was not adopted when there was one."""
    cand = study.get("candidate")
    if not cand:
        return " (baseline)"
    knobs = ", ".join(f"{k}={v}" for k, v in cand["knobs"].items())
    return f" (baseline; candidate {knobs}: {cand['verdict']}, {cand['basis']})"


def tables(result: dict[str, Any]) -> str:
    summary = [
        [
            r["strategy"],
            f"{r['trials']:.1f}",
            f"{r.get('rule_trials', 0.0):.1f}",
            f"{r['recommended_found']}/{r['studies']}",
            common.pct(*r["val_accuracy"]),
            common.pct(*r["test_accuracy"]),
            common.human(r["macs"][0]),
            f"{r['hypervolume'][0]:.4f} ± {r['hypervolume'][1]:.4f}",
        ]
        for r in result["aggregate"]
    ]
    first = common.markdown_table(
        [
            "strategy",
            "trials run",
            "rule trials",
            "confirmed recommendation",
            "chosen: val acc. % (chose)",
            "chosen: test acc. % (reported)",
            "chosen: MACs (mean)",
            "proxy-front hypervolume",
        ],
        summary,
    )
    per = [
        [
            s["strategy"],
            s["seed"],
            s["complete_trials"],
            s["rule_trials"],
            ", ".join(f"{k}={v}" for k, v in s["chosen"]["knobs"].items())
            + ("" if s["recommended"] else _kept(s)),
            common.pct(s["chosen"]["val_accuracy"]),
            common.pct(s["chosen"]["test_accuracy"]),
            common.human(s["chosen"]["macs"]),
            f"{s['hypervolume']:.4f}",
        ]
        for s in result["studies"]
    ]
    second = common.markdown_table(
        [
            "strategy",
            "seed",
            "trials",
            "rule trials",
            "chosen",
            "val acc. %",
            "test acc. %",
            "MACs",
            "HV",
        ],
        per,
    )
    diffs = [
        [
            d["strategy"],
            d["seed"],
            f"{d['hypervolume']:+.4f}",
            f"{100 * d['val_accuracy']:+.2f}",
            f"{100 * d['test_accuracy']:+.2f}",
            f"{d['macs_ratio']:.2f}×",
        ]
        for d in result.get("paired", [])
    ]
    third = common.markdown_table(
        [
            "strategy − tpe",
            "seed",
            "Δ HV",
            "Δ val acc. (points)",
            "Δ test acc. (points)",
            "MACs ratio",
        ],
        diffs,
    )
    return f"{first}\n\n{second}\n\n{third}"


#: Options that must match for a partial result to be resumed.
RESUME_KEYS = (
    "model",
    "dataset",
    "resolution",
    "budget",
    "epochs",
    "full_epochs",
    "subset",
    "full_subset",
    "pinned",
    "validate_seeds",
)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in (*RESUME_KEYS, "validate_top")}


def load_partial(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The studies of an interrupted run (``path``), else of the finished result ``--out``,
    made with the same options (``--resume``: e.g. add seeds); [] if neither exists."""
    if not path.is_file():
        path = args.out
    if not path.is_file():
        return []
    saved = json.loads(path.read_text(encoding="utf-8"))
    options = saved.get("options", {})
    mismatch = [k for k in RESUME_KEYS if k in options and options[k] != getattr(args, k)]
    if mismatch:
        raise SystemExit(f"{path} was run with other {', '.join(mismatch)}; delete it or match")
    # Studies that chose on the test set (before the validation split) are run again.
    return [s for s in saved["studies"] if s["seed"] < args.seeds and "val_accuracy" in s["chosen"]]


def _knob(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    return name.strip(), int(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_run_options(
        parser,
        subset=None,
        epochs=5,
        full_epochs=20,
        seeds=3,
        out=common.RESULTS_DIR / f"{NAME}.json",
    )
    parser.add_argument("--model", default="plain", help="model file or built-in (default plain)")
    parser.add_argument("--dataset", default="fashion-mnist", help="default fashion-mnist")
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--budget", type=int, default=20, help="proxy trials per study (20)")
    parser.add_argument(
        "--full-subset", type=int, default=None, help="cap the full runs' splits (default all)"
    )
    parser.add_argument(
        "--set",
        dest="pinned",
        type=_knob,
        action="append",
        default=[],
        help="pin a knob, KNOB=INT (e.g. width=8); repeatable",
    )
    parser.add_argument(
        "--strategies",
        type=lambda s: s.split(","),
        default=list(STRATEGIES),
        help="default hybrid,tpe,rules",
    )
    parser.add_argument(
        "--validate-top", type=int, default=3, help="picks retrained in full per study (3)"
    )
    parser.add_argument(
        "--validate-seeds",
        type=int,
        default=3,
        help="seeds of each full run; picks are confirmed on paired validation accuracy (3)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="reuse the studies of an interrupted run"
    )
    parser.add_argument("--selftest", action="store_true", help="check the hypervolume and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.selftest:
        selftest()
        return
    if args.validate_top < 1:
        raise SystemExit("--validate-top must be at least 1: the comparison needs full runs")
    args.pinned = dict(args.pinned)
    common.setup(args)
    started = time.time()
    args.device = str(resolve_device(args.device))
    needs_fashion = args.dataset == "fashion-mnist" and args.data_dir is None
    args.data_root = common.fashion_root() if needs_fashion else args.data_dir
    partial = args.out.with_suffix(".partial.json")
    studies = load_partial(partial, args) if args.resume else []
    done = {(s["strategy"], s["seed"]) for s in studies}
    with tempfile.TemporaryDirectory(prefix="satadvisor-search-") as tmp:
        for seed in range(args.seeds):
            for strategy in args.strategies:
                if (strategy, seed) in done:
                    continue
                study = run_study(strategy, seed, args, Path(tmp))
                studies.append(study)
                # Partial results survive an interrupted run (rerun to complete).
                common.write_json(partial, {"options": _options(args), "studies": studies})
                chosen = study["chosen"]
                print(
                    f"{strategy} seed {seed}: {study['complete_trials']} trials, chosen "
                    f"{chosen['knobs']} val {chosen['val_accuracy']:.4f} test "
                    f"{chosen['test_accuracy']:.4f} (reported only) "
                    f"({time.time() - started:.0f} s)",
                    flush=True,
                )
    del args.data_root
    ref_macs = add_hypervolumes(studies)
    result = {
        "benchmark": NAME,
        **common.record(args, started=started, finished=time.time()),
        "resumed_studies": sorted(f"{st}-seed{sd}" for st, sd in done),
        "reference_point": {"accuracy": 0.0, "macs": ref_macs},
        "aggregate": aggregate(studies, args.strategies),
        "paired": paired(studies),
        "studies": studies,
    }
    print(tables(result))
    print(f"wrote {common.write_json(args.out, result)}")
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
