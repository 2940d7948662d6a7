"""GSI's pure parts (Guided Self-Improvement, arXiv 2411.00750): the gold rationale and its steps, the guidance
of a resampling round (answer-driven, rationale-driven, state reset, teacher hint), the difficulty buckets and
the per-iteration tail report. The stages that use them are selftrain.stages.{guided_sample,rationales} (and
`rationale_sft`, the sft stage's module on the kept rationales); the method is `gsi` (selftrain.methods)."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from typing import Any

ANSWER_HINT = "(Hint: the final answer is {answer}.)"
RATIONALE_HINT = "(Hint: a reference solution is: {rationale})"
TEACHER_HINT = "(Hint: {hint})"
# (the paper's teacher-help: a Socratic hint from the student's wrong answer)
TEACHER_ASK = (
    "{question}\n\nReference solution: {rationale}\n\nA student's wrong attempt: {wrong}\n\nWrite one "
    "short hint that leads the student from the mistake towards the reference solution. Do not state the "
    "final answer."
)


def gold_rationale(question: dict) -> str | None:
    """The worked reference solution, without its final-answer line: `meta.solution` where the source has one
    (the toys), else the reference when it is more than an answer (GSM8K's `... #### 72`, MATH's solution)."""
    meta = json.loads(question.get("meta") or "{}")
    text = meta.get("solution") or question.get("reference") or ""
    reasoning = text.rsplit("####", 1)[0].strip()
    # a bare answer ("72", "[II]") is no rationale: nothing to hint with or to prefill
    if not reasoning or ("####" not in text and not meta.get("solution") and " " not in reasoning):
        return None
    return reasoning


def gold_steps(rationale: str) -> list[str]:
    """The rationale's steps: its lines (GSM8K, MATH); a one-line rationale splits at spaces between
    equations (the toys' `4*2=8 3+8=11`) or else at sentence ends."""
    lines = [line for line in rationale.split("\n") if line.strip()]
    if len(lines) > 1:
        return lines
    text = rationale.strip()
    if re.fullmatch(r"(\S+=\S+)( \S+=\S+)*", text):
        return text.split(" ")
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def steps_prefix(rationale: str, round_: int) -> str:
    """State reset by steps: the first k gold steps in round k (1-based), never all of them where there are
    several, so the model always writes at least the last step and the answer itself."""
    steps = gold_steps(rationale)
    k = min(round_, max(len(steps) - 1, 1))
    sep = "\n" if "\n" in rationale.strip() else " "
    return sep.join(steps[:k]) + sep


def fraction_prefix(
    rationale: str, fraction: float, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str]
) -> str:
    """State reset by tokens: the first `fraction` of the gold rationale's tokens (the model's tokenizer)."""
    ids = encode(rationale)
    return decode(ids[: int(len(ids) * fraction)])


def round_fraction(fractions: list[float], round_: int) -> float:
    """Round k (1-based) resets to fractions[k-1]; later rounds keep the last (largest) one."""
    return fractions[min(round_, len(fractions)) - 1]


def hinted_question(question: str, guidance: str, gold_answer: str, rationale: str, hint: str = "") -> str:
    """The question text of a guided round (answer, rationale or teacher); state reset leaves it unchanged."""
    if guidance == "answer":
        return f"{question}\n{ANSWER_HINT.format(answer=gold_answer)}"
    if guidance == "rationale":
        return f"{question}\n{RATIONALE_HINT.format(rationale=rationale)}"
    if guidance == "teacher":
        return f"{question}\n{TEACHER_HINT.format(hint=hint.strip())}"
    return question


# -- the tail report ---------------------------------------------------------------------------------------
PASS_BUCKETS = ("0", "<1/2", ">=1/2", "all")


def pass_bucket(correct: int, n: int) -> str:
    """The bucket of a plain pass rate: none right, under half, half or more, all."""
    if correct == 0:
        return "0"
    if correct == n:
        return "all"
    return "<1/2" if correct * 2 < n else ">=1/2"


def operand_count(question: dict) -> int:
    """The toys' difficulty: `meta.operands` where the source records it, else the numbers in the question."""
    meta = json.loads(question.get("meta") or "{}")
    if "operands" in meta:
        return int(meta["operands"])
    return len(re.findall(r"\d+(?:\.\d+)?", question["question"]))


