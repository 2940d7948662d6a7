"""LoRA-DPO with TRL: the core of the train stage, usable in-process or under `accelerate launch`.

The reference policy is never a second copy of the weights. `training.reference: base` (the paper): the base
model with the adapter disabled, also when the adapter continues from i-1 (`training.init: previous`, its
weights loaded into TRL's fresh adapter). `training.reference: previous`: TRL keeps a frozen copy of adapter
i-1 as the reference, so each iteration's DPO is anchored at the policy that produced its data.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selftrain.config import Config
from selftrain.cpufeatures import warn_half_precision_on_cpu
from selftrain.faults import maybe_kill
from selftrain.fileio import atomic_write_text
from selftrain.training import reference_logps as refs

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

METRIC_KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]


def _kill_callback():  # noqa: ANN202 - transformers type
    from transformers import TrainerCallback

    class KillAfterCheckpoint(TrainerCallback):
        """Fault injection for crash tests (see stages.common.maybe_kill): dies right after a checkpoint."""

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if os.environ.get("SELFTRAIN_KILL_AT", "").startswith("train:"):
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():
                    # every rank has finished writing its part of the checkpoint before one of them dies
                    dist.barrier()
            # SELFTRAIN_KILL_RANK: only that global rank dies (one node of a multi-node job lost)
            if os.environ.get("SELFTRAIN_KILL_RANK", os.environ.get("RANK")) == os.environ.get("RANK"):
                maybe_kill("train", "step", state.global_step)
            return control

    return KillAfterCheckpoint()


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a checkpoint folder
    without it was cut short by a crash and is skipped (transformers' get_last_checkpoint would pick it)."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for path in ckpt_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not (path.is_dir() and step.isdigit()):
            continue
        if (path / "trainer_state.json").is_file():
            found.append((int(step), path))
        else:
            log.warning("%s is incomplete (no trainer_state.json): not resuming from it", path)
    return str(max(found)[1]) if found else None


def dpo_loss_args(t: Any) -> dict[str, Any]:
    """TRL's loss list: dpo = [loss_type]; rpo = DPO + rpo_alpha x NLL on the chosen side (TRL's "sft" term)."""
    if t.loss == "rpo":
        return {"loss_type": [t.loss_type, "sft"], "loss_weights": [1.0, t.rpo_alpha]}
    return {"loss_type": [t.loss_type]}


def train_dpo(
    cfg: Config,
    pairs: pa.Table,
    out_dir: Path,
    init_adapter: str | None,
    ref_cache_root: Path | None = None,
) -> dict[str, Any]:
    """Train and save the adapter to `out_dir`; resumes from `out_dir/checkpoints` if a checkpoint is there.
    With `training.precompute_ref_logps`, the reference log-probs are read from (or computed once into)
    `ref_cache_root/<key>` (default: `out_dir/../../cache/reference-logps`). Returns summary metrics (the last
    logged DPO metrics, steps, runtime, what happened to the reference log-probs)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    t = cfg.training
    continue_adapter = bool(init_adapter and t.init == "previous")
    # reference previous: TRL copies the loaded adapter into a frozen "ref" adapter, so DPO is anchored at
    # adapter i-1. Otherwise a fresh adapter through TRL, whose reference is the base with the adapter
    # disabled; with reference=base and init=previous, adapter i-1's weights are loaded into it below (the
    # paper: one adapter trained on through the run, always against the base).
    keep_loaded = continue_adapter and t.reference == "previous"
    loaded = load_for_training(cfg, init_adapter if keep_loaded else None)
    # pairs read (and sha256-checked) by the store, not re-read from the files behind its back
    dataset = Dataset(pairs.select(["prompt", "chosen", "rejected"]).combine_chunks())
    ckpt_dir = out_dir / "checkpoints"
    args = DPOConfig(
        **trainer_args(cfg, ckpt_dir),
        beta=t.beta,
        **dpo_loss_args(t),
        precompute_ref_log_probs=t.precompute_ref_logps,
        # no gradients and no optimizer state in that pass: a larger batch is safe and faster
        precompute_ref_batch_size=t.per_device_batch_size * 4,
    )
    trainer_class, ref_record = DPOTrainer, {}
    if t.precompute_ref_logps:
        identity = refs.reference_identity(cfg.model.path, t.reference, init_adapter)
        key = refs.cache_key(dataset.data.table, identity, t.max_length, t.bf16)
        root = ref_cache_root or out_dir.parent.parent / "cache" / "reference-logps"
        trainer_class = refs.caching_trainer_class(root / key, {"reference": identity}, ref_record)
    trainer = build_trainer(trainer_class, args, dataset, loaded)
    if continue_adapter and t.reference == "base":
        _load_adapter_weights(trainer.model, Path(init_adapter))
    stats = train_and_save(trainer, ckpt_dir, out_dir, METRIC_KEYS)
    return {
        "pairs": len(dataset),
        **({"reference_logps": ref_record} if ref_record else {}),
        **stats,
    }


def build_trainer(trainer_class: Any, args: Any, dataset: Any, loaded: tuple[Any, Any, Any]) -> Any:
    """A TRL trainer of `trainer_class` (DPO's or SFT's) on `dataset`, over load_for_training's (tokenizer,
    model, peft_config), with the crash tests' kill-after-checkpoint callback."""
    tokenizer, model, peft_config = loaded
    return trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_kill_callback()],
    )


