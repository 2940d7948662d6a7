"""Weak-to-Strong reasoning's pure parts (arXiv 2407.13647): the split of the training questions, the strong
model's few-shot prompt, stage I's agreement filter, stage II's majority vote and pair rule, and the report.
The stages that use them are selftrain.stages.{weak_sft,w2s_answers,agree,strong_sft,stage2_sample,w2s_pairs,
w2s_dpo,w2s_evaluate}; the method is `w2s` (selftrain.methods)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

# the models evaluated side by side (w2s_evaluate's `model` column -> the report's name), in report order; the
# stage-II model is the run's policy, so the accuracy table every method prints shows it beside the base
MODELS = {"weak": "weak", "base": "strong base", "stage1": "stage I", "policy": "stage II"}


def split(questions: list[dict], train_1_size: int) -> tuple[list[dict], list[dict]]:
    """(train_1, train_2): the first train_1_size of the iteration's questions (a seeded draw) and the rest."""
    return questions[:train_1_size], questions[train_1_size:]


def gold_solution(question: dict) -> str:
    """The labelled answer the weak model is fine-tuned on: the worked solution with its final-answer line
    (`meta.solution` where the source has one, as the toys; else the reference, GSM8K's `... #### 72`)."""
    meta = json.loads(question.get("meta") or "{}")
    return str(meta.get("solution") or question["reference"])


def few_shot_prompt(builder: Any, examples: list[dict], question: dict) -> str:
    """The strong model's stage-I prompt: worked train_1 examples, then the train_2 question. The plain template
    (the tiny model) gets them as earlier Q/A lines of its own format; a chat template in the user turn."""
    if builder.template == "plain":
        shots = "".join(f"Q: {e['question']}\nA: {gold_solution(e)}\n" for e in examples)
        prompt = builder.question(question["question"], question["choices"])
        bos = builder._text_bos  # the BOS the template writes as text, kept first
        return bos + shots + prompt[len(bos) :]
    shots = "".join(
        f"Example question: {e['question']}\nExample solution: {gold_solution(e)}\n\n" for e in examples
    )
    return builder.question(shots + question["question"], question["choices"])


def final_answer(answer: str | None) -> str:
    """An extracted answer as compared here: stripped; '' where there is none."""
    return (answer or "").strip()


def agree(weak: dict, strong: dict) -> bool:
    """Stage I keeps a question where the weak and the strong answer have the same non-empty final answer."""
    a = final_answer(weak["answer"])
    return bool(a) and a == final_answer(strong["answer"])


def majority(samples: list[dict]) -> tuple[str, float]:
    """(the most frequent non-empty final answer, its count / the number of samples); ('', 0.0) where no sample
    has one. Ties go to the answer seen first."""
    counts = Counter(a for a in (final_answer(s["answer"]) for s in samples) if a)
    if not counts:
        return "", 0.0
    answer, count = counts.most_common(1)[0]
    return answer, count / len(samples)


def w2s_pair(
    weak: dict, samples: list[dict], min_confidence: float, strong_confidence: float
) -> dict[str, Any]:
    """Stage II's rule for one question, from the weak model's response (`completion`, `answer`) and the stage-I
    model's samples: {rule, majority, confidence, chosen, rejected} with chosen/rejected None where no pair.

    rule: low_confidence (majority share < min_confidence: skipped); weak_majority (the weak answer is the
    majority: chosen the weak response, rejected the first non-majority sample); strong_majority (it is not,
    and the share is >= strong_confidence: chosen the first majority sample, rejected the weak response);
    no_rejected (weak_majority, but every sample is in the majority: nothing to reject); unsure (neither)."""
    answer, confidence = majority(samples)
    out: dict[str, Any] = {"majority": answer, "confidence": confidence, "chosen": None, "rejected": None}
    if not answer or confidence < min_confidence:
        return {**out, "rule": "low_confidence"}
    if final_answer(weak["answer"]) == answer:
        others = [s for s in samples if final_answer(s["answer"]) != answer]
        if not others:
            return {**out, "rule": "no_rejected"}
        return {
            **out,
            "rule": "weak_majority",
            "chosen": weak["completion"],
            "rejected": others[0]["completion"],
        }
    if confidence >= strong_confidence:
        chosen = next(s for s in samples if final_answer(s["answer"]) == answer)
        return {
            **out,
            "rule": "strong_majority",
            "chosen": chosen["completion"],
            "rejected": weak["completion"],
        }
    return {**out, "rule": "unsure"}


def report_lines(store: Any) -> list[str]:
    """The W2S report of a run: the data each stage kept and the four models' accuracy side by side."""
    lines: list[str] = []
    for it in store.iterations_on_disk():
        agreed, pairs, ev = (store.manifest(it, s) for s in ("agree", "w2s_pairs", "w2s_evaluate"))
        if agreed is None and pairs is None and ev is None:
            continue
        lines += ["", f"W2S iter-{it:03d}"]
        if agreed is not None:
            a = agreed.stats
            lines.append(
                f"stage I: {a['agreed']}/{a['questions']} train_2 questions agreed "
                f"(weak answered {a['weak_answered']}, strong {a['strong_answered']}); {a['examples']} SFT rows"
            )
        if pairs is not None:
            rules = ", ".join(f"{k} {v}" for k, v in sorted(pairs.stats["rules"].items()))
            lines.append(f"stage II: {pairs.stats['pairs']} pairs ({rules})")
        if ev is not None:
            metrics = ev.stats["metrics"]
            cells = []
            for model, name in MODELS.items():
                accs = [c["accuracy"] for c in metrics.get(model, {}).values() if c["accuracy"] is not None]
                if accs:
                    cells.append(f"{name} {sum(accs) / len(accs):.3f}")
            lines.append("accuracy (greedy, mean over eval sources): " + ", ".join(cells))
    return lines
