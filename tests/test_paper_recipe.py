"""The paper recipe (configs/llama3.1-8b-core-po.yaml) for one iteration on CPU: only the model, the data
paths and the compute budget overridden, so its wiring — prompt style, reference mode, schedule, mix,
contamination guard, best-of-K — runs without a GPU or the hub.

The tiny model does not speak the paper's answer format, so its samples are unparsable (score 0, no pairs)
and the train stage keeps the policy unchanged here; the judge on parsable samples, the token rule and the
DPO reference modes have their own tests in test_core_po_faithful.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from selftrain.prompts import PromptBuilder
from selftrain.recipes import load_config
from selftrain.store import RunStore, read_stage

from .conftest import CPU_BUDGET, ROOT, cli, paper_on_cpu

pytestmark = pytest.mark.slow

RECIPE = ROOT / "configs" / "llama3.1-8b-core-po.yaml"


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _arc(path: Path, n: int, tag: str) -> str:
    rows = [
        {
            "question": f"Which {tag} object {i} is the heaviest?",
            "choices": {"label": ["A", "B", "C", "D"], "text": ["a feather", "a brick", "a leaf", "a coin"]},
            "answerKey": "B",
        }
        for i in range(n)
    ]
    return _jsonl(path, rows)


def _gpqa(path: Path, questions: list[str]) -> str:
    rows = [
        {
            "Question": q,
            "Correct Answer": "42",
            "Incorrect Answer 1": "1",
            "Incorrect Answer 2": "2",
            "Incorrect Answer 3": "3",
        }
        for q in questions
    ]
    return _jsonl(path, rows)


def test_paper_recipe_one_iteration_on_cpu(tmp_path, tiny_model, shared_data):
    main = [f"GPQA main question number {i}?" for i in range(6)]
    diamond = [main[0], "A diamond-only question?"]  # diamond is a subset of main: main[0] must not train
    math = str(shared_data / "math500" / "test.jsonl")
    overrides = {
        **paper_on_cpu(tmp_path, tiny_model),
        # data: local copies instead of the hub, same sources and order as the recipe
        "data.train.0.path": str(shared_data / "gsm8k" / "train.jsonl"),
        "data.train.1.path": _arc(tmp_path / "arc-train.jsonl", 20, "train"),
        "data.train.2.path": math,  # MATH-500 stands in for MATH train: its level-5 items are eval questions
        "data.train.3.path": _gpqa(tmp_path / "gpqa-main.jsonl", main),
        "data.eval.0.path": str(shared_data / "gsm8k" / "test.jsonl"),
        "data.eval.1.path": _arc(tmp_path / "arc-test.jsonl", 4, "test"),
        "data.eval.2.path": math,
        "data.eval.3.path": _gpqa(tmp_path / "gpqa-diamond.jsonl", diamond),
        **{f"data.eval.{i}.limit": 2 for i in range(4)},
        "data.questions_per_iteration": 16,
        "data.shard_size": 8,
        # compute budget: a CPU, a tiny model
        "sampling.max_tokens": 24,
        "evaluation.max_tokens": 16,
        "training.accelerate_config": None,
        **CPU_BUDGET,
    }
    sets = [f"{k}={'null' if v is None else v}" for k, v in overrides.items()]
    cfg = load_config(RECIPE, sets)
    # the recipe's own choices, untouched by the overrides
    assert cfg.prompt.template == "core_po_llama3" and cfg.data.mix == "uniform"
    assert cfg.training.reference == "base" and cfg.training.init == "previous"
    assert cfg.training.lr_scheduler == "constant" and cfg.training.warmup_ratio == 0
    assert cfg.evaluation.best_of == 8 and cfg.judge.name == "core_po" and cfg.sampling.n == 5

    args = ["run", str(RECIPE), "--no-prefect"] + [x for s in sets for x in ("--set", s)]
    proc = cli(*args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path / "runs" / "paper")

    # guard: every MATH-500 level-5 item and the GPQA diamond question left training, counted
    q_manifest = store.manifest(0, "questions")
    level5 = sum(1 for line in Path(math).read_text().splitlines() if json.loads(line)["level"] == 5)
    dropped = q_manifest.stats["contamination_dropped_by_source"]
    assert dropped.get("gpqa") == 1 and dropped.get("math") == level5
    questions = read_stage(store.stage_dir(0, "questions")).to_pylist()
    assert main[0] not in {q["question"] for q in questions}
    # uniform mix: all four sources drawn, not ~pooled (GSM8K alone would be ~80 % when pooled)
    by_source = Counter(q["source"] for q in questions)
    assert len(by_source) == 4 and max(by_source.values()) <= 9, by_source

    # prompt style: the official Llama-3 strings, no BOS text (the tiny tokenizer adds none, so it is
    # written once), multiple choice in the original's "Choices:" form
    samples = read_stage(store.stage_dir(0, "sample")).to_pylist()
    builder = PromptBuilder(None, "core_po_llama3")
    for q in questions:
        prompt = next(s["prompt"] for s in samples if s["question_id"] == q["question_id"])
        assert prompt.endswith(builder.question(q["question"], q["choices"]).split("<bos>")[-1])
        assert prompt.count("<|start_header_id|>system<|end_header_id|>\n\nBe a helpful assistant.") == 1
    assert any(" Choices:\n[I]: " in s["prompt"] for s in samples)

    # best-of-8 beside greedy, per source, for the base model and the policy
    ev = read_stage(store.stage_dir(0, "evaluate")).to_pylist()
    best = [r for r in ev if r["decoding"] == "best_of"]
    assert Counter((r["model"], r["source"]) for r in best if r["selected"]) == {
        (m, s): 2 for m in ("base", "policy") for s in ("gsm8k", "arc_challenge", "math", "gpqa")
    }
    assert len(best) == 8 * 2 * 4 * 2
    assert "best-of-8" in proc.stdout
