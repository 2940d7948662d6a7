"""GSI's sampling: gsi.sampling.n plain samples per question from the current policy M(i-1), each graded
against the gold answer; a question with fewer than gsi.min_correct right is resampled with guidance
(gsi.guidance), n more per round, up to gsi.max_resample rounds or until it has enough right ones. One shard
per question shard, all its rounds inside it, so a resumed stage redoes only unfinished shards, identically."""

from __future__ import annotations

import time
from collections import Counter

from selftrain.config import Config
from selftrain.engines.base import SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.grading import grade
from selftrain.grading.extract import reference_answer
from selftrain.methods.gsi.core import (
    TEACHER_ASK,
    fraction_prefix,
    gold_rationale,
    hinted_question,
    round_fraction,
    steps_prefix,
)
from selftrain.schemas import GUIDED_SAMPLES
from selftrain.stages.common import StageInputs, chunks, finish, shard_seed, write_sharded
from selftrain.store import Manifest, StageWriter


class Guide:
    """The guided prompt of one question in one round, for the configured guidance."""

    def __init__(self, cfg: Config, student: LazyEngine, teacher: LazyEngine | None):
        self.cfg, self.student, self.teacher = cfg, student, teacher
        # the plain template's completions start with a space (` 4*2=8 ...`: how the tiny model was trained)
        self.lead = " " if cfg.prompt.template == "plain" else ""

    def prefix(self, rationale: str, round_: int) -> str:
        g = self.cfg.gsi
        if g.state_reset_by == "steps":
            return self.lead + steps_prefix(rationale, round_)
        tok = self.student.engine.tokenizer
        return self.lead + fraction_prefix(
            rationale,
            round_fraction(g.state_reset_fractions, round_),
            lambda t: tok.encode(t, add_special_tokens=False),
            lambda ids: tok.decode(ids, skip_special_tokens=True),
        )

    def hints(self, items: list[dict], wrong: dict[str, str], seed: int) -> list[str]:
        """One teacher hint per question, from its reference solution and the student's last wrong attempt,
        drawn anew each round."""
        assert self.teacher is not None
        t = self.cfg.gsi.teacher
        asks = [
            self.teacher.builder.question(
                TEACHER_ASK.format(
                    question=q["question"],
                    rationale=gold_rationale(q),
                    wrong=wrong.get(q["question_id"], "").strip(),
                ),
                q["choices"],
            )
            for q in items
        ]
        outs = self.teacher.engine.generate(asks, SamplingSpec(1, t.temperature, 1.0, t.max_tokens, seed))
        return [comps[0].text for comps in outs]

    def prompts(
        self, items: list[dict], round_: int, wrong: dict[str, str], seed: int
    ) -> list[tuple[str, str, str, str | None]]:
        """(guidance, prompt, prefix, hint) per question of a guided round; `wrong`: each question's last
        wrong sample (the teacher's hint answers it)."""
        wanted = self.cfg.gsi.guidance
        builder = self.student.builder
        hints: dict[str, str] = {}
        if wanted == "teacher":
            with_rationale = [q for q in items if gold_rationale(q)]
            if with_rationale:
                hints = dict(
                    zip(
                        [q["question_id"] for q in with_rationale],
                        self.hints(with_rationale, wrong, seed),
                        strict=True,
                    )
                )
        out = []
        for q in items:
            rationale = gold_rationale(q)
            # no worked reference (a bare answer): the answer hint is the only guidance there is
            guidance = wanted if rationale else "answer"
            gold = reference_answer(q["task"], q["reference"], q["choices"]) or str(q["reference"])
            if guidance == "state_reset":
                prefix = self.prefix(rationale, round_)
                out.append((guidance, builder.question(q["question"], q["choices"]) + prefix, prefix, None))
                continue
            hint = hints.get(q["question_id"]) if guidance == "teacher" else None
            text = hinted_question(q["question"], guidance, gold, rationale or "", hint or "")
            out.append((guidance, builder.question(text, q["choices"]), "", hint))
        return out


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    g = cfg.gsi
    questions = inputs.table("questions").to_pylist()
    groups = list(chunks(questions, cfg.data.shard_size))
    student = LazyEngine(cfg, inputs.policy_adapter())
    teacher = None
    if g.guidance == "teacher":
        teacher_model = cfg.model.model_copy(update={"path": g.teacher.path, "bootstrap": None})
        teacher = LazyEngine(cfg.model_copy(update={"model": teacher_model}), None)
    guide = Guide(cfg, student, teacher)
    s = g.sampling

    def sample(prompts: list[str], seed: int) -> list[list]:
        spec = SamplingSpec(s.n, s.temperature, s.top_p, s.max_tokens, seed)
        return student.engine.generate(prompts, spec)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        tok = student.engine.tokenizer
        plain = {q["question_id"]: student.builder.question(q["question"], q["choices"]) for q in group}
        right: Counter = Counter()
        wrong: dict[str, str] = {}  # each question's last wrong sample
        rows: list[dict] = []
        todo = group
        for round_ in range(g.max_resample + 1):
            if not todo:
                break
            # rounds take seeds apart from every other shard's and round's
            seed = shard_seed(cfg.run.seed, inputs.iteration, index * 1000 + round_)
            if round_ == 0:
                guided = [("none", plain[q["question_id"]], "", None) for q in todo]
            else:
                guided = guide.prompts(todo, round_, wrong, seed)
            outs = sample([p for _, p, _, _ in guided], seed)
            for q, (guidance, prompt, prefix, hint), comps in zip(todo, guided, outs, strict=True):
                for k, c in enumerate(comps):
                    text = prefix + c.text
                    answer, ok = grade(q["task"], text, q["reference"], q["choices"])
                    right[q["question_id"]] += int(ok)
                    if not ok:
                        wrong[q["question_id"]] = text
                    extra = len(tok.encode(prefix, add_special_tokens=False)) if prefix else 0
                    rows.append(
                        {
                            "question_id": q["question_id"],
                            "round": round_,
                            "guidance": guidance,
                            "sample_index": k,
                            "prompt": prompt,
                            "train_prompt": plain[q["question_id"]],
                            "hint": hint,
                            "prefix": prefix,
                            "completion": text,
                            "num_tokens": c.num_tokens,
                            "response_tokens": c.num_tokens + extra,
                            "finish_reason": c.finish_reason,
                            "answer": answer,
                            "correct": ok,
                        }
                    )
            todo = [q for q in todo if right[q["question_id"]] < g.min_correct]
        return rows

    start = time.perf_counter()
    try:
        desc = f"guided_sample iter-{inputs.iteration:03d}"
        shards = write_sharded(writer, inputs, groups, make_rows, GUIDED_SAMPLES, desc)
    finally:
        student.close()
        if teacher is not None:
            teacher.close()
    stats = {
        "samples": sum(sh.rows for sh in shards),
        "guidance": g.guidance,
        "engine_load_s": round(student.load_s + (teacher.load_s if teacher else 0.0), 2),
        "sampling_s": round(time.perf_counter() - start - student.load_s, 2),
    }
    return finish(writer, inputs, shards, stats)
