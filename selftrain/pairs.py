"""Pair builders: scored samples -> DPO preference pairs (TRL column names). Registered by `pairs.builder`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from selftrain.registry import Registry

Row = dict[str, Any]
# (samples of one question joined with their scores, min_margin) -> pairs
PairBuilder = Callable[[list[Row], float], list[Row]]
PAIR_BUILDERS: Registry[PairBuilder] = Registry("pair builder")


def _pair(chosen: Row, rejected: Row) -> Row:
    return {
        "question_id": chosen["question_id"],
        "prompt": chosen["prompt"],
        "chosen": chosen["completion"],
        "rejected": rejected["completion"],
        "chosen_score": chosen["score"],
        "rejected_score": rejected["score"],
    }


@PAIR_BUILDERS.register("best_vs_rest")
def best_vs_rest(group: list[Row], min_margin: float) -> list[Row]:
    """CORE-PO: chosen = the best-scored sample, rejected = each of the others.

    Ties break by sample_index, so the result is deterministic. A pair needs a strictly positive score gap
    of at least `min_margin`: a pair of equally scored samples carries no preference.
    """
    ranked = sorted(group, key=lambda r: (-r["score"], r["sample_index"]))
    if not ranked:
        return []
    best = ranked[0]
    return [
        _pair(best, other)
        for other in ranked[1:]
        if best["score"] - other["score"] > 0
        and best["score"] - other["score"] >= min_margin
        and other["completion"] != best["completion"]
    ]


@PAIR_BUILDERS.register("best_vs_worst")
def best_vs_worst(group: list[Row], min_margin: float) -> list[Row]:
    """Self-Rewarding: one pair per question, chosen = the highest-scored sample, rejected = the lowest-scored.
    When the two scores are equal (every candidate scored the same) the question gives no pair, as in the
    paper; among equal highest (or lowest) scores the lowest sample_index is taken, so it is deterministic."""
    if len(group) < 2:
        return []
    best = min(group, key=lambda r: (-r["score"], r["sample_index"]))
    worst = min(group, key=lambda r: (r["score"], r["sample_index"]))
    gap = best["score"] - worst["score"]
    if gap <= 0 or gap < min_margin or best["completion"] == worst["completion"]:
        return []
    return [_pair(best, worst)]


@PAIR_BUILDERS.register("majority_vs_minority")
def majority_vs_minority(group: list[Row], min_margin: float) -> list[Row]:
    """SC-PO: chosen = a sample with the majority answer (best score among them), rejected = each sample with
    another or no answer."""
    counts = Counter(r["answer"] for r in group if r["answer"] is not None)
    if not counts:
        return []
    top = max(counts.values())
    majority = min(a for a, c in counts.items() if c == top)  # deterministic among equal counts
    if top == 1 and len(counts) > 1:
        return []  # no majority at all: nothing to prefer
    winners = sorted(
        (r for r in group if r["answer"] == majority), key=lambda r: (-r["score"], r["sample_index"])
    )
    chosen = winners[0]
    return [
        _pair(chosen, r)
        for r in sorted(group, key=lambda r: r["sample_index"])
        if r["answer"] != majority and chosen["score"] - r["score"] >= min_margin
    ]


@PAIR_BUILDERS.register("chosen_only")
def chosen_only(group: list[Row], min_margin: float) -> list[Row]:
    """For training.loss sft: every sample is a candidate chosen (best score first, ties by sample_index), with
    no rejected side; `pairs.min_chosen_score` and `pairs.max_per_question` then pick which are kept (SC with
    min_chosen_score 0.5: the samples whose answer at least half the samples share)."""
    ranked = sorted(group, key=lambda r: (-r["score"], r["sample_index"]))
    return [
        {
            "question_id": r["question_id"],
            "prompt": r["prompt"],
            "chosen": r["completion"],
            "rejected": None,
            "chosen_score": r["score"],
            "rejected_score": None,
        }
        for r in ranked
        if r["score"] > 0
    ]


def apply_filters(rows: list[Row], min_chosen_score: float, max_per_question: int) -> list[Row]:
    """The stage-level filters on one question's rows, in the builder's order."""
    kept = [r for r in rows if r["chosen_score"] >= min_chosen_score]
    return kept[:max_per_question] if max_per_question else kept
