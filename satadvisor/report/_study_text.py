"""The sentences and numbers of the study page: the headline verdict, accuracies over seeds,
paired intervals, why a recommendation is (not) confirmed, how the full runs chose, and what the
rank agreement says.

Everything reads the typed records of :mod:`satadvisor.search.study_record`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from satadvisor._flags import flag
from satadvisor.report._page import fmt_count, fmt_percent, fmt_ratio
from satadvisor.report._plots_study import knobs_text
from satadvisor.search.study_record import (
    Comparison,
    Recommendation,
    StudySummary,
    TrialRow,
    ValidatedConfig,
)

#: Verdict word → badge class on the page.
VERDICT_BADGE = {"confirmed": "good", "not confirmed": "unconfirmed", "tie": "tie"}


def fmt_points(delta: float | None) -> str:
    """An accuracy difference (fraction) in percentage points: 0.0021 → ``+0.2 pt``."""
    if delta is None:
        return "—"
    pts = 100.0 * delta
    if abs(pts) < 0.05:
        return "±0.0 pt"
    return f"{'+' if pts > 0 else '−'}{abs(pts):.1f} pt"


def fmt_interval(low: float | None, high: float | None) -> str:
    """A paired interval of accuracy differences in points: ``[−0.05, +0.45] pt``."""
    if low is None or high is None:
        return "no interval"

    def pts(x: float) -> str:
        return f"{'+' if x > 0 else '−' if x < 0 else '±'}{abs(100.0 * x):.2f}"

    return f"[{pts(low)}, {pts(high)}] pt"


def fmt_spread(record: ValidatedConfig | None, key: Literal["val", "test"] = "val") -> str:
    """Mean accuracy over seeds with its standard deviation: ``95.8 % ± 0.4 pt (3 seeds)``."""
    if record is None:
        return fmt_percent(None)
    n = len(record.seeds)
    mean, std = (
        (record.val_accuracy, record.val_std)
        if key == "val"
        else (record.test_accuracy, record.test_std)
    )
    spread = f" ± {100.0 * std:.1f} pt" if std is not None else ""
    seeds = f" ({n} seed{'' if n == 1 else 's'})" if n else ""
    return f"{fmt_percent(mean)}{spread}{seeds}"


def per_seed(record: ValidatedConfig | None) -> str:
    """Each seed's validation accuracy: ``s0 95.6 % · s1 96.1 % · s2 95.8 %`` ('—': no runs)."""
    runs = record.runs if record is not None else ()
    return " · ".join(f"s{r.seed} {fmt_percent(r.val_accuracy)}" for r in runs) or "—"


def paired_text(c: Comparison | None) -> str:
    """``+0.2 pt, 95 % interval [−0.3, +0.7] pt over 3 seeds`` of a paired comparison."""
    if c is None or not c.n:
        return "—"
    level = round(100 * c.level)
    interval = (
        f"{level} % interval {fmt_interval(c.low, c.high)}" if c.low is not None else "no interval"
    )
    return f"{fmt_points(c.mean)}, {interval} over {c.n} seed{'' if c.n == 1 else 's'}"


def verdict_reason(rec: Recommendation, tolerance: float) -> str:
    """Why a recommendation is (not) confirmed, in one sentence."""
    c = rec.comparison or Comparison()
    seeds = flag("validate_seeds")
    if rec.basis == "one seed":
        return (
            "With one seed there is no interval, so nothing is confirmed: rerun with "
            f"{seeds} 3 or more."
        )
    if rec.basis == "missing runs":
        return (
            f"{c.missing} of the paired runs have no score (diverged, failed or not run "
            "yet), so it is not confirmed: rerun the same command to finish the validation."
        )
    interval = fmt_interval(c.low, c.high)
    if rec.claim == "cheaper":
        floor = fmt_points(-tolerance)
        if rec.verdict == "confirmed":
            return (
                f"Confirmed: the 95 % interval of its validation accuracy minus the baseline's "
                f"({interval}) lies above the tolerance ({floor})."
            )
        return (
            f"Not confirmed: the 95 % interval {interval} reaches below the tolerance "
            f"({floor}); more seeds ({seeds}) narrow it."
        )
    if rec.verdict == "confirmed":
        return f"Confirmed more accurate: the 95 % interval {interval} lies above 0."
    if rec.verdict == "tie":
        return f"A tie: the 95 % interval {interval} contains 0, so it is not more accurate."
    return f"Not confirmed: the 95 % interval is {interval}."


