"""Search quality: the saturation-guided search against plain TPE and random search (issue 12).

The space is ``benchmarks/spaces/vgg_fashion.py``: the VGG-style family with VGG16's five-stage
channel schedule on Fashion-MNIST, depth 4-13 convs, 2-5 downsamplings, kernels 3/5/7, width
4/8/12/16, 28 or 32 px (960 configurations); the baseline is VGG16's conv stack (13 convs,
5 pools, kernel 3, width 8) at 28 px, whose last stage reads 2x2 and 1x1 maps.

For every seed and every strategy (``guided``: saturation-guided sampler + pruner +
receptive-field prior; ``tpe``: plain multi-objective TPE; ``random``: Optuna's RandomSampler),
``satadvisor.search.optimize`` runs one study (objectives accuracy and MACs, its own SQLite
storage in a temporary folder, one worker) with the same budget of proxy trials, then
validates its pick in full. Studies run one after another, never in parallel. Per study the
JSON keeps every trial (number, state, status, source, knobs, proxy accuracy, MACs, the proxy
epochs it trained), the total proxy epochs, the wall time, and the validated configurations.

Measures (accuracy maximised, MACs minimised):

- **hypervolume** of the proxy Pareto front (trials with state ``complete``; pruned and
  not-learned trials count toward compute but are not front points) against one reference
  point shared by every study of the run: accuracy 0, MACs = 1.1 × the largest MACs of any
  complete trial of any study; divided by the reference box, so 1.0 would be a free, perfect
  model. The same on log10 MACs (divided by log10(reference / smallest MACs measured)) is
  reported beside it, because the space spans four orders of magnitude of MACs and the linear
  measure is decided almost entirely by the cheap end;
- **compute**: proxy epochs spent (each trial's ``epochs``; a pruned trial counts the epochs it
  trained), cumulative in trial order;
- the **pick**: of the configurations the study validated in full (``--validate-top`` of its
  proxy front, ``--validate-seeds`` seeds each), the one with the highest validation accuracy;
  its validation accuracy (what chose), test accuracy (reported only, never used to choose)
  and MACs. The **recommendation** as ``optimize`` states it (first confirmed entry of
  ``summary["recommended"]``, else the baseline) is recorded too.

Comparisons, paired by seed, each as mean with a 95 % Student-t interval over the seeds, for
guided − tpe, guided − random and tpe − random:

(a) final hypervolume at the same budget (trials); (b) hypervolume at the same compute: per
seed, C = the smaller total proxy epochs of the two studies, and each study's hypervolume of
the trials in order whose cumulative epochs stay ≤ C; (c) the picks' full-run validation and
test accuracy (points) and MACs (geometric-mean ratio); (d) the compute each strategy needs to
reach TPE's final hypervolume: per seed, the cumulative proxy epochs after which its
hypervolume first is ≥ TPE's final one, as a ratio to TPE's total epochs (never: ∞; the
median counts ∞).

Targets (issue 12): (1) guided's hypervolume at least TPE's, the interval of guided − tpe
excluding a loss (lower bound ≥ 0), at the same budget and at the same compute; (2) TPE's final
hypervolume reached by guided with at most 0.7× TPE's compute (median ratio over the seeds).

Reduced CPU defaults (2-core CPU; proxies on 1,500-image stratified subsets for 3 epochs,
batch 64, budget 16, the top proxy configuration and the baseline retrained 6 epochs on 3,000
images with 2 seeds each, 1 torch thread, 10 seeds)::

    .venv/bin/python benchmarks/search_quality.py --device cpu

Its wall time is set by the space, not by the options: the mean configuration costs 163M MACs
(from 0.2M to 3.3G; the baseline 4.2M), about 16 ms per training image on one thread of the
2-core EPYC, so a uniformly drawn proxy trial takes about 80 s and a random study of 16 about
20 minutes; 30 studies take several hours (guided and TPE drift to cheaper configurations and
the pruner stops trials early, so they cost less). Threads, measured on training steps of 8
configurations drawn from the space: 2 threads were 1.3× faster than 1 on an idle machine and
1.4× slower while another process used a core, so the default is 1 (``--threads 2`` on an idle
machine). A run of about an hour needs a cheaper space, e.g. ``--set width=4 --subset 1000
--epochs 2 --full-subset 2000 --full-epochs 4`` (width no longer searched; estimated, not run).

GPU-sized preset (the whole of Fashion-MNIST)::

    .venv/bin/python benchmarks/search_quality.py --device cuda --subset 0 --full-subset 0 \\
        --epochs 5 --full-epochs 20 --budget 30 --validate-top 3 --validate-seeds 3 \\
        --seeds 10 --out benchmarks/results/search_quality_vgg_fashion_gpu.json

After every study the results so far (with the comparisons of the finished seeds) go to
``<out>.partial.json``; ``--resume`` reuses the studies of that file (or of a finished
``--out`` made with the same options), e.g. to add seeds or continue an interrupted run.

``--selftest`` checks the hypervolume, the prefix and reach computations and the paired
intervals on hand-computed examples and exits.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import _common as common
from scipy import stats

NAME = "search_quality"
STRATEGIES = ("guided", "tpe", "random")
#: Paired comparisons, first minus second.
PAIRS = (("guided", "tpe"), ("guided", "random"), ("tpe", "random"))
DEFAULT_MODEL = common.HERE / "spaces" / "vgg_fashion.py"
DEFAULT_OUT = common.RESULTS_DIR / f"{NAME}_vgg_fashion.json"
#: ``state`` of a trial row whose accuracy and MACs are objective values (summary._trial_row:
#: ``TrialState.name.lower()``).
COMPLETE = "complete"
NOT_LEARNED = "not_learned"
LEVEL = 0.95
#: Target 2: TPE's final hypervolume reached with at most this fraction of its compute.
REACH_TARGET = 0.7

Point = tuple[float, float]  # (accuracy, MACs)
Row = dict[str, Any]
#: What is kept of every validated configuration (study.json fields).
VALIDATION_KEYS = ("knobs", "baseline", "proxy_accuracy", "val_accuracy", "val_std")
VALIDATION_KEYS += ("test_accuracy", "macs", "params", "seeds", "runs", "comparison")
TRIAL_KEYS = ("number", "state", "status", "source", "knobs", "accuracy", "macs", "epochs")
TRIAL_KEYS += ("wall_time",)


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
    """Area dominated by ``points`` inside the box (ref_accuracy, ∞) × (−∞, ref_macs).

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


