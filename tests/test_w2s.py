"""Weak-to-Strong end to end on a tiny model (the test model stands in for both the weak and the strong one):
the method's stages, the agreement filter and the pair rule on real rows, the four models' accuracy printed by
`run` and `status`, and SIGKILL then resume. Marked slow (seconds per run on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selftrain.methods import METHODS
from selftrain.methods.w2s.core import agree, split, w2s_pair
from selftrain.recipes import load_config
from selftrain.store import RunStore, read_stage

from .conftest import (
    ROOT,
    cli,
    paper_on_cpu,
    resume_matches,
    run_fixture,
    stage_tables,
    tiny_recipe,
)

pytestmark = pytest.mark.slow

STAGES = list(METHODS.get("w2s").stages)
TABLES = ["questions", "weak_answers", "strong_answers", "agree", "stage2_sample", "w2s_pairs"]


def w2s_recipe(root: Path, model: Path) -> dict:
    recipe = tiny_recipe(root, model, run={"name": "w", "iterations": 1, "seed": 0})
    del recipe["judge"], recipe["sampling"]
    recipe["w2s"] = {
        "weak": {"path": str(model)},
        "train_1_size": 4,
        "few_shot": 1,
        "max_tokens": 12,
        "stage2": {
            "sampling": {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 12, "batch_size": 16},
            "min_confidence": 0.5,
            "strong_confidence": 0.75,
        },
    }
    return {"method": "w2s", **recipe}


w2s_run = run_fixture(w2s_recipe)


def test_w2s_run_stages_filters_pairs_and_reports(w2s_run):
    run_dir, stdout = w2s_run
    store = RunStore(run_dir)
    assert [st for st in STAGES if store.manifest(0, st) is not None] == STAGES
    t = stage_tables(run_dir, 0, TABLES)
    train_1, train_2 = split(t["questions"], 4)
    ids_2 = {q["question_id"] for q in train_2}
    # the weak and the strong model answer train_2 only; the strong prompt holds a train_1 worked example
    assert (
        {r["question_id"] for r in t["weak_answers"]}
        == ids_2
        == {r["question_id"] for r in t["strong_answers"]}
    )
    weak = {r["question_id"]: r for r in t["weak_answers"]}
    strong = {r["question_id"]: r for r in t["strong_answers"]}
    agreed = {q for q in ids_2 if agree(weak[q], strong[q])}
    assert {r["question_id"] for r in t["agree"]} == agreed
    assert all(r["prompt"].endswith("\nA:") and r["prompt"].count("Q: ") == 1 for r in t["agree"])
    assert store.manifest(0, "strong_sft").stats["trained"] == bool(agreed)
    # stage II: n samples of the stage-I model per train_2 question, the pair rule on them
    samples = t["stage2_sample"]
    assert len(samples) == 4 * len(ids_2) and "iter-000/strong_sft" in str(
        store.manifest(0, "stage2_sample").upstream
    )
    for p in t["w2s_pairs"]:
        ss = sorted(
            (s for s in samples if s["question_id"] == p["question_id"]), key=lambda s: s["sample_index"]
        )
        d = w2s_pair(weak[p["question_id"]], ss, 0.5, 0.75)
        assert (p["rule"], p["chosen"], p["rejected"]) == (d["rule"], d["chosen"], d["rejected"])
    rules = store.manifest(0, "w2s_pairs").stats["rules"]
    assert sum(rules.values()) == len(ids_2)
    metrics = store.manifest(0, "w2s_evaluate").stats["metrics"]
    assert set(metrics) == {"weak", "base", "stage1", "policy"}
    for text in (stdout, cli("status", str(run_dir)).stdout):
        assert "W2S iter-000" in text and "stage I:" in text and "stage II:" in text, text
        assert "accuracy (greedy, mean over eval sources): weak " in text and "stage II " in text, text


def test_w2s_sigkill_then_resume_equals_uninterrupted(w2s_run, tmp_path, tiny_model):
    recipe = w2s_recipe(tmp_path / "killed", tiny_model)
    resume_matches(recipe, tmp_path, "stage2_sample:shard:0", "w2s_dpo", w2s_run[0], TABLES)


def test_paper_recipe_wiring_on_cpu(tmp_path, tiny_model, shared_data):
    """configs/llama2-w2s.yaml for one iteration: the tiny model as both the weak and the strong one, local
    GSM8K files, a CPU budget; the recipe's method, split rule, stage II rule and LoRA untouched."""
    recipe = ROOT / "configs" / "llama2-w2s.yaml"
    gsm = shared_data / "gsm8k"
    overrides = {
        **paper_on_cpu(tmp_path, tiny_model),
        "w2s.weak.path": str(tiny_model),
        "w2s.weak.dtype": "float32",
        "data.train.0.path": str(gsm / "train.jsonl"),
        "data.eval.0.path": str(gsm / "test.jsonl"),
        "data.eval.0.limit": 2,
        "data.questions_per_iteration": 6,
        "data.shard_size": 3,
        "w2s.train_1_size": 3,
        "w2s.few_shot": 1,
        "w2s.max_tokens": 8,
        "w2s.stage2.sampling.n": 3,
        "w2s.stage2.sampling.max_tokens": 8,
        "evaluation.max_tokens": 8,
        "training.lora.r": 4,
        "training.lora.alpha": 8,
        "training.bf16": False,
        "training.max_length": 1024,  # the tiny model's positions: GSM8K solutions in characters need them
        "engine.name": "hf",
        "engine.isolation": "inline",
    }
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(recipe, sets)
    assert cfg.method == "w2s" and cfg.w2s.stage2.min_confidence == 0.6 and cfg.w2s.loss == "dpo"
    proc = cli("run", str(recipe), "--no-prefect", *[x for s in sets for x in ("--set", s)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path / "runs" / "paper")
    strong = read_stage(store.stage_dir(0, "strong_answers")).to_pylist()
    assert len(strong) == 3 and all("Example question" not in r["prompt"] for r in strong)
    assert len(read_stage(store.stage_dir(0, "stage2_sample")).to_pylist()) == 3 * 3
    assert "W2S iter-000" in proc.stdout and "strong base" in proc.stdout