def load_for_training(cfg: Config, continue_from: str | None) -> tuple[Any, Any, Any]:
    """(tokenizer, model, peft_config): the base model with `continue_from`'s adapter loaded trainable, or with
    a LoRA config for the trainer to add a fresh adapter (peft_config None in the first case)."""
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t, trust = cfg.training, cfg.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=trust)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if t.bf16 else torch.float32
    if t.bf16 and not torch.cuda.is_available():
        warn_half_precision_on_cpu("training.bf16", "bfloat16")
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=dtype, trust_remote_code=trust)
    if continue_from:
        return tokenizer, PeftModel.from_pretrained(model, continue_from, is_trainable=True), None
    lora = LoraConfig(
        r=t.lora.r,
        lora_alpha=t.lora.alpha,
        lora_dropout=t.lora.dropout,
        target_modules=t.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return tokenizer, model, lora


def trainer_args(cfg: Config, ckpt_dir: Path) -> dict[str, Any]:
    """The TrainingArguments shared by DPO and SFT: batch, schedule, checkpoints, device, seeds."""
    import torch

    t = cfg.training
    use_cpu = not torch.cuda.is_available()
    return {
        "output_dir": str(ckpt_dir),
        "per_device_train_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "max_steps": t.max_steps,
        "num_train_epochs": t.epochs,
        "max_grad_norm": t.max_grad_norm,
        "max_length": t.max_length,
        "warmup_steps": t.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        "lr_scheduler_type": t.lr_scheduler,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "logging_steps": t.logging_steps,
        "bf16": t.bf16 and not use_cpu,
        "use_cpu": use_cpu,
        "gradient_checkpointing": t.gradient_checkpointing,
        "report_to": t.report_to or "none",
        "seed": t.seed,
        "data_seed": t.seed,
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,  # LoRA on fixed modules: every adapter gets a gradient
        "disable_tqdm": False,
        "save_only_model": False,  # optimizer, scheduler and RNG states are what make a resume exact
    }


def train_and_save(trainer: Any, ckpt_dir: Path, out_dir: Path, metric_keys: list[str]) -> dict[str, Any]:
    """Train (resuming from the newest complete checkpoint), save the adapter and the log history on rank 0,
    and summarise: the last logged metrics, steps, runtime and where it ran."""
    resume = latest_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming training from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    accelerator = trainer.accelerator
    state_dict = None
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        # ZeRO-3 shards every parameter: rank 0's own tensors are empty placeholders, so save_pretrained
        # alone writes an empty adapter. Gathering is collective, so every rank takes part.
        state_dict = accelerator.get_state_dict(trainer.model_wrapped)
    history = trainer.state.log_history
    if accelerator.is_main_process:
        trainer.model.save_pretrained(str(out_dir), state_dict=state_dict, selected_adapters=["default"])
        check_adapter(out_dir)
        # the trainer's per-step metrics, kept with the adapter for plots and for checking what training did
        atomic_write_text(out_dir / "log_history.json", json.dumps(history, indent=1))
    last = {k: v for entry in history for k, v in entry.items() if k in metric_keys}
    return {
        "steps": trainer.state.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
        "resumed_from": Path(resume).name if resume else None,
        "device": accelerator.device.type,
        "distributed_type": str(accelerator.distributed_type.value),
        "mixed_precision": str(accelerator.mixed_precision),
        "zero_stage": plugin.zero_stage if plugin is not None else None,
        **{k.replace("/", "_"): round(float(v), 6) for k, v in last.items()},
    }


def _load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Adapter i-1's LoRA weights into the trainer's fresh "default" adapter (same shape: same config)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{adapter_dir}: adapter does not fit training.lora (missing {missing[:2]}, "
            f"unexpected {list(result.unexpected_keys)[:2]})"
        )
    log.info("continuing adapter %s; DPO reference: the base model", adapter_dir)


def save_identity_adapter(cfg: Config, out_dir: Path, init_adapter: str | None) -> None:
    """No pairs to learn from: the policy stays what it was (the previous adapter, or a zero-effect LoRA)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32)
    if init_adapter:  # callers pass one only where the policy continues (training.init, sft.train_from)
        model = PeftModel.from_pretrained(model, init_adapter)
    else:
        lora = cfg.training.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, task_type="CAUSAL_LM"
            ),
        )
    model.save_pretrained(str(out_dir))


def check_adapter(out_dir: Path) -> None:
    """Saved LoRA tensors must be non-empty and finite (ZeRO-3 is known to save empty adapters)."""
    from safetensors.torch import load_file

    path = out_dir / "adapter_model.safetensors"
    tensors = load_file(str(path))
    bad = [k for k, v in tensors.items() if v.numel() == 0 or not bool(v.float().isfinite().all())]
    if not tensors or bad:
        raise RuntimeError(f"{path}: adapter tensors empty or not finite: {bad[:3] or 'no tensors'}")
    norm = math.sqrt(sum(float(v.float().pow(2).sum()) for v in tensors.values()))
    log.info("adapter saved: %d tensors, L2 norm %.4f", len(tensors), norm)
