"""The paper's training path on a real GPU: DeepSpeed ZeRO-2 and ZeRO-3 LoRA-DPO in bf16 under `accelerate
launch` (one process per GPU), and a killed training resumed to the same adapter. Skipped without CUDA; run
with `pytest -m gpu`."""

from __future__ import annotations

import pytest

from selftrain.store import RunStore

from .conftest import cli
from .test_train_distributed import check_policy, launch_recipe, max_adapter_diff, run_ok

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
    whole = launch_recipe(tmp_path / "whole", tiny_model, "zero2-1gpu.yaml", **PAPER_PATH)
    run_ok(whole)
    killed = launch_recipe(tmp_path / "killed", tiny_model, "zero2-1gpu.yaml", **PAPER_PATH)
    proc = cli("run", str(killed), "--no-prefect", env={"SELFTRAIN_KILL_AT": "train:step:2"}, timeout=900)
    assert proc.returncode != 0
    run_ok(killed)
    store = RunStore(tmp_path / "killed" / "runs" / "t")
    assert store.manifest(0, "train").stats["resumed_from"] == "checkpoint-2"
    diff = max_adapter_diff(
        check_policy(store, tiny_model), check_policy(RunStore(tmp_path / "whole" / "runs" / "t"), tiny_model)
    )
    print(f"\nmax |adapter(resumed) - adapter(uninterrupted)| = {diff:.3g}")
    assert diff < 1e-4
