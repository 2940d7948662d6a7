"""STaSC's evaluation: per held-out question a greedy initial answer, then a greedy correction of it by the
same model; accuracy of the corrected answer (what the run's accuracy table shows), of the initial answer, and
the correction rates wrong -> right and right -> wrong. Policy and, in iteration 0, the base model."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.grading import grade
from selftrain.methods.stasc.core import correction_metrics
from selftrain.schemas import CORRECTION_EVAL
from selftrain.stages.common import StageInputs
from selftrain.stages.evaluate import engine_for, eval_groups, evaluate_sharded, greedy_spec
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    groups, engines = eval_groups(cfg, inputs)
    greedy = greedy_spec(cfg)

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

    return evaluate_sharded(writer, inputs, groups, engines, make_rows, CORRECTION_EVAL, correction_metrics)