def front_points(trials: Iterable[Row]) -> list[Point]:
    """(accuracy, MACs) of the complete trials that learned: the candidates for the front."""
    return [
        (float(t["accuracy"]), float(t["macs"]))
        for t in trials
        if t.get("state") == COMPLETE
        and t.get("status") != NOT_LEARNED
        and t.get("accuracy") is not None
        and t.get("macs") is not None
    ]


class Reference:
    """The reference point shared by every study of a run, and the normalised hypervolumes.

    ``linear``: area over (accuracy, MACs) / ``ref_macs``. ``log``: area over (accuracy,
    log10 MACs) / log10(``ref_macs`` / ``min_macs``).
    """

    def __init__(self, ref_macs: float, min_macs: float) -> None:
        self.ref_macs = float(ref_macs)
        self.min_macs = float(min_macs)

    @classmethod
    def of(cls, studies: Iterable[dict[str, Any]]) -> Reference:
        macs = [m for s in studies for _, m in front_points(s["trials"])]
        if not macs:
            raise ValueError("no complete trial in any study: no reference point")
        return cls(1.1 * max(macs), min(macs))

    def linear(self, points: Sequence[Point]) -> float:
        return hypervolume_2d(points, ref_accuracy=0.0, ref_macs=self.ref_macs) / self.ref_macs

    def log(self, points: Sequence[Point]) -> float:
        logged = [(a, math.log10(m)) for a, m in points if m > 0]
        top = math.log10(self.ref_macs)
        span = top - math.log10(self.min_macs)
        return hypervolume_2d(logged, ref_accuracy=0.0, ref_macs=top) / span if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": 0.0,
            "macs": self.ref_macs,
            "linear_normaliser": self.ref_macs,
            "log_normaliser": math.log10(self.ref_macs / self.min_macs),
            "smallest_macs": self.min_macs,
        }


# --------------------------------------------------------------------------- compute


def ordered(trials: Iterable[Row]) -> list[Row]:
    """Trials in the order they ran (one worker: their numbers)."""
    return sorted(trials, key=lambda t: int(t["number"]))


def total_epochs(trials: Iterable[Row]) -> int:
    return sum(int(t.get("epochs") or 0) for t in trials)


def hypervolume_curve(
    trials: Iterable[Row], hv: Callable[[Sequence[Point]], float]
) -> list[tuple[int, float]]:
    """(cumulative proxy epochs, hypervolume of the trials so far) after each trial in order."""
    curve, cum, points = [], 0, []
    for t in ordered(trials):
        cum += int(t.get("epochs") or 0)
        points += front_points([t])
        curve.append((cum, hv(points)))
    return curve


def hypervolume_within(
    trials: Iterable[Row], epochs: float, hv: Callable[[Sequence[Point]], float]
) -> float:
    """Hypervolume of the longest prefix of the trials (in order) whose cumulative proxy epochs
    stay ≤ ``epochs``."""
    best = hv([])
    for cum, value in hypervolume_curve(trials, hv):
        if cum > epochs:
            break
        best = value
    return best


def epochs_to_reach(
    trials: Iterable[Row], target: float, hv: Callable[[Sequence[Point]], float]
) -> int | None:
    """Cumulative proxy epochs after which the hypervolume first is ≥ ``target`` (a relative
    1e-9 of slack for float sums); None when it never is."""
    for cum, value in hypervolume_curve(trials, hv):
        if value >= target - 1e-9 * max(abs(target), 1.0):
            return cum
    return None


# --------------------------------------------------------------------------- statistics


def paired_interval(deltas: Sequence[float], *, level: float = LEVEL) -> dict[str, Any]:
    """Mean of per-seed differences and its ``level`` Student-t interval (None below 2)."""
    d = [float(x) for x in deltas]
    out: dict[str, Any] = {"n": len(d), "mean": statistics.fmean(d) if d else None}
    out.update(low=None, high=None, level=level, deltas=d)
    if len(d) >= 2:
        sd = statistics.stdev(d)
        half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * sd / math.sqrt(len(d))
        out.update(low=out["mean"] - half, high=out["mean"] + half)
    return out


