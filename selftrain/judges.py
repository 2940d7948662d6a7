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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from selftrain.engines.base import SamplingSpec
from selftrain.grading import grade
from selftrain.prompts import choice_question
from selftrain.registry import Registry
from selftrain.rubric import parse_score, render

if TYPE_CHECKING:
    from selftrain.config import JudgeConfig
    from selftrain.engines.base import Engine
    from selftrain.prompts import PromptBuilder

Row = dict[str, Any]


@dataclass(frozen=True)
class Judging:
    """What a judge reads: its config, a shard's questions, every question's samples (by question id), the
    model judging (engine and prompt builder; None for a judge that needs no model) and the shard's seed."""

    cfg: JudgeConfig | None
    questions: list[Row]
    samples: dict[str, list[Row]]
    engine: Engine | None = None
    builder: PromptBuilder | None = None
    seed: int = 0

    def groups(self) -> Iterator[tuple[Row, list[Row], list[float]]]:
        """Each question with its samples and their consistency."""
        finished_only = self.cfg is not None and self.cfg.votes == "finished"
        min_votes = self.cfg.min_votes if self.cfg is not None else 1
        for q in self.questions:
            group = self.samples.get(q["question_id"], [])
            yield q, group, consistency(group, finished_only=finished_only, min_votes=min_votes)


def _question_text(q: Row) -> str:
    """The question as the policy saw it: a multiple-choice question with its options."""
    return choice_question(q["question"], q["choices"]) if q.get("choices") else q["question"]


Judge = Callable[[Judging], list[Row]]


@dataclass(frozen=True)
class JudgeSpec:
    """One judge and what the stages, the fingerprints and the report need to know of it, so that none of
    them names a judge: the score stage loads a model only for `needs_model`, checks the response format only
    for `reads_format`, and the report scales its axes by `max_score`."""

    name: str
    score: Judge  # questions + samples -> one SCORES row per sample
    needs_model: bool  # it reads the policy (P(True), a rubric): the score stage loads an engine for it
    reads_format: bool = False  # it parses the prompt template's response format (unparsed -> 0): the parse
    # rate is the format's, and one below judge.min_parse_rate stops the run (selftrain.stages.score)
    reads_labels: bool = False  # USES THE LABELS: a study bound, never label-free self-training
    max_score: float = 1.0  # the top of its scale (the rubric's 5 points for llm_as_judge)
    config_keys: tuple[str, ...] = ()  # the judge.* settings it reads beyond judge.name
    writes: tuple[str, ...] = ("consistency", "score")  # the SCORES columns it fills (the rest stay null)

    def __call__(self, job: Judging) -> list[Row]:
        return self.score(job)


JUDGES: Registry[JudgeSpec] = Registry("judge")


def judge(name: str, **spec: Any) -> Callable[[Judge], Judge]:
    """Register a judge function under `name` with its JudgeSpec fields (`needs_model` required)."""

    def deco(fn: Judge) -> Judge:
        JUDGES.register(name)(JudgeSpec(name, fn, **spec))
        return fn

    return deco


def consistency(samples: list[Row], finished_only: bool = False, min_votes: int = 1) -> list[float]:
    """Per sample: the fraction of the question's voting samples whose extracted answer equals its answer.

    All samples vote (SC-PO), or with `finished_only` only those that ended on their own (a truncated
    sample then scores 0 and is not in the denominator). An answer with fewer than `min_votes` votes scores 0."""

    def votes(s: Row) -> bool:
        return s["answer"] is not None and (not finished_only or s["finish_reason"] == "stop")

    counts = Counter(s["answer"] for s in samples if votes(s))
    n = len(samples) if not finished_only else sum(counts.values())
    return [
        counts[s["answer"]] / n if votes(s) and counts[s["answer"]] >= min_votes else 0.0 for s in samples
    ]


def two_way(probs: list[float]) -> float:
    p_true, p_false = probs
    total = p_true + p_false
    return p_true / total if total > 0 else 0.5


def _score_row(q: Row, s: Row, consistency: float, score: float | None) -> Row:
    """A scores row with no P(True) yet (answer and reasoning confidence None)."""
    return {
        "question_id": q["question_id"],
        "sample_index": s["sample_index"],
        "answer": s["answer"],
        "answer_confidence": None,
        "reasoning_confidence": None,
        "consistency": consistency,
        "score": score,
    }