def length_summary(lengths: list[int]) -> dict[str, Any]:
    """n, mean and the 10/50/90th percentiles of response lengths (tokens)."""
    if not lengths:
        return {"n": 0}
    qs = statistics.quantiles(lengths, n=10, method="inclusive") if len(lengths) > 1 else [lengths[0]] * 9
    return {
        "n": len(lengths),
        "mean": round(statistics.fmean(lengths), 2),
        "p10": qs[0],
        "p50": qs[4],
        "p90": qs[8],
        "max": max(lengths),
    }


def tail_report(questions: list[dict], samples: list[dict], n_plain: int) -> dict[str, Any]:
    """The iteration's GSI report from its guided_sample rows: the share of questions with >= 1 kept (correct)
    rationale, overall and per difficulty bucket (plain pass rate of the sampling model; operand count), split
    into kept from plain sampling alone and kept at all (guidance included), and kept response lengths, plain
    vs guided (each distinct rationale once)."""
    plain_ok: dict[str, int] = {}
    kept_plain: set[str] = set()
    kept_any: set[str] = set()
    lengths: dict[str, list[int]] = {"plain": [], "guided": []}
    distinct: set[tuple[str, str]] = set()
    rounds = 0
    for s in samples:
        qid = s["question_id"]
        rounds = max(rounds, s["round"])
        if s["round"] == 0:
            plain_ok[qid] = plain_ok.get(qid, 0) + int(s["correct"])
        if s["correct"]:
            kept_any.add(qid)
            if s["round"] == 0:
                kept_plain.add(qid)
            if (qid, s["completion"]) not in distinct:  # a rationale sampled twice is kept once
                distinct.add((qid, s["completion"]))
                lengths["plain" if s["round"] == 0 else "guided"].append(s["response_tokens"])

    def cell(ids: list[str]) -> dict[str, Any]:
        n = len(ids)
        plain = sum(q in kept_plain for q in ids)
        kept = sum(q in kept_any for q in ids)
        return {
            "questions": n,
            "kept_plain": round(plain / n, 4) if n else None,
            "kept": round(kept / n, 4) if n else None,
        }

    by_pass: dict[str, list[str]] = {b: [] for b in PASS_BUCKETS}
    by_operands: dict[str, list[str]] = {}
    for q in questions:
        qid = q["question_id"]
        by_pass[pass_bucket(plain_ok.get(qid, 0), n_plain)].append(qid)
        by_operands.setdefault(str(operand_count(q)), []).append(qid)
    all_ids = [q["question_id"] for q in questions]
    return {
        **cell(all_ids),
        "guided_rounds": rounds,
        "by_pass_rate": {b: cell(ids) for b, ids in by_pass.items() if ids},
        "by_operands": {k: cell(ids) for k, ids in sorted(by_operands.items(), key=lambda kv: int(kv[0]))},
        "kept_length": {kind: length_summary(v) for kind, v in lengths.items()},
    }


def _cells(title: str, cells: dict[str, dict]) -> str:
    parts = [
        f"{name}: {c['questions']} q, kept {c['kept']:.2f} (plain {c['kept_plain']:.2f})"
        for name, c in cells.items()
    ]
    return f"  {title}: " + "; ".join(parts)


def _lengths(summary: dict[str, dict]) -> str:
    parts = []
    for kind, s in summary.items():
        if s.get("n"):
            parts.append(f"{kind} n={s['n']} mean {s['mean']} p10/50/90 {s['p10']}/{s['p50']}/{s['p90']}")
        else:
            parts.append(f"{kind} n=0")
    return "  kept length (tokens): " + "; ".join(parts)


def report_lines(store: Any) -> list[str]:
    """The GSI report of a run, from its rationales manifests: what `selftrain run` and `status` print."""
    lines: list[str] = []
    for it in store.iterations_on_disk():
        m = store.manifest(it, "rationales")
        if m is None:
            continue
        r = m.stats["report"]
        if not lines:
            lines += ["", "GSI: questions with >= 1 kept rationale (plain = from unguided samples alone)"]
        lines.append(
            f"iter-{it:03d}: {r['questions']} questions, kept {r['kept']:.2f} (plain {r['kept_plain']:.2f}), "
            f"{r['guided_rounds']} guided round(s); {m.stats['new_examples']} new rationales, "
            f"{m.stats['examples']} in all"
        )
        lines.append(_cells("by pass rate of the sampling model", r["by_pass_rate"]))
        lines.append(_cells("by operand count", r["by_operands"]))
        lines.append(_lengths(r["kept_length"]))
    return lines
