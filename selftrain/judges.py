"""Confidence judges: turn a question's samples into scores. Registered by name (`judge.name`).

core_po (CORE-PO): the model's own P(True) on each sample's reasoning (shown after up to k reasonings drawn
from all of the question's parsed samples, itself included) and on its answer, each from one forward pass
reading P(A) and P(B) of the next token; score = reasoning confidence x answer confidence. llm_as_judge
(Self-Rewarding): the mean of the points the model itself writes with the paper's rubric over judge.samples
judgments (selftrain.rubric). self_consistency (SC-PO): score = the share of the question's samples that
reached the same answer. For studies: oracle (uses the references: 1 if correct) and random (control: a
seeded uniform score).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from selftrain.prompts import choice_question
from selftrain.registry import Registry

if TYPE_CHECKING:
    from selftrain.config import JudgeConfig
    from selftrain.engines.base import Engine
    from selftrain.prompts import PromptBuilder

Row = dict[str, Any]
Judge = Callable[["JudgeConfig", list[Row], dict[str, list[Row]], "Engine", "PromptBuilder", int], list[Row]]
JUDGES: Registry[Judge] = Registry("judge")
# judges that read no model (the score stage then loads none)
MODEL_FREE = {"self_consistency", "oracle", "random"}


def consistency(samples: list[Row]) -> list[float]:
    """Per sample: the fraction of the question's samples whose extracted answer equals its answer."""
    counts = Counter(s["answer"] for s in samples if s["answer"] is not None)
    n = len(samples)
    return [counts[s["answer"]] / n if s["answer"] is not None else 0.0 for s in samples]


def _two_way(probs: list[float]) -> float:
    p_true, p_false = probs
    total = p_true + p_false
    return p_true / total if total > 0 else 0.5


@JUDGES.register("core_po")
def core_po(
    cfg: JudgeConfig,
    questions: list[Row],
    samples: dict[str, list[Row]],
    engine: Engine,
    builder: PromptBuilder,
    seed: int,
) -> list[Row]:
    prompts: list[str] = []
    slots: list[tuple[int, str]] = []  # (row index, "reasoning" | "answer")
    rows: list[Row] = []
    for q in questions:
        group = samples.get(q["question_id"], [])
        # the judge sees the question as the policy did: a multiple-choice question with its options
        qtext = choice_question(q["question"], q["choices"]) if q.get("choices") else q["question"]
        cons = consistency(group)
        parsed = [builder.parse(s["completion"]) for s in group]
        # A truncated or unparsable sample gets score 0 (METHODS.md, step 3).
        valid = [p.ok and s["finish_reason"] == "stop" for p, s in zip(parsed, group, strict=True)]
        reasonings = [p.reasoning for p in parsed]
        for k, (s, p, ok) in enumerate(zip(group, parsed, valid, strict=True)):
            row = {
                "question_id": q["question_id"],
                "sample_index": s["sample_index"],
                "answer": s["answer"],
                "answer_confidence": None,
                "reasoning_confidence": None,
                "consistency": cons[k],
                "score": 0.0,
            }
            rows.append(row)
            if not ok:
                continue
            # As the original: the context is drawn from ALL parsed samples of the question, the selected one
            # included, so the judge compares the selected reasoning against the question's own distribution.
            pool = [r for j, r in enumerate(reasonings) if valid[j]]
            rng = random.Random(f"{seed}-{q['question_id']}-{s['sample_index']}")
            context = rng.sample(pool, min(cfg.max_context_reasonings, len(pool)))
            prompts.append(builder.reasoning_judge(qtext, p.reasoning, context))
            slots.append((len(rows) - 1, "reasoning_confidence"))
            prompts.append(builder.answer_judge(qtext, p.reasoning, p.answer))
            slots.append((len(rows) - 1, "answer_confidence"))
    if prompts:
        probs = engine.option_probs(prompts, tuple(cfg.options))
        for (i, key), pr in zip(slots, probs, strict=True):
            rows[i][key] = _two_way(pr)
    for row in rows:
        if row["answer_confidence"] is not None and row["reasoning_confidence"] is not None:
            row["score"] = row["answer_confidence"] * row["reasoning_confidence"]
    return rows


