"""Stage 1, questions: this iteration's slice of the training questions (labels kept, never used for pairs).

Every run applies the contamination guard first (selftrain/data/contamination.py): a training question whose
normalised text equals an evaluation question of the run is dropped and counted in the manifest stats.
Which questions an iteration gets is then a pure function of the config, run.seed and the iteration number, so a
redone questions stage (a resume, a `rerun`) writes exactly the same questions.
"""

from __future__ import annotations

import random
from collections import Counter

from selftrain.config import Config
from selftrain.data.contamination import drop_contaminated, eval_question_keys
from selftrain.data.sources import load_source
from selftrain.errors import DataError
from selftrain.schemas import QUESTIONS
from selftrain.stages.common import StageInputs, chunks, finish, write_sharded
from selftrain.store import Manifest, StageWriter


def training_sources(cfg: Config) -> tuple[list[list[dict]], Counter]:
    """Each training source's rows without the questions that are also evaluation questions of the run,
    and how many the contamination guard dropped per source."""
    sources = [load_source(spec, cfg.run.seed) for spec in cfg.data.train]
    sources, dropped = drop_contaminated(sources, eval_question_keys(cfg))
    if not any(sources):
        raise DataError("every training question is also an evaluation question (contamination guard)")
    return sources, dropped


def select_questions(cfg: Config, iteration: int, sources: list[list[dict]] | None = None) -> list[dict]:
    """The questions of `iteration`, drawn from the (guarded) training sources as `data.mix` says."""
    if sources is None:
        sources, _ = training_sources(cfg)
    n = cfg.data.questions_per_iteration
    if cfg.data.mix == "uniform":
        return mix_uniform(sources, n, cfg.run.seed, iteration)
    return mix_proportional(sources, n, cfg.run.seed, iteration)


def mix_proportional(sources: list[list[dict]], n: int, seed: int, iteration: int) -> list[dict]:
    """Iteration i takes the i-th window of a seeded shuffle of all training questions, wrapping around, so
    each source appears in proportion to its size."""
    pool = [q for rows in sources for q in rows]
    random.Random(f"questions-{seed}").shuffle(pool)
    n = min(n, len(pool))
    start = (iteration * n) % len(pool)
    return [pool[(start + k) % len(pool)] for k in range(n)]


def _uniform_picks(sizes: list[int], n: int, seed: int, iteration: int) -> list[int]:
    """Source index of each of the iteration's n questions, uniform over sources. A source is left out of the
    draw once the iteration has taken all its questions, so a question never appears twice in one iteration
    (downstream stages key samples by question_id)."""
    rng = random.Random(f"mix-uniform-{seed}-{iteration}")
    used = [0] * len(sizes)
    picks = []
    for _ in range(n):
        t = rng.choice([t for t, size in enumerate(sizes) if used[t] < size])
        used[t] += 1
        picks.append(t)
    return picks


def mix_uniform(sources: list[list[dict]], n: int, seed: int, iteration: int) -> list[dict]:
    """Each question comes from a source picked uniformly at random (seeded by run.seed and the iteration);
    within a source, questions are taken in its seeded order, continuing where the previous iterations
    stopped and wrapping around. Replaying the earlier iterations' picks makes that position a pure function
    of the iteration, so a redone stage needs no state from earlier ones."""
    sizes = [len(rows) for rows in sources]
    n = min(n, sum(sizes))
    offset = [0] * len(sizes)
    for it in range(iteration):
        for t in _uniform_picks(sizes, n, seed, it):
            offset[t] += 1
    chosen = []
    for t in _uniform_picks(sizes, n, seed, iteration):
        chosen.append(sources[t][offset[t] % sizes[t]])
        offset[t] += 1
    return chosen


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    sources, dropped = training_sources(cfg)
    chosen = select_questions(cfg, inputs.iteration, sources)
    groups = list(chunks(chosen, cfg.data.shard_size))
    shards = write_sharded(writer, inputs, groups, lambda g, i: g, QUESTIONS, "questions")
    stats = {
        "questions": len(chosen),
        "mix": cfg.data.mix,
        "by_source": dict(Counter(q["source"] for q in chosen)),
        # training questions equal to an evaluation question (normalised text), dropped from every source
        "contamination_dropped": sum(dropped.values()),
        "contamination_dropped_by_source": dict(dropped),
    }
    return finish(writer, inputs, shards, stats)
