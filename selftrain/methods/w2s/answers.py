"""W2S stage I's answers to the train_2 questions, greedy: `weak_answers` by the fine-tuned weak model (plain
question prompt), `strong_answers` by the strong base model with w2s.few_shot worked train_1 examples before
each question. The one body of both stage kinds (selftrain.methods.w2s.answers, strong_answers)."""

from __future__ import annotations

from collections.abc import Callable

from selftrain.config import Config
from selftrain.engines.base import SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.methods.w2s.core import few_shot_prompt, split
from selftrain.methods.w2s.weak_sft import weak_config
from selftrain.schemas import SAMPLES
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.stages.sample import sample_rows
from selftrain.store import Manifest, StageWriter


def with_batch(cfg: Config, sampling: dict) -> Config:
    """`cfg` with the engine's batch (cfg.sampling.batch_size) and the rest of `sampling` set."""
    return cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update=sampling)})


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    w = cfg.w2s
    train_1, train_2 = split(inputs.table("questions").to_pylist(), w.train_1_size)
    weak = inputs.stage == "weak_answers"
    run_cfg = with_batch(weak_config(cfg) if weak else cfg, {"batch_size": w.batch_size})
    adapter = str(inputs.store.stage_dir(inputs.iteration, "weak_sft")) if weak else None
    lazy = LazyEngine(run_cfg, adapter)
    shots = train_1[: w.few_shot]
    greedy = SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=w.max_tokens, seed=0)

    def make_rows(group: list[dict], index: int) -> list[dict]:
        del index
        if weak:
            prompts = [lazy.builder.question(q["question"], q["choices"]) for q in group]
        else:
            prompts = [few_shot_prompt(lazy.builder, shots, q) for q in group]
        rows = sample_rows(group, prompts, lazy.engine.generate(prompts, greedy))
        if not weak:  # trained on (stage I) with the plain question prompt, never the few-shot one
            for r, q in zip(rows, group, strict=True):
                r["prompt"] = lazy.builder.question(q["question"], q["choices"])
        return rows

    return write_train_2(cfg, inputs, writer, train_2, lazy, make_rows)


def write_train_2(
    cfg: Config,
    inputs: StageInputs,
    writer: StageWriter,
    train_2: list[dict],
    lazy: LazyEngine,
    make_rows: Callable[[list[dict], int], list[dict]],
) -> Manifest:
    """The SAMPLES shards of a stage that runs `lazy` on train_2 (one shard per data.shard_size questions), the
    engine closed afterwards. Shared by weak_answers, strong_answers and stage2_sample."""
    groups = list(chunks(train_2, cfg.data.shard_size))
    try:
        desc = f"{inputs.stage} iter-{inputs.iteration:03d}"
        shards = write_sharded(writer, inputs, groups, make_rows, SAMPLES, desc)
    finally:
        lazy.close()
    stats = {"rows": sum(sh.rows for sh in shards), "engine_load_s": round(lazy.load_s, 2)}
    return finish(writer, inputs, shards, stats)