@JUDGES.register("llm_as_judge")
def llm_as_judge(
    cfg: JudgeConfig,
    questions: list[Row],
    samples: dict[str, list[Row]],
    engine: Engine,
    builder: PromptBuilder,
    seed: int,
) -> list[Row]:
    """Self-Rewarding (arXiv 2401.10020): the model reads the paper's additive 5-point rubric with the question
    and one response and writes a judgment ending in `Score: N`; `cfg.samples` judgments per response are
    sampled and the parsed ones averaged. A response none of whose judgments parse has no score (None: the
    pairs skip it), never 0. Every judgment's text and points are kept. A question's candidates are adjacent
    prompts sharing the rubric and the question, so vLLM's prefix cache serves them together."""
    from selftrain.engines.base import SamplingSpec
    from selftrain.rubric import parse_score, render

    rows: list[Row] = []
    prompts: list[str] = []
    for q in questions:
        group = samples.get(q["question_id"], [])
        qtext = choice_question(q["question"], q["choices"]) if q.get("choices") else q["question"]
        cons = consistency(group)
        for s, c in zip(group, cons, strict=True):
            rows.append(_score_row(q, s, c, None))
            prompts.append(builder.user_turn(render(cfg.rubric, qtext, s["completion"].strip())))
    if not prompts:
        return rows
    spec = SamplingSpec(cfg.samples, cfg.temperature, cfg.top_p, cfg.max_tokens, seed)
    for row, comps in zip(rows, engine.generate(prompts, spec), strict=True):
        points = [parse_score(c.text) for c in comps]
        parsed = [p for p in points if p is not None]
        row["judgments"] = [c.text for c in comps]
        row["judgment_scores"] = points
        row["score"] = sum(parsed) / len(parsed) if parsed else None
    return rows


@JUDGES.register("self_consistency")
def self_consistency(
    cfg: JudgeConfig,
    questions: list[Row],
    samples: dict[str, list[Row]],
    engine: Engine,
    builder: PromptBuilder,
    seed: int,
) -> list[Row]:
    return _plain_rows(questions, samples, None)


def _plain_rows(questions: list[Row], samples: dict[str, list[Row]], score_fn: Callable | None) -> list[Row]:
    """Rows of judges that need no model; `score_fn(question, sample)`, or None for the consistency itself.
    An unfinished or unparsed sample scores 0."""
    rows = []
    for q in questions:
        group = samples.get(q["question_id"], [])
        for s, c in zip(group, consistency(group), strict=True):
            ok = s["finish_reason"] == "stop" and s["answer"] is not None
            rows.append(_score_row(q, s, c, (c if score_fn is None else score_fn(q, s)) if ok else 0.0))
    return rows


def _score_row(q: Row, s: Row, consistency: float, score: float | None) -> Row:
    """A scores row of a judge that reads no P(True) (no answer or reasoning confidence)."""
    return {
        "question_id": q["question_id"],
        "sample_index": s["sample_index"],
        "answer": s["answer"],
        "answer_confidence": None,
        "reasoning_confidence": None,
        "consistency": consistency,
        "score": score,
    }


@JUDGES.register("oracle")
def oracle(
    cfg: JudgeConfig,
    questions: list[Row],
    samples: dict[str, list[Row]],
    engine: Engine,
    builder: PromptBuilder,
    seed: int,
) -> list[Row]:
    """USES THE LABELS (an upper bound for studies, not self-training): score 1 if the sample's answer grades
    correct against the question's reference, else 0."""
    from selftrain.grading import grade

    def score(q: Row, s: Row) -> float:
        if q.get("reference") is None:
            raise ValueError(f"judge 'oracle' needs references; question {q['question_id']} has none")
        return float(grade(q["task"], s["completion"], q["reference"], q.get("choices"))[1])

    return _plain_rows(questions, samples, score)


@JUDGES.register("random")
def random_judge(
    cfg: JudgeConfig,
    questions: list[Row],
    samples: dict[str, list[Row]],
    engine: Engine,
    builder: PromptBuilder,
    seed: int,
) -> list[Row]:
    """Control: a uniform random score per sample (seeded), i.e. chosen samples picked at random."""

    def score(q: Row, s: Row) -> float:
        return random.Random(f"{seed}-{q['question_id']}-{s['sample_index']}").random()

    return _plain_rows(questions, samples, score)
