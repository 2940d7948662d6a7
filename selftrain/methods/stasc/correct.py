"""STaSC's corrections: stasc.correction.n corrections of every initial answer by the current policy M(i-1),
with the correction prompt (selftrain.prompts.STASC_CORRECTION); one shard per question shard."""

from __future__ import annotations

import time
from collections import defaultdict

from selftrain.config import Config
from selftrain.engines.base import SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.grading import extract_answer
from selftrain.schemas import CORRECTIONS
from selftrain.stages.common import StageInputs, chunks, finish, shard_seed, write_sharded
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    questions = inputs.questions_table().to_pylist()
    initial: dict[str, list[dict]] = defaultdict(list)
    for row in inputs.table("initial").to_pylist():
        initial[row["question_id"]].append(row)
    groups = list(chunks(questions, cfg.data.shard_size))
    lazy = LazyEngine(cfg, inputs.policy_adapter())
    c = cfg.stasc.correction

    def make_rows(group: list[dict], index: int) -> list[dict]:
        items = [
            (q, a) for q in group for a in sorted(initial[q["question_id"]], key=lambda a: a["sample_index"])
        ]
        if not items:
            return []
        prompts = [lazy.builder.correction(q["question"], q["choices"], a["completion"]) for q, a in items]
        seed = shard_seed(cfg.run.seed, inputs.iteration, index)
        outs = lazy.engine.generate(prompts, SamplingSpec(c.n, c.temperature, c.top_p, c.max_tokens, seed))
        rows = []
        for (q, a), prompt, comps in zip(items, prompts, outs, strict=True):
            for j, comp in enumerate(comps):
                rows.append(
                    {
                        "question_id": q["question_id"],
                        "sample_index": a["sample_index"],
                        "correction_index": j,
                        "prompt": prompt,
                        "initial": a["completion"],
                        "completion": comp.text,
                        "num_tokens": comp.num_tokens,
                        "finish_reason": comp.finish_reason,
                        "initial_answer": a["answer"],
                        "answer": extract_answer(q["task"], comp.text, q["choices"]),
                    }
                )
        return rows

    start = time.perf_counter()
    try:
        shards = write_sharded(
            writer, inputs, groups, make_rows, CORRECTIONS, f"correct iter-{inputs.iteration:03d}"
        )
    finally:
        lazy.close()
    stats = {
        "corrections": sum(s.rows for s in shards),
        "engine_load_s": round(lazy.load_s, 2),
        "sampling_s": round(time.perf_counter() - start - lazy.load_s, 2),
    }
    return finish(writer, inputs, shards, stats)
