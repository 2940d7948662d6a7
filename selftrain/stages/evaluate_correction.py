"""STaSC's evaluation: per held-out question a greedy initial answer, then a greedy correction of it by the
same model; accuracy of the corrected answer (what the run's accuracy table shows), of the initial answer, and
the correction rates wrong -> right and right -> wrong. Policy and, in iteration 0, the base model."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.engines.base import SamplingSpec
from selftrain.grading import grade
from selftrain.schemas import CORRECTION_EVAL
from selftrain.stages.common import StageInputs, read_shards, write_sharded
from selftrain.stages.evaluate import engine_for, eval_groups, finish_eval
from selftrain.stasc import correction_metrics
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    groups, engines = eval_groups(cfg, inputs)
    greedy = SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=cfg.evaluation.max_tokens, seed=0)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        del index  # greedy throughout: nothing depends on the shard
        lazy = engine_for(engines, group[0]["model"])
        prompts = [lazy.builder.question(q["question"], q["choices"]) for q in group]
        initial = [comps[0].text for comps in lazy.engine.generate(prompts, greedy)]
        asks = [
            lazy.builder.correction(q["question"], q["choices"], a)
            for q, a in zip(group, initial, strict=True)
        ]
        corrected = [comps[0].text for comps in lazy.engine.generate(asks, greedy)]
        rows = []
        for q, first, second in zip(group, initial, corrected, strict=True):
            first_answer, first_ok = grade(q["task"], first, q["reference"], q["choices"])
            answer, ok = grade(q["task"], second, q["reference"], q["choices"])
            rows.append(
                {
                    "model": q["model"],
                    "source": q["source"],
                    "question_id": q["question_id"],
                    "initial": first,
                    "initial_answer": first_answer,
                    "initial_correct": first_ok,
                    "completion": second,
                    "answer": answer,
                    "reference": q["reference"],
                    "correct": ok,
                }
            )
        return rows

    try:
        desc = f"evaluate_correction iter-{inputs.iteration:03d}"
        shards = write_sharded(writer, inputs, groups, make_rows, CORRECTION_EVAL, desc)
    finally:
        for e in engines.values():
            e.close()
    rows = read_shards(writer.dir, shards, CORRECTION_EVAL).to_pylist()
    return finish_eval(writer, inputs, shards, correction_metrics(rows))
