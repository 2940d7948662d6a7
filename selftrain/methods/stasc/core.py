"""STaSC's pure parts (self-taught self-correction, arXiv 2503.08681): the gold-based reward, which
corrections are kept for SFT, and the correction metrics of an evaluation. The stages that use them are
selftrain.stages.{initial,correct,filter,sft,evaluate_correction}; the method is `stasc` (selftrain.methods)."""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict

from selftrain.grading import grade
from selftrain.grading.extract import reference_answer

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the normalisation of the paper's `in_acc`)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def in_acc(text: str, gold: str | None) -> bool:
    """The paper's reward: the normalised gold answer appears in the normalised text."""
    if not gold:
        return False
    wanted = normalize_text(gold)
    return bool(wanted) and wanted in normalize_text(text)


def reward(kind: str, question: dict, text: str) -> float:
    """1.0 or 0.0: `in_acc` (the gold answer, as the task states it, appears in `text`) or `exact_match`
    (the task's extracted answer of `text` equals the gold answer)."""
    if kind == "in_acc":
        gold = reference_answer(question["task"], question["reference"], question["choices"])
        return float(in_acc(text, gold or question["reference"]))
    _, ok = grade(question["task"], text, question["reference"], question["choices"])
    return float(ok)


def kept(initial_reward: float, correction_reward: float, only_better: bool) -> bool:
    """Wrong -> right corrections; with `only_better` off also right -> right (never a correction that is
    wrong)."""
    if correction_reward <= 0:
        return False
    return initial_reward <= 0 or not only_better


def transitions(pairs: list[tuple[float, float]]) -> dict[str, int]:
    """Counts of (initial, correction) reward outcomes: wrong_to_right, right_to_wrong, right_to_right,
    wrong_to_wrong."""
    names = {
        (0, 1): "wrong_to_right",
        (1, 0): "right_to_wrong",
        (1, 1): "right_to_right",
        (0, 0): "wrong_to_wrong",
    }
    counts = Counter(names[(int(a > 0), int(b > 0))] for a, b in pairs)
    return {name: counts.get(name, 0) for name in names.values()}


def correction_metrics(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{model: {source: cell}}: n, accuracy of the corrected answer (`accuracy`, what the run's accuracy table
    shows), of the initial answer, and the correction rates wrong -> right and right -> wrong (shares of n)."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[r["model"]][r["source"]].append(r)
    out: dict[str, dict[str, dict]] = {}
    for model, by_source in groups.items():
        for source, rs in by_source.items():
            n = len(rs)
            moves = transitions([(float(r["initial_correct"]), float(r["correct"])) for r in rs])
            correct = sum(bool(r["correct"]) for r in rs)
            initial = sum(bool(r["initial_correct"]) for r in rs)
            out.setdefault(model, {})[source] = {
                "n": n,
                "correct": correct,
                "accuracy": round(correct / n, 6) if n else None,
                "initial_correct": initial,
                "initial_accuracy": round(initial / n, 6) if n else None,
                "wrong_to_right": round(moves["wrong_to_right"] / n, 6) if n else None,
                "right_to_wrong": round(moves["right_to_wrong"] / n, 6) if n else None,
            }
    return out