@judge(
    "core_po",
    needs_model=True,
    reads_format=True,
    config_keys=("options", "max_context_reasonings", "min_parse_rate"),
    writes=("answer_confidence", "reasoning_confidence", "consistency", "score"),
)
def core_po(job: Judging) -> list[Row]:
    cfg, builder = job.cfg, job.builder
    prompts: list[str] = []
    slots: list[tuple[int, str]] = []  # (row index, "reasoning" | "answer")
    rows: list[Row] = []
    for q, group, cons in job.groups():
        qtext = _question_text(q)  # the judge sees the question as the policy did
        parsed = [builder.parse(s["completion"]) for s in group]
        # A truncated or unparsable sample gets score 0 (METHODS.md, step 3).
        valid = [p.ok and s["finish_reason"] == "stop" for p, s in zip(parsed, group, strict=True)]
        reasonings = [p.reasoning for p in parsed]
        for k, (s, p, ok) in enumerate(zip(group, parsed, valid, strict=True)):
            rows.append(_score_row(q, s, cons[k], 0.0))
            if not ok:
                continue
            # As the original: the context is drawn from ALL parsed samples of the question, the selected one
            # included, so the judge compares the selected reasoning against the question's own distribution.
            pool = [r for j, r in enumerate(reasonings) if valid[j]]
            rng = random.Random(f"{job.seed}-{q['question_id']}-{s['sample_index']}")
            context = rng.sample(pool, min(cfg.max_context_reasonings, len(pool)))
            prompts.append(builder.reasoning_judge(qtext, p.reasoning, context))
            slots.append((len(rows) - 1, "reasoning_confidence"))
            prompts.append(builder.answer_judge(qtext, p.reasoning, p.answer))
            slots.append((len(rows) - 1, "answer_confidence"))
    if prompts:
        probs = job.engine.option_probs(prompts, tuple(cfg.options))
        for (i, key), pr in zip(slots, probs, strict=True):
            rows[i][key] = two_way(pr)
    for row in rows:
        if row["answer_confidence"] is not None and row["reasoning_confidence"] is not None:
            row["score"] = row["answer_confidence"] * row["reasoning_confidence"]
    return rows


@judge(
    "llm_as_judge",
    needs_model=True,
    max_score=5.0,
    config_keys=("rubric", "samples", "temperature", "top_p", "max_tokens", "min_parse_rate"),
    writes=("consistency", "score", "judgments", "judgment_scores"),
)
def llm_as_judge(job: Judging) -> list[Row]:
    """Self-Rewarding (arXiv 2401.10020): the model reads the paper's additive 5-point rubric with the question
    and one response and writes a judgment ending in `Score: N`; `cfg.samples` judgments per response are
    sampled and the parsed ones averaged. A response none of whose judgments parse has no score (None: the
    pairs skip it), never 0. Every judgment's text and points are kept. A question's candidates are adjacent
    prompts sharing the rubric and the question, so vLLM's prefix cache serves them together."""

    cfg = job.cfg
    rows: list[Row] = []
    prompts: list[str] = []
    for q, group, cons in job.groups():
        for s, c in zip(group, cons, strict=True):
            rows.append(_score_row(q, s, c, None))
            text = render(cfg.rubric, _question_text(q), s["completion"].strip())
            prompts.append(job.builder.user_turn(text))
    if not prompts:
        return rows
    spec = SamplingSpec(cfg.samples, cfg.temperature, cfg.top_p, cfg.max_tokens, job.seed)
    for row, comps in zip(rows, job.engine.generate(prompts, spec), strict=True):
        points = [parse_score(c.text) for c in comps]
        parsed = [p for p in points if p is not None]
        row["judgments"] = [c.text for c in comps]
        row["judgment_scores"] = points
        row["score"] = sum(parsed) / len(parsed) if parsed else None
    return rows


def _model_free(
    name: str, score_fn: Callable[[Row, Row, int], float] | None, reads_labels: bool = False
) -> None:
    """Register a judge that reads no model: `score_fn(question, sample, seed)`, or None for the consistency
    itself. An unfinished or unparsed sample scores 0."""

    def free(job: Judging) -> list[Row]:
        rows = []
        for q, group, cons in job.groups():
            for s, c in zip(group, cons, strict=True):
                ok = s["finish_reason"] == "stop" and s["answer"] is not None
                score = c if score_fn is None else score_fn(q, s, job.seed)
                rows.append(_score_row(q, s, c, score if ok else 0.0))
        return rows

    free.__name__ = free.__qualname__ = name
    judge(name, needs_model=False, reads_labels=reads_labels)(free)


def _oracle(q: Row, s: Row, seed: int) -> float:
    """USES THE LABELS (an upper bound for studies, not self-training): score 1 if the sample's answer grades
    correct against the question's reference, else 0."""

    if q.get("reference") is None:
        raise ValueError(f"judge 'oracle' needs references; question {q['question_id']} has none")
    return float(grade(q["task"], s["completion"], q["reference"], q.get("choices"))[1])


def _random(q: Row, s: Row, seed: int) -> float:
    """Control: a uniform random score per sample (seeded), i.e. chosen samples picked at random."""
    return random.Random(f"{seed}-{q['question_id']}-{s['sample_index']}").random()


_model_free("self_consistency", None)  # SC-PO: the share of the question's samples with the same answer
_model_free("oracle", _oracle, reads_labels=True)
_model_free("random", _random)
