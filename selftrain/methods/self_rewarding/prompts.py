"""Self-instruction stage (method self_rewarding_instruct): the model writes this iteration's questions.

Each of self_instruct.candidates generations sees k seed questions (a seeded draw from data.train after the
contamination guard) and writes one new question; selftrain.methods.self_rewarding.self_instruct's filters then drop the empty, the
too short or long, those with a blocked word, every evaluation question (normalised match, counted), copies of
a seed or of a kept question and near-copies (ROUGE-L). The kept rows carry their provenance in `meta`: the
shots' question ids, the generator and the generation's index. They have no reference: a self-written question
has no gold answer, so the judge's agreement with correctness is not measured on them.

One shard: the filters compare each question with those kept before it, so a partly written stage could not
be resumed shard by shard to the same rows (the stage is short: one generation per candidate). The drop
counts come from the attempt that wrote that shard: a stage killed after its shard was written but before its
manifest reports its rows on resume with contamination_dropped None (the generations are not kept to recount).
"""

from __future__ import annotations

import json
import random

from selftrain.config import Config
from selftrain.data.contamination import eval_question_keys, normalise_question
from selftrain.engines.base import SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.methods.self_rewarding.self_instruct import filter_questions, k_shot_prompt, read_question
from selftrain.schemas import QUESTIONS
from selftrain.stages.common import StageInputs, finish, shard_seed, write_sharded
from selftrain.stages.questions import training_sources
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    si = cfg.self_instruct
    sources, guard_dropped = training_sources(cfg)
    seeds = [q for rows in sources for q in rows]
    seed_keys = {normalise_question(q["question"]) for q in seeds}
    eval_keys = eval_question_keys(cfg)
    rng = random.Random(f"self-instruct-{cfg.run.seed}-{inputs.iteration}")
    draws = [rng.sample(seeds, min(si.shots, len(seeds))) for _ in range(si.candidates)]
    adapter = inputs.policy_adapter() if si.generator == "policy" else None
    lazy = LazyEngine(cfg, adapter)
    stats: dict = {}

    def make_rows(group: list[dict], index: int) -> list[dict]:
        builder = lazy.builder
        prompts = [k_shot_prompt(builder, [q["question"] for q in shots]) for shots in draws]
        spec = SamplingSpec(
            1, si.temperature, si.top_p, si.max_tokens, shard_seed(cfg.run.seed, inputs.iteration, index)
        )
        outs = lazy.engine.generate(prompts, spec)
        written = [read_question(builder, comps[0].text) for comps in outs]
        shots_text = [[q["question"] for q in shots] for shots in draws]
        result = filter_questions(
            list(zip(written, shots_text, strict=True)),
            seed_keys,
            eval_keys,
            si,
            cfg.data.questions_per_iteration,
        )
        stats["dropped"] = sum(result.dropped.values())
        stats.update({f"dropped_{k}": v for k, v in sorted(result.dropped.items())})
        rows = []
        for i in result.kept:
            shots = draws[i]
            meta = {"shots": [q["question_id"] for q in shots], "generator": si.generator, "candidate": i}
            rows.append(
                {
                    "question_id": f"si-{inputs.iteration:03d}-{i:05d}",
                    "source": "self_instruct",
                    "split": f"iter-{inputs.iteration:03d}",
                    "task": shots[0]["task"],  # how its answers are parsed: the task of the seeds it imitates
                    "question": written[i],
                    "reference": None,
                    "choices": None,
                    "meta": json.dumps(meta),
                }
            )
        return rows

    try:
        shards = write_sharded(
            writer, inputs, [draws], make_rows, QUESTIONS, f"prompts iter-{inputs.iteration:03d}"
        )
    finally:
        lazy.close()
    rows = sum(s.rows for s in shards)
    return finish(
        writer,
        inputs,
        shards,
        {
            "candidates": si.candidates,
            "questions": rows,
            "seed_pool": len(seeds),
            # generated questions equal to an evaluation question (normalised text): dropped and counted
            # (None: the shard was written by an earlier, killed attempt, whose counts were not kept)
            "contamination_dropped": stats.get("dropped_evaluation_question", 0) if stats else None,
            "seed_contamination_dropped": sum(guard_dropped.values()),
            **stats,
        },
    )