def ratio_interval(ratios: Sequence[float], *, level: float = LEVEL) -> dict[str, Any]:
    """Geometric-mean ratio and its interval (the t-interval of the log ratios, exponentiated)."""
    logs = paired_interval([math.log(r) for r in ratios], level=level)
    ex = {k: (math.exp(logs[k]) if logs[k] is not None else None) for k in ("mean", "low", "high")}
    return {**logs, **ex, "deltas": [float(r) for r in ratios], "scale": "ratio"}


def median_with_inf(values: Sequence[float | None]) -> float | None:
    """Median where None counts as +∞ (never reached); None for no values, inf if most are."""
    if not values:
        return None
    return statistics.median([math.inf if v is None else v for v in values])


# --------------------------------------------------------------------------- studies


def pick_of(validation: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Of the validated configurations (baseline aside), the one with the highest validation
    accuracy (test accuracy is never read here); None when none was validated with a score."""
    cands = [v for v in validation if not v.get("baseline") and v.get("val_accuracy") is not None]
    return max(cands, key=lambda v: v["val_accuracy"]) if cands else None


def trial_row(t: Row, proxy_epochs: int) -> Row:
    """The fields kept of a summary trial row. Without ``epochs`` (a summary from before it
    was recorded), a complete or not-learned trial is taken to have trained ``proxy_epochs``,
    any other none — marked ``epochs_assumed``."""
    row = {k: t.get(k) for k in TRIAL_KEYS}
    if row["epochs"] is None:
        trained = t.get("state") == COMPLETE or t.get("status") == NOT_LEARNED
        row["epochs"] = proxy_epochs if trained else 0
        row["epochs_assumed"] = True
    row["epochs"] = int(row["epochs"])
    return row


def study_record(summary: dict[str, Any], strategy: str, seed: int, **extra: Any) -> dict[str, Any]:
    """What the comparison keeps of one ``optimize`` summary."""
    proxy_epochs = int(extra.pop("proxy_epochs"))
    trials = ordered(trial_row(t, proxy_epochs) for t in summary["trials"])
    validation = [{k: v.get(k) for k in VALIDATION_KEYS} for v in summary["validation"]]
    baseline = next((v for v in validation if v.get("baseline")), None)
    rec = next((r for r in summary["recommended"] if r.get("confirmed")), None)
    pick = pick_of(validation) or baseline
    states: dict[str, int] = {}
    for t in trials:
        key = NOT_LEARNED if t.get("status") == NOT_LEARNED else str(t.get("state"))
        states[key] = states.get(key, 0) + 1
    return {
        "strategy": strategy,
        "seed": seed,
        **extra,
        "counted_trials": summary.get("counted_trials"),
        "states": states,
        "sources": sorted({str(t.get("source")) for t in trials}),
        "total_epochs": total_epochs(trials),
        "epochs_assumed": any(t.get("epochs_assumed") for t in trials),
        "trials": trials,
        "baseline": baseline,
        "pick": None if pick is None else {k: pick.get(k) for k in VALIDATION_KEYS},
        "pick_is_baseline": pick is baseline,
        "recommended": None if rec is None else {k: rec.get(k) for k in VALIDATION_KEYS},
        "validation": validation,
        "rank_agreement": summary.get("rank_agreement"),
    }


def run_study(
    strategy: str, seed: int, args: argparse.Namespace, storage_dir: Path
) -> dict[str, Any]:
    """One optimize() study on its own SQLite storage."""
    from satadvisor.config import TrainConfig
    from satadvisor.search import optimize

    name = f"{strategy}-seed{seed}"
    config = TrainConfig(
        epochs=args.epochs, seed=seed, device=args.device, batch_size=args.batch_size
    )
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
        data_dir=args.data_root,
        subset=args.subset,
        full_subset=args.full_subset,
        pinned=args.pinned or None,
        # the model file's default resolution (and its SEARCH_SPACE) unless one is given
        **({} if args.resolution is None else {"resolution": args.resolution}),
    )
    seconds = round(time.time() - started, 1)
    return study_record(
        summary.to_dict(), strategy, seed, seconds=seconds, proxy_epochs=args.epochs
    )


# --------------------------------------------------------------------------- analysis


def _acc(record: dict[str, Any] | None, key: str) -> float | None:
    value = None if record is None else record.get(key)
    return None if value is None else float(value)


def compare(a: dict[str, Any], b: dict[str, Any], ref: Reference) -> dict[str, Any]:
    """One seed's paired differences, ``a`` minus ``b``."""
    budget = min(a["total_epochs"], b["total_epochs"])
    hv_a = hypervolume_within(a["trials"], budget, ref.linear)
    hv_b = hypervolume_within(b["trials"], budget, ref.linear)
    out: dict[str, Any] = {
        "seed": a["seed"],
        "hypervolume": a["hypervolume"] - b["hypervolume"],
        "hypervolume_log": a["hypervolume_log"] - b["hypervolume_log"],
        "same_compute_epochs": budget,
        "same_compute_hypervolumes": [hv_a, hv_b],
        "hypervolume_same_compute": hv_a - hv_b,
        "epochs_ratio": a["total_epochs"] / b["total_epochs"] if b["total_epochs"] else None,
    }
    for key in ("val_accuracy", "test_accuracy"):
        x, y = _acc(a["pick"], key), _acc(b["pick"], key)
        out[f"pick_{key}"] = None if x is None or y is None else x - y
    ma, mb = _acc(a["pick"], "macs"), _acc(b["pick"], "macs")
    out["pick_macs_ratio"] = ma / mb if ma and mb else None
    return out


#: Paired measures: key in compare()'s rows, label, how the interval is taken.
MEASURES = (
    ("hypervolume", "(a) final proxy-front HV, same budget", "diff"),
    ("hypervolume_same_compute", "(b) HV at the same compute (proxy epochs)", "diff"),
    ("hypervolume_log", "(a') final HV on log10 MACs", "diff"),
    ("pick_val_accuracy", "(c) pick: full-run val. acc. (points; chose)", "points"),
    ("pick_test_accuracy", "(c) pick: test acc. (points; reported only)", "points"),
    ("pick_macs_ratio", "(c) pick: MACs ratio (geometric mean)", "ratio"),
    ("epochs_ratio", "total proxy epochs ratio (geometric mean)", "ratio"),
)


def analyse(studies: Sequence[dict[str, Any]], strategies: Sequence[str]) -> dict[str, Any]:
    """Hypervolumes against one shared reference, the paired comparisons, reach, targets."""
    ref = Reference.of(studies)
    for s in studies:
        points = front_points(s["trials"])
        s["hypervolume"] = ref.linear(points)
        s["hypervolume_log"] = ref.log(points)
        s["front"] = [list(p) for p in pareto_front(points)]
    by = {(s["strategy"], s["seed"]): s for s in studies}
    seeds = sorted({s["seed"] for s in studies})
    comparisons = []
    for first, second in PAIRS:
        if first not in strategies or second not in strategies:
            continue
        rows = [
            compare(by[first, seed], by[second, seed], ref)
            for seed in seeds
            if (first, seed) in by and (second, seed) in by
        ]
        summary = {}
        for key, _, kind in MEASURES:
            values = [r[key] for r in rows if r[key] is not None]
            summary[key] = ratio_interval(values) if kind == "ratio" else paired_interval(values)
        comparisons.append({"pair": f"{first} - {second}", "seeds": rows, "summary": summary})
    reach = []
    for strategy in strategies:
        per_seed = []
        for seed in seeds:
            tpe, mine = by.get(("tpe", seed)), by.get((strategy, seed))
            if tpe is None or mine is None or not tpe["total_epochs"]:
                continue
            epochs = epochs_to_reach(mine["trials"], tpe["hypervolume"], ref.linear)
            per_seed.append(
                {
                    "seed": seed,
                    "target": tpe["hypervolume"],
                    "epochs": epochs,
                    "tpe_epochs": tpe["total_epochs"],
                    "ratio": None if epochs is None else epochs / tpe["total_epochs"],
                }
            )
        ratios = [r["ratio"] for r in per_seed]
        reach.append(
            {
                "strategy": strategy,
                "seeds": per_seed,
                "reached": sum(r is not None for r in ratios),
                "n": len(ratios),
                "median_ratio": median_with_inf(ratios),
                "within_target": sum(r is not None and r <= REACH_TARGET for r in ratios),
            }
        )
    return {
        "reference_point": ref.to_dict(),
        "aggregate": aggregate(studies, strategies),
        "comparisons": comparisons,
        "reach": reach,
        "targets": targets(comparisons, reach),
    }


def targets(comparisons: Sequence[dict[str, Any]], reach: Sequence[dict[str, Any]]) -> list[dict]:
    """The two targets of issue 12, each with the numbers it rests on and whether it is met."""
    out = []
    gt = next((c for c in comparisons if c["pair"] == "guided - tpe"), None)
    for key, where in (
        ("hypervolume", "same budget"),
        ("hypervolume_same_compute", "same compute"),
    ):
        s = gt["summary"][key] if gt else None
        met = None if s is None or s["low"] is None else s["low"] >= 0
        out.append(
            {
                "target": f"guided HV >= TPE's, interval of guided - tpe excluding a loss ({where})",
                "mean": None if s is None else s["mean"],
                "low": None if s is None else s["low"],
                "high": None if s is None else s["high"],
                "met": met,
            }
        )
    g = next((r for r in reach if r["strategy"] == "guided"), None)
    median = None if g is None else g["median_ratio"]
    out.append(
        {
            "target": f"TPE's final HV reached by guided with <= {REACH_TARGET}x TPE's proxy epochs "
            "(median over seeds, never = inf)",
            "median_ratio": median,
            "reached": None if g is None else f"{g['reached']}/{g['n']}",
            "within_target": None if g is None else f"{g['within_target']}/{g['n']}",
            "met": None if median is None else median <= REACH_TARGET,
        }
    )
    return out


def aggregate(studies: Sequence[dict[str, Any]], strategies: Sequence[str]) -> list[dict]:
    rows = []
    for strategy in strategies:
        mine = [s for s in studies if s["strategy"] == strategy]
        if not mine:
            continue
        picks = [s["pick"] for s in mine if s["pick"]]

        def ms(values: Iterable[Any]) -> tuple[float, float]:
            return common.mean_std([float(v) for v in values if v is not None])

        rows.append(
            {
                "strategy": strategy,
                "studies": len(mine),
                "complete": ms(s["states"].get(COMPLETE, 0) for s in mine),
                "pruned": ms(s["states"].get("pruned", 0) for s in mine),
                "not_learned": ms(s["states"].get(NOT_LEARNED, 0) for s in mine),
                "total_epochs": ms(s["total_epochs"] for s in mine),
                "seconds": ms(s["seconds"] for s in mine),
                "hypervolume": ms(s["hypervolume"] for s in mine),
                "hypervolume_log": ms(s["hypervolume_log"] for s in mine),
                "pick_val_accuracy": ms(p.get("val_accuracy") for p in picks),
                "pick_test_accuracy": ms(p.get("test_accuracy") for p in picks),
                "pick_macs_geomean": math.exp(
                    statistics.fmean(math.log(p["macs"]) for p in picks if p.get("macs"))
                )
                if any(p.get("macs") for p in picks)
                else None,
                "picks_baseline": sum(s["pick_is_baseline"] for s in mine),
                "confirmed": sum(s["recommended"] is not None for s in mine),
            }
        )
    return rows


# --------------------------------------------------------------------------- output


def _interval(s: dict[str, Any], kind: str) -> str:
    if s["mean"] is None:
        return "–"
    if kind == "ratio":
        fmt = "{:.2f}×"
    elif kind == "points":
        s = {k: (100 * s[k] if s[k] is not None else None) for k in ("mean", "low", "high")}
        fmt = "{:+.2f}"
    else:
        fmt = "{:+.4f}"
    text = fmt.format(s["mean"])
    if s["low"] is not None:
        text += f" [{fmt.format(s['low'])}, {fmt.format(s['high'])}]"
    return text


def _knobs(knobs: dict[str, Any] | None) -> str:
    short = {"depth": "d", "downsamplings": "ds", "kernel_size": "k", "width": "w"}
    short["resolution"] = "px"
    return " ".join(f"{short.get(k, k)}{v}" for k, v in (knobs or {}).items())


def _ratio(r: float | None) -> str:
    return "never" if r is None or math.isinf(r) else f"{r:.2f}×"


def tables(analysis: dict[str, Any], studies: Sequence[dict[str, Any]]) -> str:
    ref = analysis["reference_point"]
    parts = [
        f"Reference point (all studies): accuracy 0, MACs {common.human(ref['macs'])}; "
        f"HV divided by {common.human(ref['linear_normaliser'])} MACs (linear) or by "
        f"log10({common.human(ref['macs'])} / {common.human(ref['smallest_macs'])}) = "
        f"{ref['log_normaliser']:.3f} (log10 MACs)."
    ]
    agg = [
        [
            r["strategy"],
            r["studies"],
            f"{r['complete'][0]:.1f} / {r['pruned'][0]:.1f} / {r['not_learned'][0]:.1f}",
            f"{r['total_epochs'][0]:.1f} ± {r['total_epochs'][1]:.1f}",
            f"{r['seconds'][0] / 60:.1f}",
            f"{r['hypervolume'][0]:.4f} ± {r['hypervolume'][1]:.4f}",
            f"{r['hypervolume_log'][0]:.4f} ± {r['hypervolume_log'][1]:.4f}",
            common.pct(*r["pick_val_accuracy"]),
            common.pct(*r["pick_test_accuracy"]),
            common.human(r["pick_macs_geomean"]) if r["pick_macs_geomean"] else "–",
            f"{r['picks_baseline']} / {r['confirmed']}",
        ]
        for r in analysis["aggregate"]
    ]
    parts.append(
        common.markdown_table(
            [
                "strategy",
                "studies",
                "trials complete / pruned / not learned",
                "proxy epochs",
                "wall min",
                "HV",
                "HV (log MACs)",
                "pick: val. acc. % (chose)",
                "pick: test acc. % (reported)",
                "pick: MACs (geo. mean)",
                "pick = baseline / confirmed rec.",
            ],
            agg,
        )
    )
    comps = analysis["comparisons"]
    rows = [
        [label, *(_interval(c["summary"][key], kind) for c in comps)]
        for key, label, kind in MEASURES
    ]
    n = max((c["summary"]["hypervolume"]["n"] for c in comps), default=0)
    head = [f"paired by seed, mean [95 % t-interval], n = {n}", *(c["pair"] for c in comps)]
    parts.append(common.markdown_table(head, rows))
    reach = [
        [
            r["strategy"],
            f"{r['reached']}/{r['n']}",
            _ratio(r["median_ratio"]),
            f"{r['within_target']}/{r['n']}",
            " ".join(_ratio(s["ratio"]) for s in r["seeds"]),
        ]
        for r in analysis["reach"]
    ]
    parts.append(
        common.markdown_table(
            [
                "(d) strategy",
                "seeds reaching TPE's final HV",
                "median proxy epochs / TPE's",
                f"≤ {REACH_TARGET}×",
                "per seed",
            ],
            reach,
        )
    )
    lines = []
    for t in analysis["targets"]:
        verdict = {True: "**met**", False: "**not met**", None: "not decidable"}[t["met"]]
        if "median_ratio" in t:
            numbers = (
                f"median {_ratio(t['median_ratio'])}, reached {t['reached']}, "
                f"≤ {REACH_TARGET}× in {t['within_target']}"
            )
        else:
            numbers = _interval(t, "diff")
        lines.append(f"- Target: {t['target']}: {numbers} → {verdict}")
    parts.append("\n".join(lines))
    per = [
        [
            s["strategy"],
            s["seed"],
            " ".join(f"{k} {v}" for k, v in sorted(s["states"].items())),
            s["total_epochs"],
            f"{s['hypervolume']:.4f}",
            f"{s['hypervolume_log']:.4f}",
            _knobs((s["pick"] or {}).get("knobs"))
            + (" (baseline)" if s["pick_is_baseline"] else ""),
            common.pct(_acc(s["pick"], "val_accuracy") or math.nan),
            common.pct(_acc(s["pick"], "test_accuracy") or math.nan),
            common.human(_acc(s["pick"], "macs") or 0),
            f"{s['seconds'] / 60:.1f}",
        ]
        for s in sorted(studies, key=lambda s: (s["seed"], STRATEGIES.index(s["strategy"])))
    ]
    parts.append(
        common.markdown_table(
            [
                "strategy",
                "seed",
                "trials",
                "proxy epochs",
                "HV",
                "HV log",
                "pick",
                "val %",
                "test %",
                "MACs",
                "min",
            ],
            per,
        )
    )
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- selftest


def _fake(rows: Sequence[tuple[str, float | None, float | None, int]]) -> list[Row]:
    return [
        {"number": i, "state": st, "status": None, "accuracy": a, "macs": m, "epochs": e}
        for i, (st, a, m, e) in enumerate(rows)
    ]


def selftest() -> None:
    """Hand-computed hypervolumes, prefixes, reach and paired intervals."""
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

    # Trial rows: pruned and not-learned trials spend epochs but are no front points.
    ref = Reference(4.0, 1.0)
    a = _fake(
        [
            ("complete", 0.5, 3.0, 3),  # cum 3: HV 0.5*1/4 = 0.125
            ("pruned", 0.95, 1.0, 1),  # cum 4: no point
            ("complete", 0.8, 1.0, 3),  # cum 7: 0.8*3/4 = 0.6
            ("complete", 0.9, 2.0, 3),  # cum 10: (0.8*1 + 0.9*2)/4 = 0.65
        ]
    )
    a.append({**a[0], "number": 4, "state": "pruned", "status": NOT_LEARNED, "epochs": 3})
    assert front_points(a) == [(0.5, 3.0), (0.8, 1.0), (0.9, 2.0)]
    assert total_epochs(a) == 13
    curve = hypervolume_curve(list(reversed(a)), ref.linear)  # order by number, not by list
    assert [c for c, _ in curve] == [3, 4, 7, 10, 13]
    assert all(
        math.isclose(x, y) for (_, x), y in zip(curve, [0.125, 0.125, 0.6, 0.65, 0.65], strict=True)
    )
    assert hypervolume_within(a, 2, ref.linear) == 0.0
    assert math.isclose(hypervolume_within(a, 6, ref.linear), 0.125)
    assert math.isclose(hypervolume_within(a, 7, ref.linear), 0.6)
    assert epochs_to_reach(a, 0.6, ref.linear) == 7
    assert epochs_to_reach(a, 0.65, ref.linear) == 10
    assert epochs_to_reach(a, 0.7, ref.linear) is None
    # log-MACs HV: point (0.8, 10) with reference 100 and floor 1 -> 0.8 * 1 / 2 = 0.4
    assert math.isclose(Reference(100.0, 1.0).log([(0.8, 10.0)]), 0.4)
    # A missing "epochs" (older summary): complete trials trained the proxy epochs, others 0.
    old = trial_row({"number": 0, "state": "complete", "accuracy": 0.5, "macs": 1.0}, 5)
    assert old["epochs"] == 5 and old["epochs_assumed"]
    assert trial_row({"number": 1, "state": "fail"}, 5)["epochs"] == 0

    # A summary as optimize() returns it -> the study record (pick: best validation accuracy).
    base = {"baseline": True, "knobs": {"depth": 13}, "val_accuracy": 0.8, "macs": 4e6}
    cand1 = {"knobs": {"depth": 4}, "val_accuracy": 0.82, "test_accuracy": 0.1, "macs": 1e6}
    cand2 = {"knobs": {"depth": 6}, "val_accuracy": 0.81, "test_accuracy": 0.9, "macs": 2e6}
    summary = {
        "trials": [
            {"number": 1, "state": "pruned", "status": "pruned", "epochs": 1, "macs": 2.0},
            {"number": 0, "state": "complete", "accuracy": 0.7, "macs": 4e6, "epochs": 3},
            {"number": 2, "state": "pruned", "status": NOT_LEARNED, "epochs": 3},
        ],
        "validation": [base, cand1, cand2],
        "recommended": [{**cand2, "confirmed": False}],
        "counted_trials": 3,
    }
    rec = study_record(summary, "tpe", 0, seconds=1.0, proxy_epochs=3)
    assert [t["number"] for t in rec["trials"]] == [0, 1, 2] and rec["total_epochs"] == 7
    assert rec["states"] == {"complete": 1, "pruned": 1, NOT_LEARNED: 1}
    assert rec["pick"]["knobs"] == {"depth": 4} and not rec["pick_is_baseline"]
    assert rec["recommended"] is None and not rec["epochs_assumed"]
    summary["validation"] = [base]
    assert study_record(summary, "tpe", 0, seconds=1.0, proxy_epochs=3)["pick_is_baseline"]

    # Paired t-interval: deltas 1, 2, 3 -> mean 2, sd 1, t(0.975, 2) = 4.302653.
    iv = paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert math.isclose(iv["mean"], 2.0)
    assert math.isclose(iv["low"], 2.0 - half) and math.isclose(iv["high"], 2.0 + half)
    x, y = [0.9, 0.8, 0.7, 0.85], [0.88, 0.81, 0.66, 0.8]  # same as scipy's paired t-test
    ci = stats.ttest_rel(x, y).confidence_interval(LEVEL)
    iv = paired_interval([p - q for p, q in zip(x, y, strict=True)])
    assert math.isclose(iv["low"], ci.low) and math.isclose(iv["high"], ci.high)
    assert paired_interval([0.5])["low"] is None and paired_interval([])["mean"] is None
    r = ratio_interval([2.0, 8.0])  # geometric mean 4
    assert math.isclose(r["mean"], 4.0) and r["low"] < 4.0 < r["high"]
    assert median_with_inf([0.5, None, 0.6]) == 0.6
    assert median_with_inf([0.5, None, None]) == math.inf

    # The whole analysis on two seeds of three made-up strategies.
    def study(strategy: str, seed: int, rows: list[Row], pick_acc: float) -> dict[str, Any]:
        pick = {"knobs": {"depth": 4}, "val_accuracy": pick_acc, "test_accuracy": pick_acc}
        pick["macs"] = 1.0
        states = {COMPLETE: sum(t["state"] == COMPLETE for t in rows)}
        return {
            "strategy": strategy,
            "seed": seed,
            "seconds": 1.0,
            "states": states,
            "trials": rows,
            "total_epochs": total_epochs(rows),
            "pick": pick,
            "pick_is_baseline": False,
            "recommended": None,
        }

    tpe = _fake([("complete", 0.5, 3.0, 3), ("complete", 0.8, 1.0, 3), ("complete", 0.9, 2.0, 3)])
    fast = _fake([("complete", 0.8, 1.0, 3), ("pruned", 0.1, 3.0, 1), ("complete", 0.9, 2.0, 3)])
    slow = _fake([("complete", 0.5, 3.0, 3), ("complete", 0.6, 1.0, 3), ("complete", 0.7, 2, 3)])
    studies = [
        study(st, seed, rows, acc)
        for seed in (0, 1)
        for st, rows, acc in (("guided", fast, 0.9), ("tpe", tpe, 0.8), ("random", slow, 0.7))
    ]
    result = analyse(studies, STRATEGIES)
    assert math.isclose(result["reference_point"]["macs"], 3.3)
    gt = result["comparisons"][0]
    assert gt["pair"] == "guided - tpe"
    assert math.isclose(gt["summary"]["hypervolume"]["mean"], 0.0, abs_tol=1e-12)
    # Same compute: C = min(7, 9) = 7; guided all 7 epochs (HV of its front), TPE its first two.
    seed0 = gt["seeds"][0]
    assert seed0["same_compute_epochs"] == 7
    hv_tpe7 = Reference(3.3, 1.0).linear([(0.5, 3.0), (0.8, 1.0)])
    assert math.isclose(seed0["same_compute_hypervolumes"][1], hv_tpe7)
    assert seed0["hypervolume_same_compute"] > 0
    assert math.isclose(gt["summary"]["pick_val_accuracy"]["mean"], 0.1)
    reach = {r["strategy"]: r for r in result["reach"]}
    assert reach["guided"]["median_ratio"] == 7 / 9 and reach["guided"]["reached"] == 2
    assert reach["tpe"]["median_ratio"] == 1.0
    assert reach["random"]["median_ratio"] == math.inf and reach["random"]["reached"] == 0
    met = [t["met"] for t in result["targets"]]
    # Zero spread: the interval is a point, HV difference 0 -> "excluding a loss" holds.
    assert met == [True, True, False], met
    tables(result, studies)
    print("selftest passed: hypervolume of the hand example = 2.6; prefixes, reach, intervals")


# --------------------------------------------------------------------------- main


#: Options that must match for a partial result to be resumed.
RESUME_KEYS = (
    "model",
    "dataset",
    "resolution",
    "budget",
    "epochs",
    "batch_size",
    "full_epochs",
    "subset",
    "full_subset",
    "pinned",
    "validate_top",
    "validate_seeds",
)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RESUME_KEYS}


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
    return [
        s
        for s in saved["studies"]
        if args.first_seed <= s["seed"] < args.first_seed + args.seeds
        and s["strategy"] in args.strategies
        and "total_epochs" in s
    ]


