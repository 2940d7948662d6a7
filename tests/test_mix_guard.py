"""How an iteration's training questions are drawn (data.mix) and the contamination guard. No model needed."""

from __future__ import annotations

from collections import Counter

from selftrain.config import Config
from selftrain.pipeline import execute_stage
from selftrain.stages.questions import mix_proportional, mix_uniform, select_questions
from selftrain.store import RunStore, move_aside, read_stage


def _sources(*sizes: int) -> list[list[dict]]:
    return [
        [{"question_id": f"s{t}-{i}", "source": f"s{t}"} for i in range(size)] for t, size in enumerate(sizes)
    ]


def _ids(rows: list[dict]) -> list[str]:
    return [r["question_id"] for r in rows]


def test_uniform_mix_is_uniform_over_sources_whatever_their_sizes():
    sources = _sources(5000, 500, 50)
    counts: Counter = Counter()
    for it in range(10):
        counts.update(r["source"] for r in mix_uniform(sources, 90, seed=0, iteration=it))
    # 900 draws, 1/3 each; proportional pooling would give s0 90% of them
    assert all(250 <= counts[s] <= 350 for s in ("s0", "s1", "s2")), counts
    pooled = Counter(r["source"] for r in mix_proportional(sources, 900, seed=0, iteration=0))
    assert pooled["s0"] > 750


def test_uniform_mix_is_deterministic_and_continues_each_source_across_iterations():
    sources = _sources(400, 300, 200)
    it0, it1 = mix_uniform(sources, 60, 7, 0), mix_uniform(sources, 60, 7, 1)
    assert _ids(it0) == _ids(mix_uniform(sources, 60, 7, 0))  # same seed and iteration, same questions
    assert _ids(it0) != _ids(mix_uniform(sources, 60, 8, 0))  # the seed matters
    assert not set(_ids(it0)) & set(_ids(it1))  # each source continues where the last iteration stopped
    # within a source, questions are taken in its (already seeded) order
    s0 = [r for r in it0 + it1 if r["source"] == "s0"]
    assert _ids(s0) == [f"s0-{i}" for i in range(len(s0))]


def test_uniform_mix_never_repeats_a_question_within_an_iteration():
    sources = _sources(3, 100)  # the small source runs out: the rest come from the other one
    for it in range(4):
        rows = mix_uniform(sources, 50, 0, it)
        assert len(rows) == 50 and len(set(_ids(rows))) == 50
        assert sum(r["source"] == "s0" for r in rows) <= 3
    assert len(mix_uniform(sources, 500, 0, 0)) == 103  # capped at the pool, as proportional is


def _cfg(tmp_path, mix: str = "proportional", **data) -> Config:
    return Config.model_validate(
        {
            "run": {"name": "q", "seed": 3},
            "data": {
                "train": [
                    {"name": "synthetic_arithmetic", "split": "train", "size": 300},
                    {"name": "synthetic_arithmetic", "split": "train", "size": 20, "limit": 20},
                ],
                "eval": [{"name": "synthetic_arithmetic", "split": "test", "limit": 5}],
                "questions_per_iteration": 12,
                "shard_size": 5,
                "mix": mix,
                **data,
            },
            "store": {"root": str(tmp_path)},
        }
    )


def test_proportional_is_the_default_and_keeps_the_pooled_window(tmp_path):
    assert Config().data.mix == "proportional"
    cfg = _cfg(tmp_path)
    from selftrain.data.sources import load_source

    sources = [load_source(s, 3) for s in cfg.data.train]
    assert select_questions(cfg, 1) == mix_proportional(sources, 12, 3, 1)


def test_redone_questions_stage_writes_the_same_questions(tmp_path):
    """Resume safety: a questions stage moved aside and redone (rerun, --rebuild-stale) gives the same rows."""
    cfg = _cfg(tmp_path, "uniform")
    store = RunStore(cfg.run_dir())
    first = []
    for it in (0, 1):
        execute_stage(cfg, store, it, "questions")
        first.append(read_stage(store.stage_dir(it, "questions")).to_pylist())
    assert first[0] != first[1]
    for it in (0, 1):
        move_aside(store.stage_dir(it, "questions"), "stale")
        m = execute_stage(cfg, store, it, "questions")
        assert read_stage(store.stage_dir(it, "questions")).to_pylist() == first[it]
        assert m.stats["mix"] == "uniform"
