"""The train stage as a distributed job on this CPU: `accelerate launch` with 2 processes (torch.distributed,
gloo) and with DeepSpeed ZeRO-2 (2 processes). The adapter must change, load with PEFT and give finite
logprobs; a training killed after a checkpoint must resume to the same adapter as an uninterrupted one."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from selftrain.store import RunStore

from .conftest import ROOT, cli, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow

NO_DEEPSPEED = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed"
)
CONFIGS = [
    "cpu-2proc.yaml",
    pytest.param("zero2-cpu-2proc.yaml", marks=NO_DEEPSPEED),
    pytest.param("zero3-cpu-2proc.yaml", marks=NO_DEEPSPEED),
]


def launch_recipe(root: Path, model: Path, launch_config: str, **training) -> Path:
    """A tiny recipe whose train stage runs under `accelerate launch --config_file configs/accelerate/<x>`."""
    root.mkdir(parents=True, exist_ok=True)
    recipe = tiny_recipe(  # sections merge into tiny_recipe's own
        root,
        model,
        training={"accelerate_config": str(ROOT / "configs" / "accelerate" / launch_config), **training},
        evaluation={"baseline": False},
    )
    return write_recipe(root / "r.yaml", recipe)


def run_ok(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = cli("run", str(path), "--no-prefect", env=env, timeout=900)
    assert_ok(proc)
    return proc


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and "elastic" not in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + proc.stderr[-2000:]


def check_policy(store: RunStore, model: Path) -> dict:
    """The adapter changed (LoRA B starts at zero), loads with PEFT and gives finite logprobs."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    policy = store.stage_dir(0, "train")
    tensors = load_file(str(policy / "adapter_model.safetensors"))
    assert tensors and all(v.numel() > 0 for v in tensors.values())
    assert max(float(v.abs().max()) for k, v in tensors.items() if "lora_B" in k) > 0
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model)), str(policy))
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    logp = torch.log_softmax(peft_model(input_ids=ids).logits.float(), -1)
    assert torch.isfinite(logp).all()
    return tensors


def killed_and_resumed_adapter_diff(tmp_path: Path, model: Path, launch_config: str, **training) -> float:
    """Train once uninterrupted; train again, SIGKILLed right after the step-2 checkpoint, then rerun the same
    command. Checks the killed attempt left a complete checkpoint and no manifest and that the rerun resumed
    from it; returns the largest difference between the two adapters."""
    run_ok(launch_recipe(tmp_path / "whole", model, launch_config, **training))
    killed = launch_recipe(tmp_path / "killed", model, launch_config, **training)
    proc = cli("run", str(killed), "--no-prefect", env={"SELFTRAIN_KILL_AT": "train:step:2"}, timeout=900)
    store = RunStore(tmp_path / "killed" / "runs" / "t")
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert store.manifest(0, "train") is None
    assert (store.stage_dir(0, "train") / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    run_ok(killed)
    manifest = store.manifest(0, "train")
    assert manifest.stats["resumed_from"] == "checkpoint-2" and manifest.stats["steps"] == 4
    reference = check_policy(RunStore(tmp_path / "whole" / "runs" / "t"), model)
    return max_adapter_diff(check_policy(store, model), reference)


def max_adapter_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("launch_config", CONFIGS)
def test_train_stage_under_accelerate(launch_config, tmp_path, tiny_model):
    run_ok(launch_recipe(tmp_path, tiny_model, launch_config))
    store = RunStore(tmp_path / "runs" / "t")
    manifest = store.manifest(0, "train")
    assert manifest.stats["processes"] == 2 and manifest.stats["steps"] > 0
    assert manifest.stats["device"] == "cpu"
    if launch_config.startswith("zero"):
        assert manifest.stats["distributed_type"] == "DEEPSPEED"
        assert manifest.stats["zero_stage"] == int(launch_config[4])
    check_policy(store, tiny_model)  # under ZeRO-3: the gathered adapter, not the empty local shards


def test_killed_training_under_accelerate_resumes_to_the_same_adapter(tmp_path, tiny_model):
    """Both ranks die (SIGKILL) right after the step-2 checkpoint; the same command again resumes from it
    (optimizer, scheduler, RNG, data position) and ends with the adapter of an uninterrupted run."""
    assert killed_and_resumed_adapter_diff(tmp_path, tiny_model, "cpu-2proc.yaml") < 1e-5


def test_incomplete_checkpoint_is_not_resumed_from(tmp_path):
    from selftrain.training.dpo import latest_checkpoint

    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10").mkdir()  # cut short by a crash: no trainer_state.json
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


@pytest.mark.parametrize(
    "content, training, message",
    [
        ("deepspeed_config: {zero_stage: 3}\n", {}, "ZeRO-3 needs zero3_save_16bit_model: true"),
        ("deepspeed_config: {deepspeed_config_file: ds.json}\n", {}, "ZeRO-3 needs zero3_save_16bit_model"),
        ("deepspeed_config: {deepspeed_config_file: nope.json}\n", {}, "nope.json does not exist"),
        ("mixed_precision: bf16\n", {}, "training.bf16 is false"),
        ("mixed_precision: fp16\n", {"bf16": True}, "fp16 is not supported"),
        ("[unclosed\n", {}, "not valid YAML"),
    ],
)
def test_bad_launch_config_is_rejected_before_anything_runs(tmp_path, tiny_model, content, training, message):
    launch = tmp_path / "launch.yaml"
    launch.write_text(content)
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 3}}')  # found beside the YAML
    recipe = tiny_recipe(tmp_path, tiny_model)
    recipe["training"].update({"accelerate_config": str(launch), **training})
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last and str(launch) in last
    assert not (tmp_path / "runs" / "t" / "iter-000").exists()


def test_iteration_without_pairs_under_accelerate_keeps_the_policy(tmp_path, tiny_model):
    """Zero pairs under `accelerate launch` used to reach load_dataset with no files; now both paths share
    the no-pairs branch of the in-process stage."""
    recipe = tiny_recipe(
        tmp_path,
        tiny_model,
        training={"accelerate_config": str(ROOT / "configs" / "accelerate" / "cpu-2proc.yaml")},
        pairs={"min_margin": 2.0},  # scores are in [0, 1]: no pair can pass
        evaluation={"baseline": False},
    )
    run_ok(write_recipe(tmp_path / "r.yaml", recipe))
    store = RunStore(tmp_path / "runs" / "t")
    assert store.manifest(0, "pairs").rows == 0
    stats = store.manifest(0, "train").stats
    assert stats["trained"] is False and stats["steps"] == 0 and stats["processes"] == 2
    assert (store.stage_dir(0, "train") / "adapter_model.safetensors").is_file()