def _knob(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    return name.strip(), int(value)


def _all(value: str) -> int | None:
    n = int(value)
    return None if n == 0 else n


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_run_options(parser, subset=1500, epochs=3, full_epochs=6, seeds=10, out=DEFAULT_OUT)
    parser.set_defaults(threads=1)
    parser.add_argument(
        "--full-subset", type=_all, default=3000, help="full-run images per split (3000; 0: all)"
    )
    parser.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="model file (default spaces/vgg_fashion.py)"
    )
    parser.add_argument("--dataset", default="fashion-mnist", help="default fashion-mnist")
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--budget", type=int, default=16, help="proxy trials per study (16)")
    parser.add_argument("--batch-size", type=int, default=64, help="proxy and full runs (64)")
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
        help="default guided,tpe,random",
    )
    parser.add_argument(
        "--validate-top", type=int, default=1, help="picks retrained in full per study (1)"
    )
    parser.add_argument("--validate-seeds", type=int, default=2, help="seeds of each full run (2)")
    parser.add_argument(
        "--resume", action="store_true", help="reuse the studies of an interrupted run"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (split a run over cores)"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="analyse the studies of these result (or .partial) files together and write --out",
    )
    parser.add_argument("--selftest", action="store_true", help="check the computations and exit")
    return parser.parse_args(argv)


