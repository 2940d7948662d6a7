"""GSI end to end on a tiny model: the method's stages, cumulative rationales, the tail report printed by `run`
and `status`, SIGKILL then resume, the teacher-help guidance with a real second engine, and the paper recipe's
wiring on CPU. Marked slow (seconds per run on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selftrain.recipes import load_config
from selftrain.store import RunStore, read_stage

from .conftest import (
    ROOT,
    cli,
    paper_on_cpu,
    resume_matches,
    run_fixture,
    status_columns,
    tiny_recipe,
    write_recipe,
)

pytestmark = pytest.mark.slow

STAGES = ["questions", "guided_sample", "rationales", "rationale_sft", "evaluate"]
TABLES = ["questions", "guided_sample", "rationales"]


def gsi_recipe(root: Path, model: Path, **gsi) -> dict:
    recipe = tiny_recipe(root, model, run={"name": "g", "iterations": 2, "seed": 0})
    del recipe["judge"], recipe["sampling"]  # the gold answer decides; gsi.sampling samples
    # the test model (40 pre-training steps) solves nothing alone: rounds prefill 80 % then 95 % of the gold
    # solution and it writes a few characters more, enough for some right (kept) rationales to train on
    recipe["gsi"] = {
        "sampling": {"n": 3, "temperature": 0.8, "top_p": 0.95, "max_tokens": 3, "batch_size": 24},
        "min_correct": 2,
        "max_resample": 2,
        "guidance": "state_reset",
        "state_reset_fractions": [0.8, 0.95],
        **gsi,
    }
    return {"method": "gsi", **recipe}


gsi_run = run_fixture(gsi_recipe)


def test_gsi_run_resamples_the_tail_keeps_rationales_and_reports(gsi_run):
    run_dir, stdout = gsi_run
    store = RunStore(run_dir)
    for it in (0, 1):
        assert [st for st in STAGES if store.manifest(it, st) is not None] == STAGES
    samples = read_stage(store.stage_dir(0, "guided_sample")).to_pylist()
    plain = [s for s in samples if s["round"] == 0]
    assert len(plain) == 8 * 3 and {s["guidance"] for s in plain} == {"none"}
    right = {
        q: sum(s["correct"] for s in plain if s["question_id"] == q)
        for q in {s["question_id"] for s in plain}
    }
    guided = [s for s in samples if s["round"] > 0]
    # exactly the questions with fewer than min_correct right plain samples are resampled, with a gold prefix
    assert {s["question_id"] for s in guided if s["round"] == 1} == {q for q, n in right.items() if n < 2}
    assert guided and all(s["guidance"] == "state_reset" and s["prefix"] for s in guided)
    assert all(s["completion"].startswith(s["prefix"]) and s["prompt"].endswith(s["prefix"]) for s in guided)
    assert all(s["train_prompt"] == s["prompt"][: -len(s["prefix"])] for s in guided)
    # rationales: the right samples, each once, with the plain prompt; iteration 1 holds iteration 0's too
    kept0 = read_stage(store.stage_dir(0, "rationales")).to_pylist()
    kept1 = read_stage(store.stage_dir(1, "rationales")).to_pylist()
    assert {(r["question_id"], r["chosen"]) for r in kept0} == {
        (s["question_id"], s["completion"]) for s in samples if s["correct"]
    }
    assert kept1[: len(kept0)] == kept0 and {r["iteration"] for r in kept1} <= {0, 1}
    assert all("Hint" not in r["prompt"] and r["prompt"].endswith("\nA:") for r in kept1)
    sft = store.manifest(1, "rationale_sft")
    assert (
        sft.stats["sft_examples"] == len(kept1) and "iter-000/rationale_sft" not in sft.upstream
    )  # from base
    report = store.manifest(0, "rationales").stats["report"]
    assert report["questions"] == 8 and report["kept"] >= report["kept_plain"]
    assert sum(c["questions"] for c in report["by_pass_rate"].values()) == 8
    assert set(report["kept_length"]) == {"plain", "guided"}
    for text in (stdout, cli("status", str(run_dir)).stdout):
        assert "GSI: questions with >= 1 kept rationale" in text and "iter-001:" in text, text
        assert "by pass rate of the sampling model" in text and "kept length (tokens): plain" in text
    assert status_columns(run_dir) == STAGES


@pytest.mark.parametrize("kill_at", ["guided_sample:shard:0", "train:step:2"])
def test_gsi_sigkill_then_resume_equals_uninterrupted(kill_at, gsi_run, tmp_path, tiny_model):
    """`train:step:N` kills any trainer stage at step N: here rationale_sft."""
    recipe = gsi_recipe(tmp_path / "killed", tiny_model)
    resume_matches(recipe, tmp_path, kill_at, "rationale_sft", gsi_run[0], TABLES)


@pytest.mark.parametrize("guidance", ["teacher", "answer"])  # rationale: the same path, other text
def test_gsi_hint_guidance_reaches_the_prompt(guidance, tmp_path, tiny_model):
    """Teacher-help with a real second engine (the tiny model stands in for the stronger teacher); the answer
    hint (the rationale hint takes the same path with another text: tests/test_gsi_units.py). One iteration, the hint in every guided prompt and never in the SFT data."""
    extra = {"teacher": {"path": str(tiny_model), "max_tokens": 12}} if guidance == "teacher" else {}
    recipe = gsi_recipe(tmp_path, tiny_model, guidance=guidance, max_resample=1, min_correct=3, **extra)
    recipe["run"]["iterations"] = 1
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path / "runs" / "g")
    guided = [s for s in read_stage(store.stage_dir(0, "guided_sample")).to_pylist() if s["round"] == 1]
    assert guided and all(s["guidance"] == guidance and "(Hint: " in s["prompt"] for s in guided)
    if guidance == "teacher":
        assert all(s["hint"] is not None and s["hint"].strip() in s["prompt"] for s in guided)
        assert "loading engine for " + str(tiny_model) in proc.stderr
    assert all("Hint" not in r["prompt"] for r in read_stage(store.stage_dir(0, "rationales")).to_pylist())


def test_paper_recipe_wiring_on_cpu(tmp_path, tiny_model, shared_data):
    """configs/llama3-8b-gsi.yaml for one iteration: the tiny model, local GSM8K and MATH-500 files, a CPU
    budget; the recipe's method, guidance and schedule untouched."""
    recipe = ROOT / "configs" / "llama3-8b-gsi.yaml"
    gsm, math = shared_data / "gsm8k", shared_data / "math500" / "test.jsonl"
    overrides = {
        **paper_on_cpu(tmp_path, tiny_model),
        "data.train.0.path": str(gsm / "train.jsonl"),
        "data.train.1.path": str(math),  # MATH-500 stands in for MATH train (its solutions are the gold)
        "data.eval.0.path": str(gsm / "test.jsonl"),
        "data.eval.1.path": str(math),
        "data.eval.0.limit": 2,
        "data.eval.1.limit": 2,
        "data.questions_per_iteration": 6,
        "data.shard_size": 6,
        "gsi.sampling.n": 2,
        "gsi.sampling.max_tokens": 8,
        "gsi.max_resample": 1,
        "evaluation.max_tokens": 8,
        "training.lora.r": 4,
        "training.lora.alpha": 8,
        "training.bf16": False,
        "training.max_length": 512,
        "engine.name": "hf",
        "engine.isolation": "inline",
    }
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(recipe, sets)
    assert cfg.method == "gsi" and cfg.gsi.guidance == "state_reset" and cfg.gsi.min_correct == 4
    proc = cli("run", str(recipe), "--no-prefect", *[x for s in sets for x in ("--set", s)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path / "runs" / "paper")
    samples = read_stage(store.stage_dir(0, "guided_sample")).to_pylist()
    # the tiny model never solves these: every question is resampled once, with a prefix of its gold solution
    guided = [s for s in samples if s["round"] == 1]
    assert len({s["question_id"] for s in guided}) == 6 and all(s["prefix"] for s in guided)
    assert "GSI: questions with >= 1 kept rationale" in proc.stdout
