"""Stage 2, sample: n completions per question from the current policy, one Parquet shard per question shard."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from selftrain.config import Config, SamplingConfig
from selftrain.engines.base import SamplingSpec
from selftrain.engines.lazy import LazyEngine
from selftrain.grading import extract_answer
from selftrain.schemas import SAMPLES
from selftrain.stages.common import StageInputs, chunks, finish, shard_seed, write_sharded
from selftrain.stages.parallel import run_workers
from selftrain.store import Manifest, StageWriter, StoreError, load_manifest

log = logging.getLogger(__name__)


def sample_rows(group: list[dict], prompts: list[str], outs: list) -> list[dict]:
    rows = []
    for q, prompt, comps in zip(group, prompts, outs, strict=True):
        for k, c in enumerate(comps):
            rows.append(
                {
                    "question_id": q["question_id"],
                    "sample_index": k,
                    "prompt": prompt,
                    "completion": c.text,
                    "num_tokens": c.num_tokens,
                    "finish_reason": c.finish_reason,
                    "cumulative_logprob": c.cumulative_logprob,
                    "answer": extract_answer(q["task"], c.text, q["choices"]),
                }
            )
    return rows


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest | None:
    return sample_questions(
        cfg, inputs, writer, cfg.sampling, inputs.policy_adapter(), workers=cfg.engine.workers
    )


def sample_questions(
    cfg: Config,
    inputs: StageInputs,
    writer: StageWriter,
    sampling: SamplingConfig,
    adapter: str | None,
    workers: int = 1,
) -> Manifest | None:
    """`sampling.n` completions per question of this iteration from the base model with `adapter`; shared by
    the stages that sample answers (sample, and STaSC's initial). None in a data-parallel worker that did not
    write the manifest."""
    questions = inputs.questions_table().to_pylist()
    groups = list(chunks(questions, cfg.data.shard_size))
    if workers > 1:
        # one worker process per device, sharing the shards through leases; the last one writes the manifest

        run_workers(inputs, workers, cfg.engine.gpus_per_engine)
        manifest = load_manifest(writer.dir)
        if manifest is None:
            raise StoreError(f"iter-{inputs.iteration:03d}/{inputs.stage}: the workers wrote no manifest")
        return manifest
    lazy = LazyEngine(cfg, adapter)
    start = time.perf_counter()
    try:
        shards = write_sharded(
            writer,
            inputs,
            groups,
            None,
            SAMPLES,
            f"{inputs.stage} iter-{inputs.iteration:03d}",
            produce=lambda todo: _produce(cfg.run.seed, sampling, lazy, inputs.iteration, groups, todo),
        )
        # engine start and shutdown are reported apart: they are fixed costs, not throughput
        timing = {
            "engine_load_s": round(lazy.load_s, 2),
            "sampling_s": round(time.perf_counter() - start - lazy.load_s, 2),
        }
    finally:
        lazy.close()
    if shards is None:
        return None  # another worker writes the manifest
    return finish(writer, inputs, shards, {**_stats(writer, shards), **timing})


def _produce(  # noqa: ANN202
    seed: int,
    s: SamplingConfig,
    lazy: LazyEngine,
    iteration: int,
    groups: list[list[dict]],
    todo: Iterator[int],
):
    """The missing shards go to the engine as one stream; each comes back as soon as it is complete.
    Prompts are rendered as the engine asks for the next shard, so memory follows the engine's window."""
    prompts: dict[int, list[str]] = {}

    def requests():  # noqa: ANN202
        for i in todo:
            prompts[i] = [lazy.builder.question(q["question"], q["choices"]) for q in groups[i]]
            yield (
                i,
                prompts[i],
                SamplingSpec(s.n, s.temperature, s.top_p, s.max_tokens, shard_seed(seed, iteration, i)),
            )

    # The engine starts before the first claim (this runs only while shards remain): no lease ages during a
    # long model load, and no heartbeat thread is alive when vLLM forks its engine-core process.
    engine = lazy.engine
    for index, outs in engine.generate_shards(requests()):
        yield index, sample_rows(groups[index], prompts.pop(index), outs)


def _stats(writer: StageWriter, shards: list) -> dict:
    """Summary statistics, read shard by shard and only the small columns: memory stays flat in N."""
    import pyarrow.parquet as pq

    samples = tokens = truncated = with_answer = 0
    for shard in shards:
        t = pq.read_table(writer.dir / shard.name, columns=["num_tokens", "finish_reason", "answer"])
        samples += t.num_rows
        tokens += sum(t.column("num_tokens").to_pylist())
        truncated += t.column("finish_reason").to_pylist().count("length")
        with_answer += t.num_rows - t.column("answer").null_count
    return {
        "samples": samples,
        "mean_tokens": round(tokens / samples, 2) if samples else 0.0,
        "truncated": truncated,
        "with_answer": with_answer,
    }