def merge(args: argparse.Namespace) -> None:
    """One analysis over the studies of several runs made with the same options (seeds split
    over processes); a (strategy, seed) study present twice is taken once."""
    studies: dict[tuple[str, int], dict[str, Any]] = {}
    options = None
    for path in args.merge:
        saved = json.loads(path.read_text(encoding="utf-8"))
        given = saved.get("options") or saved
        opts = {k: given.get(k) for k in RESUME_KEYS}
        if options is not None and opts != options:
            raise SystemExit(f"{path} was run with other options: {opts} vs {options}")
        options = opts
        for s in saved["studies"]:
            if "total_epochs" in s:
                studies.setdefault((s["strategy"], s["seed"]), s)
    found = sorted({strategy for strategy, _ in studies})
    order = [s for s in STRATEGIES if s in found]
    ordered_studies = [studies[k] for k in sorted(studies, key=lambda k: (k[1], order.index(k[0])))]
    analysis = analyse(ordered_studies, order)
    sources = [json.loads(p.read_text(encoding="utf-8")) for p in args.merge]
    result = {
        "benchmark": NAME,
        "merged_from": [str(p) for p in args.merge],
        "commands": [src.get("command") for src in sources],
        "environments": [src.get("environment") for src in sources],
        "wall_seconds": [src.get("wall_seconds") for src in sources],
        "options": options,
        **analysis,
        "studies": ordered_studies,
    }
    print(tables(analysis, ordered_studies))
    print(f"wrote {common.write_json(args.out, result)}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.selftest:
        selftest()
        return
    if args.merge:
        merge(args)
        return
    from satadvisor._env import resolve_device

    if args.validate_top < 1:
        raise SystemExit("--validate-top must be at least 1: the comparison needs full runs")
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}: use {', '.join(STRATEGIES)}")
    args.pinned = dict(args.pinned)
    args.subset = args.subset or None  # 0: the whole split
    common.setup(args)
    started = time.time()
    args.device = str(resolve_device(args.device))
    needs_fashion = args.dataset == "fashion-mnist" and args.data_dir is None
    args.data_root = common.fashion_root() if needs_fashion else args.data_dir
    partial = args.out.with_suffix(".partial.json")
    studies = load_partial(partial, args) if args.resume else []
    done = {(s["strategy"], s["seed"]) for s in studies}

    def snapshot() -> dict[str, Any]:
        try:
            return analyse(studies, args.strategies)
        except ValueError as exc:  # no complete trial yet
            return {"error": str(exc)}

    with tempfile.TemporaryDirectory(prefix="satadvisor-search-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in args.strategies:
                if (strategy, seed) in done:
                    continue
                study = run_study(strategy, seed, args, Path(tmp))
                studies.append(study)
                # Partial results survive an interrupted run (--resume continues).
                common.write_json(
                    partial,
                    {"options": _options(args), "studies": studies, "analysis": snapshot()},
                )
                pick = study["pick"] or {}
                print(
                    f"{strategy} seed {seed}: {study['states']}, {study['total_epochs']} proxy "
                    f"epochs, pick {_knobs(pick.get('knobs'))} val {pick.get('val_accuracy')} "
                    f"test {pick.get('test_accuracy')} (reported only); {study['seconds']:.0f} s "
                    f"(total {time.time() - started:.0f} s)",
                    flush=True,
                )
    del args.data_root
    analysis = analyse(studies, args.strategies)
    result = {
        "benchmark": NAME,
        **common.record(args, started=started, finished=time.time()),
        "resumed_studies": sorted(f"{st}-seed{sd}" for st, sd in done),
        **analysis,
        "studies": studies,
    }
    print(tables(analysis, studies))
    print(f"wrote {common.write_json(args.out, result)}")
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