def not_learned_note(n: int) -> str | None:
    """``3 proxies did not learn …``: why some trials are missing from the front (or None)."""
    if not n:
        return None
    return (
        f"{n} prox{'y' if n == 1 else 'ies'} did not learn (validation accuracy not "
        "significantly above the majority-class rate, or a training loss that did not fall): "
        f"{'it is' if n == 1 else 'they are'} left out of the Pareto front, the rule candidates "
        "and the recommendations."
    )


def selection_note(records: Sequence[ValidatedConfig]) -> str:
    """How the full runs were scored and compared (what chose, what is only reported)."""
    seeds = max((len(r.seeds) for r in records), default=0)
    first = records[0] if records else None
    sizes = (
        ", ".join(
            f"{fmt_count(value)} {name}"
            for value, name in (
                (first.train_images, "train"),
                (first.val_images, "val"),
                (first.test_images, "test"),
            )
            if value is not None
        )
        if first is not None
        else ""
    )
    text = (
        "Each full run trains on the training set minus a validation split held out of it; the "
        "validation accuracy alone chooses and orders the recommendations, paired by seed with "
        "the baseline's (the same split for every run). The test set is evaluated once per run "
        "and only reported."
    )
    if sizes:
        text += f" Images per run: {sizes}."
    if seeds == 1:
        text += (
            " These runs used one seed: there is no interval, so no difference is confirmed "
            f"(rerun with {flag('validate_seeds')} 3 or more)."
        )
    elif seeds > 1:
        text += (
            f" {seeds} seeds per configuration: Δ is the mean paired difference of validation "
            "accuracy to the baseline, with its 95 % t-interval."
        )
    return text


def agreement(rho: float | None, records: Sequence[ValidatedConfig]) -> dict[str, object]:
    """Spearman's ρ of proxy vs full-run validation accuracy, and what it means here."""
    n = sum(1 for r in records if r.proxy_accuracy is not None and r.val_accuracy is not None)
    compared = [r.comparison.accuracy if r.comparison else None for r in records if not r.baseline]
    ties = bool(compared) and all(a == "tie" for a in compared)
    if rho is None:
        text = (
            f"Not computed: it needs at least 3 validated configurations with both accuracies "
            f"and not all equal (this study has {n})."
        )
    elif ties:
        text = "Every validated configuration ties with the baseline within its seed interval, so ρ ranks noise: the proxy ranking cannot be judged from these full runs."
    elif rho >= 0.8:
        text = "The proxy ranking carried over to the full runs: the short trainings ranked these configurations as the full ones did."
    elif rho >= 0.4:
        text = "The proxy ranking carried over only partly: treat configurations whose proxy accuracies are close as ties."
    else:
        text = f"The proxy ranking did not carry over: the proxy trainings may be too short to rank these configurations (raise {flag('epochs')}), or the full runs differ by less than their seed spread."
    if rho is not None and n <= 4:
        text += f" With {n} configurations ρ can take only a few values; read it as a rough check."
    return {"rho": rho, "n": n, "text": text}


#: A trial record's status as the report names it (see satadvisor.search.record).
_STATE_NAMES = {
    "completed": "complete",
    "not_learned": "not learned",
    "diverged": "failed",
    "duplicate": "skipped",
    "over_budget": "skipped",
}


def state_name(t: TrialRow) -> str:
    """What the report calls the state of trial ``t``."""
    status = t.status or t.state
    return _STATE_NAMES.get(status, status)


