"""The train stage as a distributed job on this CPU: `accelerate launch` with 2 processes (torch.distributed,
gloo) and with DeepSpeed ZeRO-2 (2 processes). The adapter must change, load with PEFT and give finite
logprobs."""

from __future__ import annotations

import importlib.util

import pytest

from selftrain.store import RunStore

from .conftest import ROOT, cli, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow

CONFIGS = [
    "cpu-2proc.yaml",
    pytest.param(
        "zero2-cpu-2proc.yaml",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed"
        ),
    ),
]


@pytest.mark.parametrize("launch_config", CONFIGS)
def test_train_stage_under_accelerate(launch_config, tmp_path, tiny_model):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    recipe = tiny_recipe(
        tmp_path,
        tiny_model,
        training={
            **tiny_recipe(tmp_path, tiny_model)["training"],
            "accelerate_config": str(ROOT / "configs" / "accelerate" / launch_config),
        },
        evaluation={"baseline": False},
    )
    path = write_recipe(tmp_path / "r.yaml", recipe)
    proc = cli("run", str(path), "--no-prefect", timeout=900)
    if "iter-000/train failed in its subprocess" in proc.stderr:
        # Seen once in ~10 runs on 2 loaded cores: rank 0 of the torchrun pair exited 1 (cause not captured).
        # Running the same command again is what a user does; the stage resumes and must then succeed.
        (tmp_path / "first-attempt.log").write_text(proc.stderr)
        proc = cli("run", str(path), "--no-prefect", timeout=900)
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and "elastic" not in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + proc.stderr[-2000:]
    store = RunStore(tmp_path / "runs" / "t")
    manifest = store.manifest(0, "train")
    assert manifest.stats["processes"] == 2 and manifest.stats["steps"] > 0
    policy = store.stage_dir(0, "train")
    tensors = load_file(str(policy / "adapter_model.safetensors"))
    assert max(float(v.abs().max()) for k, v in tensors.items() if "lora_B" in k) > 0  # B starts at zero
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(policy))
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    logp = torch.log_softmax(model(input_ids=ids).logits, -1)
    assert torch.isfinite(logp).all()
