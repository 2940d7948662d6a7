"""SFT on the chosen samples (training.loss sft; the RFT/STaR-style update): TRL's SFTTrainer on the pairs
stage's `prompt` / `chosen` columns with the loss on the completion only, on the same LoRA path as DPO
(a fresh adapter, or adapter i-1 continued with training.init previous), saved as a PEFT adapter exactly as
DPO saves it, so the sample, score and evaluate stages load it unchanged.

Measured on the digit-sums toy (README, TOY-STUDIES.md): SFT on self-consistent samples raised held-out
accuracy where DPO on the same judge's pairs did not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from selftrain.config import Config
from selftrain.store import atomic_write_text
from selftrain.training.dpo import _kill_callback, check_adapter, latest_checkpoint

log = logging.getLogger(__name__)

SFT_METRIC_KEYS = ["loss", "mean_token_accuracy", "entropy"]


def sft_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """(prompt, completion) rows from pair rows: each distinct (question, chosen) once per pair row that holds it
    as chosen; a DPO pair table repeats its chosen once per rejected, so those repeats are dropped."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    builder_rows_have_no_rejected = all(r.get("rejected") is None for r in rows)
    for r in rows:
        key = (r["question_id"], r["prompt"], r["chosen"])
        if not builder_rows_have_no_rejected:
            if key in seen:
                continue
            seen.add(key)
        out.append({"prompt": r["prompt"], "completion": r["chosen"]})
    return out


def train_sft(cfg: Config, pairs: pa.Table, out_dir: Path, init_adapter: str | None) -> dict[str, Any]:
    """Train and save the adapter to `out_dir`; resumes from `out_dir/checkpoints` if a checkpoint is there."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    t = cfg.training
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if t.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model.path, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code
    )
    peft_config = None
    if init_adapter and t.init == "previous":
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        peft_config = LoraConfig(
            r=t.lora.r,
            lora_alpha=t.lora.alpha,
            lora_dropout=t.lora.dropout,
            target_modules=t.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    rows = pairs.to_pylist()
    dataset = Dataset.from_list(sft_rows(rows))
    ckpt_dir = out_dir / "checkpoints"
    use_cpu = not torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        max_steps=t.max_steps,
        num_train_epochs=t.epochs,
        max_grad_norm=t.max_grad_norm,
        max_length=t.max_length,
        completion_only_loss=True,
        packing=False,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        lr_scheduler_type=t.lr_scheduler,
        save_strategy="steps",
        save_steps=t.save_steps,
        logging_steps=t.logging_steps,
        bf16=t.bf16 and not use_cpu,
        use_cpu=use_cpu,
        gradient_checkpointing=t.gradient_checkpointing,
        report_to=t.report_to or "none",
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
        save_only_model=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_kill_callback()],
    )
    resume = latest_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming training from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    accelerator = trainer.accelerator
    state_dict = None
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        state_dict = accelerator.get_state_dict(trainer.model_wrapped)  # see train_dpo
    if accelerator.is_main_process:
        trainer.model.save_pretrained(str(out_dir), state_dict=state_dict, selected_adapters=["default"])
        check_adapter(out_dir)
        atomic_write_text(out_dir / "log_history.json", json.dumps(trainer.state.log_history, indent=1))
    history = trainer.state.log_history
    last = {k: v for entry in history for k, v in entry.items() if k in SFT_METRIC_KEYS}
    return {
        "loss_kind": "sft",
        "steps": trainer.state.global_step,
        "pairs": len(rows),
        "sft_examples": len(dataset),
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
        "resumed_from": Path(resume).name if resume else None,
        "device": accelerator.device.type,
        "distributed_type": str(accelerator.distributed_type.value),
        "mixed_precision": str(accelerator.mixed_precision),
        "zero_stage": plugin.zero_stage if plugin is not None else None,
        **{k.replace("/", "_"): round(float(v), 6) for k, v in last.items()},
    }


def train_policy(cfg: Config, pairs: pa.Table, out_dir: Path, init_adapter: str | None) -> dict[str, Any]:
    """The loss dispatch of the train stage: sft here, dpo and rpo in training.dpo."""
    if cfg.training.loss == "sft":
        return train_sft(cfg, pairs, out_dir, init_adapter)
    from selftrain.training.dpo import train_dpo

    return train_dpo(cfg, pairs, out_dir, init_adapter)