def verdict(s: StudySummary, baseline: ValidatedConfig | None) -> dict[str, str]:
    """The headline: adopt (confirmed only), keep the baseline, or why nothing is decided yet.

    Validation accuracy chose; test accuracy is quoted as reported only.
    """
    recommended, records = s.recommended, s.validation
    confirmed = [r for r in recommended if r.confirmed]
    rerun = "rerun the same satadvisor optimize command"
    if confirmed:
        top = confirmed[0]
        c = top.comparison
        more = f" ({len(confirmed)} configurations are confirmed, cheapest first)" * (
            len(confirmed) > 1
        )
        gain = {
            "more accurate": ", confirmed more accurate",
            "tie": ", the same accuracy within the interval (a tie)",
        }.get(str(c.accuracy if c else None), "")
        return {
            "kind": "adopt",
            "text": (
                f"Adopt {knobs_text(top.knobs)}{more}: its full-run "
                f"validation accuracy was {fmt_spread(top)} against the baseline's "
                f"{fmt_spread(baseline)}, paired difference {paired_text(c)}{gain}, with "
                f"{fmt_ratio(top.macs_ratio)} the MACs and "
                f"{fmt_ratio(top.params_ratio)} the parameters. Test accuracy, "
                f"reported only: {fmt_percent(top.test_accuracy)} against "
                f"{fmt_percent(baseline.test_accuracy if baseline else None)}."
            ),
        }
    if recommended:
        top = recommended[0]
        claim = "is cheaper" if top.claim == "cheaper" else "looked more accurate"
        return {
            "kind": "unconfirmed",
            "text": (
                f"Keep the baseline for now: no validated configuration is confirmed. The best "
                f"candidate, {knobs_text(top.knobs)}, {claim} "
                f"({fmt_ratio(top.macs_ratio)} the MACs): validation accuracy "
                f"{fmt_spread(top)} against the baseline's {fmt_spread(baseline)}, paired "
                f"difference {paired_text(top.comparison)}. "
                f"{verdict_reason(top, s.tolerance)}"
            ),
        }
    if baseline is not None and baseline.val_accuracy is not None:
        alternatives = len(records) - 1
        return {
            "kind": "keep",
            "text": (
                f"Keep the baseline ({knobs_text(baseline.knobs)}): "
                f"{fmt_spread(baseline)} validation accuracy (test "
                f"{fmt_percent(baseline.test_accuracy)}, reported only), "
                f"{fmt_count(baseline.macs)} MACs and "
                f"{fmt_count(baseline.params)} parameters in full runs. "
                + (
                    f"None of the {alternatives} validated alternatives matched its validation "
                    "accuracy with fewer MACs or beat it."
                    if alternatives
                    else "No alternative was validated against it."
                )
            ),
        }
    if records:
        return {
            "kind": "pending",
            "text": "The baseline has no full-run result, so no configuration can be compared "
            f"with it: {rerun} to finish the validation.",
        }
    if not any(t.state == "complete" for t in s.trials):
        failed = sum(1 for t in s.trials if state_name(t) == "failed")
        if s.not_learned:
            return {
                "kind": "pending",
                "text": f"No proxy of the study learned ({s.not_learned} did not learn: their "
                "validation accuracy was not significantly above chance), so there is nothing to "
                f"compare or recommend: raise {flag('epochs')} or the learning rate, or use more "
                "data.",
            }
        if failed:
            return {
                "kind": "pending",
                "text": f"No trial of the study completed ({failed} failed; the reasons are in "
                "All trials below), so there is nothing to compare or recommend.",
            }
        return {
            "kind": "pending",
            "text": f"The study has no complete trial yet: {rerun} to run it (it resumes where "
            "it stopped).",
        }
    return {
        "kind": "pending",
        "text": "No configuration was retrained in full yet, so nothing is recommended: the "
        "results below come from short proxy trainings. Rerun the same satadvisor optimize "
        f"command with {flag('validate_top')} 3 to retrain the best configurations and the "
        "baseline.",
    }
