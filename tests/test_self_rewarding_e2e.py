"""Self-Rewarding end to end on CPU: the tiny recipe (configs/tiny-self-rewarding.yaml) killed in its score
stage and resumed to identical tables, and the paper-shaped recipe (configs/llama3.1-8b-self-rewarding.yaml)
for one iteration with only the model, data and compute budget overridden. Marked slow."""

from __future__ import annotations

import json

import pytest

from selftrain.recipes import load_config
from selftrain.store import RunStore, read_stage

from .conftest import CPU_BUDGET, ROOT, cli, small_bootstrap, stage_tables

pytestmark = pytest.mark.slow

TINY = ROOT / "configs" / "tiny-self-rewarding.yaml"
PAPER = ROOT / "configs" / "llama3.1-8b-self-rewarding.yaml"


@pytest.fixture(scope="module")
def rubric_model(tmp_path_factory):
    """A tiny model pre-trained mostly on judgments in the compact rubric's format (seconds), so that its
    judgments parse and its pairs are not empty."""
    from selftrain.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("models") / "rubric"
    build_tiny_model(path, small_bootstrap(steps=120, judge_fraction=0, rubric_fraction=0.5))
    return path


def _tiny_sets(root, model) -> list[str]:
    sets = {
        "store.root": root,
        "model.path": model,
        "model.bootstrap": "null",
        "run.iterations": 1,
        "data.train.0.size": 200,
        "data.eval.0.limit": 8,
        "data.questions_per_iteration": 8,
        "data.shard_size": 4,
        "sampling.max_tokens": 32,
        "judge.max_tokens": 32,
        "training.max_steps": 2,
        "training.per_device_batch_size": 2,
        "training.save_steps": 1,
        "evaluation.max_tokens": 32,
    }
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def test_tiny_recipe_killed_in_score_resumes_to_identical_tables(tmp_path, rubric_model):
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    proc = cli("run", str(TINY), "--no-prefect", *_tiny_sets(ref_root, rubric_model))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "judge agreement" in proc.stdout and "unparsable" in proc.stdout
    reference = ref_root / "runs" / "tiny-self-rewarding"
    scores = read_stage(RunStore(reference).stage_dir(0, "score")).to_pylist()
    # every sample judged judge.samples = 3 times, each judgment's text and points kept
    assert scores and all(len(r["judgments"]) == len(r["judgment_scores"]) == 3 for r in scores)
    assert any(p is not None for r in scores for p in r["judgment_scores"]), "no judgment parsed"
    stats = RunStore(reference).manifest(0, "score").stats
    assert 0 <= stats["unparsable_rate"] < 1 and stats["judgments"] == 3 * len(scores)

    # the same run, SIGKILLed after the score stage's second shard, then resumed
    recipe = tmp_path / "killed.yaml"
    recipe.write_text(TINY.read_text())
    run_dir = root / "runs" / "tiny-self-rewarding"
    env_sets = _tiny_sets(root, rubric_model)
    proc = cli("run", str(recipe), "--no-prefect", *env_sets, env={"SELFTRAIN_KILL_AT": "score:shard:1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert "partial" in cli("status", str(run_dir)).stdout
    stage_dir = RunStore(run_dir).stage_dir(0, "score")
    kept = {p.name: p.stat().st_mtime_ns for p in stage_dir.glob("part-*.parquet")}
    assert kept
    proc = cli("run", str(recipe), "--no-prefect", *env_sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: (stage_dir / p).stat().st_mtime_ns for p in kept} == kept  # reused, not redone
    assert stage_tables(run_dir) == stage_tables(reference)


def test_tiny_recipe_with_self_instruction(tmp_path, rubric_model):
    sets = _tiny_sets(tmp_path, rubric_model) + [
        *("--set", "method=self_rewarding_instruct", "--set", "self_instruct.candidates=24"),
        *("--set", "self_instruct.shots=4"),
    ]
    proc = cli("run", str(TINY), "--no-prefect", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path / "runs" / "tiny-self-rewarding")
    stats = store.manifest(0, "prompts").stats
    assert stats["candidates"] == 24 and "contamination_dropped" in stats
    written = read_stage(store.stage_dir(0, "prompts")).to_pylist()
    dropped = stats["dropped"]
    assert len(written) + dropped == 24 and len(written) <= 8
    assert all(q["source"] == "self_instruct" and q["reference"] is None for q in written)
    assert all(len(json.loads(q["meta"])["shots"]) == 4 for q in written)
    # the rest of the iteration ran on the written questions, not on a draw from data.train
    assert not store.stage_dir(0, "questions").exists()
    sampled = {s["question_id"] for s in read_stage(store.stage_dir(0, "sample")).to_pylist()}
    assert sampled == {q["question_id"] for q in written}


def test_paper_recipe_one_iteration_on_cpu(tmp_path, tiny_model, shared_data):
    gsm8k = shared_data / "gsm8k"
    overrides = {
        "run.iterations": 1,
        "model.path": str(tiny_model),
        "model.dtype": "float32",
        "store.root": str(tmp_path),
        "data.train.0.path": str(gsm8k / "train.jsonl"),
        "data.eval.0.path": str(gsm8k / "test.jsonl"),
        "data.eval.0.limit": 1,
        "data.questions_per_iteration": 1,  # the paper's rubric makes ~2,000-character prompts: one is enough
        "data.shard_size": 1,
        "sampling.max_tokens": 8,
        "judge.max_tokens": 8,
        "evaluation.max_tokens": 8,
        "training.max_steps": 1,
        **CPU_BUDGET,
    }
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(PAPER, sets)
    # the recipe's own choices, untouched by the overrides: the paper's judge and pairs
    assert cfg.method == "self_rewarding" and cfg.judge.name == "llm_as_judge" and cfg.judge.rubric == "paper"
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.judge.samples, cfg.training.beta) == (
        4,
        0.7,
        3,
        0.1,
    )
    assert cfg.pairs.builder == "best_vs_worst"
    proc = cli("run", str(PAPER), "--no-prefect", *[x for s in sets for x in ("--set", s)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path / "runs" / "llama3.1-8b-self-rewarding")
    scores = read_stage(store.stage_dir(0, "score")).to_pylist()
    assert len(scores) == 4 and all(len(r["judgments"]) == 3 for r in scores)
    # the 40-step model writes no `Score: N`: every sample unscored (missing, not 0), so no pairs
    assert store.manifest(0, "score").stats["unparsable_rate"] == 1.0
    assert all(r["score"] is None for r in scores) and store.manifest(0, "pairs").rows == 0
    assert "judge agreement" in proc.stdout
