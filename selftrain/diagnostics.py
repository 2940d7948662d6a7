"""How good is the label-free judge? Where the questions carry references, the score stage grades each sample
against them and reports the judge's AUROC (does a higher score mean a right answer?) beside the samples'
accuracy. Diagnostic only: pairs are built from the scores alone and nothing downstream reads these numbers."""

from __future__ import annotations

from collections.abc import Sequence

from selftrain.grading.grade import TASKS, is_equivalent, reference_answer


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(score of a random right answer > score of a random wrong one), ties counting one half (the
    Mann-Whitney U statistic over the two groups). None when either group is empty."""
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def sample_labels(questions: list[dict], scored: list[dict]) -> list[tuple[dict, bool]]:
    """(row, is the row's answer right) for each scored row whose question has a reference and whose score is
    not null, graded with the question's task. The run report grades samples the same way."""

    refs = {}
    for q in questions:
        if q.get("reference") is not None and q.get("task"):
            family = TASKS.get(q["task"]).family
            refs[q["question_id"]] = (
                q["task"],
                reference_answer(family, q["reference"], q.get("choices")),
            )
    out = []
    for row in scored:
        if row["question_id"] in refs and row["score"] is not None:
            task, ref = refs[row["question_id"]]
            out.append((row, is_equivalent(task, row["answer"], ref)))
    return out


def judge_diagnostics(questions: list[dict], scored: list[dict]) -> dict:
    """{'graded': n, 'sample_accuracy': a, 'judge_auroc': x} over the samples whose question has a reference;
    {} when none has."""
    graded = sample_labels(questions, scored)
    if not graded:
        return {}
    labels = [ok for _, ok in graded]
    value = auroc([row["score"] for row, _ in graded], labels)
    by_question: dict[str, tuple[list[float], list[bool]]] = {}
    for row, ok in graded:
        scores, oks = by_question.setdefault(row["question_id"], ([], []))
        scores.append(row["score"])
        oks.append(ok)
    within = within_question_auroc(by_question.values())
    agreement, ties, pairs = pair_agreement(by_question.values())
    return {
        "judge_pair_agreement": None if agreement is None else round(agreement, 6),
        "judge_pair_ties": None if ties is None else round(ties, 6),
        "judge_pairs": pairs,
        "graded": len(labels),
        "sample_accuracy": round(sum(labels) / len(labels), 6),
        "judge_auroc": None if value is None else round(value, 6),
        "judge_auroc_within": None if within is None else round(within, 6),
    }


def within_question_auroc(groups) -> float | None:  # noqa: ANN001 - iterable of (scores, labels)
    """The mean over questions with both right and wrong samples of the AUROC among that question's samples.
    A pooled AUROC also rewards a judge for knowing which questions are hard; this one only for telling a
    question's right answers from its wrong ones (TOY-STUDIES.md: pooled 0.70-0.80 where this was ~0.5)."""
    values = [v for scores, labels in groups if (v := auroc(scores, labels)) is not None]
    return sum(values) / len(values) if values else None


def pair_agreement(groups) -> tuple[float | None, float | None, int]:  # noqa: ANN001 - iterable of (scores, labels)
    """The Self-Rewarding paper's judge check on samples with references: over every (right, wrong) pair of
    samples of one question, the share where the right one scored higher, counted over the pairs whose
    scores differ; and the share of pairs the judge tied (it cannot order them). (None, None, 0) without
    such pairs."""
    agree = differ = total = 0
    for scores, labels in groups:
        right = [s for s, ok in zip(scores, labels, strict=True) if ok]
        wrong = [s for s, ok in zip(scores, labels, strict=True) if not ok]
        for r in right:
            for w in wrong:
                total += 1
                if r != w:
                    differ += 1
                    agree += r > w
    if not total:
        return None, None, 0
    return (agree / differ if differ else None), (total - differ) / total, total


def judgment_stats(scored: list[dict]) -> dict:
    """Written-judgment judges (llm_as_judge): how many judgments were read and the share without a parsable
    score, and how many samples got no score at all. {} for judges that write no judgments."""
    points = [p for row in scored for p in (row.get("judgment_scores") or [])]
    if not points:
        return {}
    missing = sum(p is None for p in points)
    return {
        "judgments": len(points),
        "unparsable_rate": round(missing / len(points), 6),
        "unscored_samples": sum(row["score"] is None for row in scored),
    }
