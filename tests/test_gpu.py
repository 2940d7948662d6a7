"""The paper's training path on a real GPU: DeepSpeed ZeRO-2 and ZeRO-3 LoRA-DPO in bf16 under `accelerate
launch` (one process per GPU), and a killed training resumed to the same adapter. Skipped without CUDA; run
with `pytest -m gpu`."""

from __future__ import annotations

import pytest

from selftrain.store import RunStore

from .test_train_distributed import check_policy, killed_and_resumed_adapter_diff, launch_recipe, run_ok

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

# the paper's settings where they matter for the code path: bf16, gradient checkpointing, clipping
PAPER_PATH = {"bf16": True, "gradient_checkpointing": True, "max_grad_norm": 1.0}


@pytest.mark.parametrize("launch_config, stage", [("zero2-1gpu.yaml", 2), ("zero3-1gpu.yaml", 3)])
def test_zero_lora_dpo_bf16_on_gpu(launch_config, stage, tmp_path, tiny_model):
    run_ok(launch_recipe(tmp_path, tiny_model, launch_config, **PAPER_PATH))
    store = RunStore(tmp_path / "runs" / "t")
    stats = store.manifest(0, "train").stats
    print(f"\n{launch_config}: {stats}")
    assert stats["device"] == "cuda" and stats["mixed_precision"] == "bf16"
    assert stats["distributed_type"] == "DEEPSPEED" and stats["zero_stage"] == stage
    assert stats["steps"] == 4
    check_policy(store, tiny_model)  # non-empty, finite, changed: ZeRO-3 must not save an empty adapter


def test_killed_zero2_training_resumes_on_gpu(tmp_path, tiny_model):
    diff = killed_and_resumed_adapter_diff(tmp_path, tiny_model, "zero2-1gpu.yaml", **PAPER_PATH)
    print(f"\nmax |adapter(resumed) - adapter(uninterrupted)| = {diff:.3g}")
    assert diff < 1e-4
