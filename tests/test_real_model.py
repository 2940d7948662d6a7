"""A real pretrained model through every stage: SmolLM2-135M-Instruct (byte-level BPE, ChatML, tied embeddings,
bf16 weights), fetched offline by `selftrain model fetch` (the `smollm2_path` fixture, once per session), on
the shipped recipes shrunk to one small iteration: CORE-PO + DPO with the hf engine, self-consistency + SFT
with vLLM. What the tiny character-level model hid is asserted here: one chat structure and no doubled
special token in the ids sampled from and trained on, the judge reading " A"/" B", the adapter changing the
weights and vLLM's greedy output, evaluation parsing natural-language answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftrain.store import MANIFEST
from tests.conftest import ROOT, adapter_weights, cli

pytestmark = pytest.mark.slow

# one small iteration: 4 questions x 6 samples, 2 optimizer steps, 8 held-out questions per model
SMALL = {
    "run.iterations": 1,
    "data.questions_per_iteration": 4,
    "data.shard_size": 4,
    "data.eval.0.limit": 8,
    "sampling.n": 6,
    "sampling.max_tokens": 96,
    "evaluation.max_tokens": 64,
    "training.max_steps": 2,
    "training.per_device_batch_size": 4,
    "training.gradient_accumulation_steps": 1,
    "training.learning_rate": 1.0e-3,  # two steps must move the greedy output (the recipes use 5e-5 / 2e-4)
}


def _run(recipe: str, root: Path, engine: str) -> Path:
    sets = {**SMALL, "store.root": str(root), "engine.name": engine, "run.name": f"real-{engine}"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = cli("run", str(ROOT / "configs" / recipe), "--no-prefect", *args, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "runs" / f"real-{engine}"


@pytest.fixture(scope="module")
def hf_run(smollm2_path, tmp_path_factory) -> Path:
    return _run("smollm2-core-po.yaml", tmp_path_factory.mktemp("real-hf"), "hf")


@pytest.fixture(scope="module")
def vllm_run(smollm2_path, tmp_path_factory) -> Path:
    pytest.importorskip("vllm")
    return _run("smollm2-sc.yaml", tmp_path_factory.mktemp("real-vllm"), "vllm")


def _rows(run_dir: Path, stage: str) -> list[dict]:
    from selftrain.store import RunStore, read_stage

    return read_stage(RunStore(run_dir).stage_dir(0, stage)).to_pylist()


def _status(run_dir: Path) -> dict:
    proc = cli("status", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _one_chat(tokenizer, prompt: str) -> list[int]:
    """The ids the engines and TRL encode `prompt` to, checked for ChatML's structure: system, the one-shot
    user/assistant pair, the user turn and an open assistant turn, each opened by exactly one <|im_start|>."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids[0] == start and ids.count(start) == 5 and ids.count(end) == 4, tokenizer.decode(ids)
    assert all(a != b or a not in (start, end) for a, b in zip(ids, ids[1:], strict=False)), "doubled token"
    last = len(ids) - 1 - ids[::-1].index(start)
    assert tokenizer.decode(ids[last + 1 :]) == "assistant\n"  # an open assistant turn
    return ids


def _assert_finished(run_dir: Path) -> dict:
    status = _status(run_dir)
    assert all(s["status"] == "done" for s in status["state"][0]["stages"].values()), status["state"]
    models = {row["model"] for row in status["eval"]}
    assert models == {"base", "policy"}, status["eval"]
    return status


def test_hf_core_po_dpo_on_the_real_model(hf_run, smollm2_path):
    from transformers import AutoTokenizer

    from selftrain.engines.base import option_requests
    from selftrain.prompts import PromptBuilder

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    status = _assert_finished(hf_run)
    # the one-shot prompt makes the model write CORE-PO's format: without it 0 of 192 samples parse; with it
    # 0.52-0.58 of 64 (docs/real-model.md). A bound at that mean failed CI at 0.42 of these few samples: this one
    # tells "the format is written" from "it is not" (one parse in four, 6 of 24)
    judge = status["judge"][0]
    assert judge["parse_rate"] >= 0.25, judge
    samples = _rows(hf_run, "sample")
    for prompt in {s["prompt"] for s in samples}:
        _one_chat(tok, prompt)
    # what DPO trains on: the sampled prompt and completions, never a chat marker inside a completion (TRL
    # appends the one <|im_end|>)
    pairs = _rows(hf_run, "pairs")
    assert pairs, "no pairs: the judge scored every sample 0"
    sampled = {s["prompt"] for s in samples}
    for p in pairs:
        assert p["prompt"] in sampled
        assert "<|im_" not in p["chosen"] + p["rejected"]
    # P(True) is read on " A" / " B" after "...is:", the token the CORE-PO rule picks with this BPE
    builder = PromptBuilder(tok, "core_po", one_shot=True)
    req = option_requests(tok, [builder.answer_judge("What is 2 + 3?", "2 + 3 = 5.", "5")], ("A", "B"))[0]
    assert tok.convert_ids_to_tokens(req.option_ids) == ["ĠA", "ĠB"]
    scores = [s for s in _rows(hf_run, "score") if s["answer_confidence"] is not None]
    assert scores and len({round(s["score"], 6) for s in scores}) > 1  # real probabilities, not constants
    # training changed the weights: LoRA's B matrices start at zero
    weights = adapter_weights(hf_run)
    assert any(float(w.abs().sum()) > 0 for k, w in weights.items() if "lora_B" in k)
    train = json.loads((hf_run / "iter-000" / "train" / MANIFEST).read_text())["stats"]
    assert train["trained"] and train["steps"] == 2
    # evaluation reads the model's natural-language answers
    evals = _rows(hf_run, "evaluate")
    assert sum(r["answer"] is not None for r in evals) >= 0.75 * len(evals)


def test_hf_export_merge_keeps_tied_embeddings_and_dtype(hf_run, smollm2_path, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    proc = cli("export", str(hf_run), "--iteration", "0", "--merge", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert merged.config.tie_word_embeddings and merged.lm_head.weight is merged.model.embed_tokens.weight
    assert next(AutoModelForCausalLM.from_pretrained(out).parameters()).dtype == torch.bfloat16
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(hf_run / "iter-000" / "train"))
    ids = tok("What is 4 + 4?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (merged(ids).logits - peft(ids).logits).abs().max().item()
    assert diff < 0.5, diff  # bf16 rounding of the merged weights, no missing adapter


def test_vllm_self_consistency_sft_on_the_real_model(vllm_run, smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    status = _assert_finished(vllm_run)
    samples = _rows(vllm_run, "sample")
    assert len(samples) == 4 * 6 and len({s["prompt"] for s in samples}) == 4
    for prompt in {s["prompt"] for s in samples}:
        _one_chat(tok, prompt)
    assert status["judge"][0]["parse_rate"] > 0.5
    sft = _rows(vllm_run, "pairs")
    assert sft and all("<|im_" not in r["chosen"] for r in sft)
    # the next engine loads the trained adapter (LoRARequest on the real architecture) and it changes the
    # greedy answers; evaluation parses them
    evals = _rows(vllm_run, "evaluate")
    base = {r["question_id"]: r["completion"] for r in evals if r["model"] == "base"}
    policy = {r["question_id"]: r["completion"] for r in evals if r["model"] == "policy"}
    assert base.keys() == policy.keys() and any(base[q] != policy[q] for q in base)
    assert sum(r["answer"] is not None for r in evals) >= 0.75 * len(evals)
