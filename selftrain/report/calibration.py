"""Is the judge's score a probability of being right? Reliability bins, ECE and AUROC (pooled and within
question) of scores against graded correctness.

Pooled AUROC asks whether a higher score means a right answer across the whole iteration; it rewards a judge
that merely tells easy questions from hard ones. Within-question AUROC counts only pairs of samples of the
same question, one right and one wrong — exactly the comparison a pair builder makes when it picks chosen
and rejected answers — so it is the number that says whether the pairs carry signal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from selftrain.diagnostics import auroc

N_BINS = 10


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    n: int
    mean_score: float | None  # None for an empty bin
    accuracy: float | None


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def reliability_bins(scores: Sequence[float], labels: Sequence[bool], n_bins: int = N_BINS) -> list[Bin]:
    """Equal-width bins of the score over [0, 1] (a score of exactly 1 falls in the last bin)."""
    sums = [[0, 0.0, 0] for _ in range(n_bins)]  # n, score sum, right
    for s, y in zip(scores, labels, strict=True):
        s = _clip(s)
        cell = sums[min(int(s * n_bins), n_bins - 1)]
        cell[0] += 1
        cell[1] += s
        cell[2] += bool(y)
    return [
        Bin(i / n_bins, (i + 1) / n_bins, n, total / n if n else None, right / n if n else None)
        for i, (n, total, right) in enumerate(sums)
    ]


def quantile_bins(scores: Sequence[float], labels: Sequence[bool], n_bins: int = N_BINS) -> list[Bin]:
    """Bins of (nearly) equal sample counts in score order: the reliability diagram stays informative when
    the scores crowd into a narrow range (a small model's P(True) often sits within 0.2-0.3), where
    equal-width bins put nearly every sample into one bin."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    n = len(order)
    out = []
    for b in range(min(n_bins, n)):
        idx = order[b * n // min(n_bins, n) : (b + 1) * n // min(n_bins, n)]
        s = [_clip(scores[i]) for i in idx]
        out.append(Bin(s[0], s[-1], len(idx), sum(s) / len(s), sum(bool(labels[i]) for i in idx) / len(idx)))
    return out


def ece(scores: Sequence[float], labels: Sequence[bool], n_bins: int = N_BINS) -> float | None:
    """Expected calibration error: sum over bins of (share of samples) x |mean score - accuracy|."""
    if not scores:
        return None
    total = len(scores)
    return sum(
        b.n / total * abs(b.mean_score - b.accuracy)
        for b in reliability_bins(scores, labels, n_bins)
        if b.n and b.mean_score is not None and b.accuracy is not None
    )


def within_question_auroc(
    question_ids: Sequence[str], scores: Sequence[float], labels: Sequence[bool]
) -> tuple[float | None, int]:
    """(P(score of a right sample > score of a wrong sample of the same question), ties one half; the number
    of questions that have both). Every right/wrong pair within a question counts once, so a question with
    more such pairs weighs more, as it does in the pairs it yields. (None, 0) when no question is mixed."""
    by_q: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for q, s, y in zip(question_ids, scores, labels, strict=True):
        by_q[q].append((float(s), bool(y)))
    wins = pairs = 0.0
    mixed = 0
    for rows in by_q.values():
        pos = sum(1 for _, y in rows if y)
        neg = len(rows) - pos
        value = auroc([s for s, _ in rows], [y for _, y in rows])
        if value is None:
            continue
        mixed += 1
        wins += value * pos * neg
        pairs += pos * neg
    return (wins / pairs if pairs else None), mixed


@dataclass(frozen=True)
class JudgeQuality:
    graded: int
    sample_accuracy: float | None
    auroc: float | None
    within_auroc: float | None
    mixed_questions: int  # questions with right and wrong samples (the within-question AUROC's base)
    questions: int
    ece: float | None
    bins: list[Bin]


def judge_quality(
    question_ids: Sequence[str], scores: Sequence[float], labels: Sequence[bool]
) -> JudgeQuality:
    within, mixed = within_question_auroc(question_ids, scores, labels)
    return JudgeQuality(
        graded=len(labels),
        sample_accuracy=sum(map(bool, labels)) / len(labels) if labels else None,
        auroc=auroc(scores, labels) if labels else None,
        within_auroc=within,
        mixed_questions=mixed,
        questions=len(set(question_ids)),
        ece=ece(scores, labels),
        bins=reliability_bins(scores, labels),
    )
