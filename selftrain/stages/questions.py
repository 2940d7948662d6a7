"""Stage 1, questions: this iteration's slice of the training questions (labels kept, never used for pairs)."""

from __future__ import annotations

import random
from collections import Counter

from selftrain.config import Config
from selftrain.data.sources import load_source
from selftrain.schemas import QUESTIONS
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.store import Manifest, StageWriter


def select_questions(cfg: Config, iteration: int) -> list[dict]:
    """Iteration i takes the i-th window of a seeded shuffle of all training questions, wrapping around."""
    pool: list[dict] = []
    for spec in cfg.data.train:
        pool.extend(load_source(spec, cfg.run.seed))
    random.Random(f"questions-{cfg.run.seed}").shuffle(pool)
    n = min(cfg.data.questions_per_iteration, len(pool))
    start = (iteration * n) % len(pool)
    return [pool[(start + k) % len(pool)] for k in range(n)]


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    chosen = select_questions(cfg, inputs.iteration)
    groups = list(chunks(chosen, cfg.data.shard_size))
    shards = write_sharded(writer, inputs, groups, lambda g, i: g, QUESTIONS, "questions")
    stats = {"questions": len(chosen), "by_source": dict(Counter(q["source"] for q in chosen))}
    return finish(writer, inputs, shards, stats)
