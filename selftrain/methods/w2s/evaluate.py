"""W2S's evaluation: greedy accuracy on data.eval of the four models side by side: the fine-tuned weak model
(`weak`), the strong base (`base`), stage I (`stage1`, the strong_sft adapter) and stage II (`policy`, the
w2s_dpo adapter, the method's policy), one model in memory at a time (selftrain.methods.w2s.core.MODELS)."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.data.sources import load_source
from selftrain.engines.lazy import LazyEngine
from selftrain.methods.w2s.core import MODELS
from selftrain.methods.w2s.weak_sft import weak_config
from selftrain.schemas import EVAL
from selftrain.stages.common import StageInputs, chunks
from selftrain.stages.evaluate import (
    engine_for,
    evaluate_sharded,
    greedy_rows,
    greedy_spec,
    metrics_by_source,
)
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    questions: list[dict] = []
    for spec in cfg.data.eval:
        questions.extend(load_source(spec, cfg.run.seed))
    strong, weak = cfg, weak_config(cfg)
    adapter = lambda stage: str(inputs.store.stage_dir(inputs.iteration, stage))  # noqa: E731
    engines = {
        "weak": LazyEngine(weak, adapter("weak_sft")),
        "base": LazyEngine(strong, None),
        "stage1": LazyEngine(strong, adapter("strong_sft")),
        "policy": LazyEngine(strong, adapter("w2s_dpo")),
    }
    groups = [
        [{**q, "model": m} for q in chunk]
        for m in MODELS
        for chunk in chunks(questions, cfg.evaluation.batch_size)
    ]
    greedy = greedy_spec(cfg)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        del index
        return greedy_rows(engine_for(engines, group[0]["model"]), group, greedy)[1]

    return evaluate_sharded(writer, inputs, groups, engines, make_rows, EVAL, metrics_by_source)
