"""W2S stage II's samples: w2s.stage2.sampling.n completions per train_2 question from the stage-I model (the
strong model with the strong_sft adapter), plain question prompt, per-shard seeds (a redone shard repeats the
lost one)."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.engines.base import SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.methods.w2s.answers import with_batch, write_train_2
from selftrain.methods.w2s.core import split
from selftrain.stages.common import StageInputs, shard_seed
from selftrain.stages.sample import sample_rows
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    s = cfg.w2s.stage2.sampling
    _, train_2 = split(inputs.table("questions").to_pylist(), cfg.w2s.train_1_size)
    lazy = LazyEngine(
        with_batch(cfg, {"batch_size": s.batch_size}),
        str(inputs.store.stage_dir(inputs.iteration, "strong_sft")),
    )

    def make_rows(group: list[dict], index: int) -> list[dict]:
        seed = shard_seed(cfg.run.seed, inputs.iteration, index)
        prompts = [lazy.builder.question(q["question"], q["choices"]) for q in group]
        spec = SamplingSpec(s.n, s.temperature, s.top_p, s.max_tokens, seed)
        return sample_rows(group, prompts, lazy.engine.generate(prompts, spec))

    return write_train_2(cfg, inputs, writer, train_2, lazy, make_rows)
