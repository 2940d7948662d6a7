"""SFT on the chosen samples (training.loss sft; the RFT/STaR-style update): TRL's SFTTrainer on the pairs
stage's `prompt` / `chosen` columns with the loss on the completion only, on the same LoRA path as DPO
(a fresh adapter, or adapter i-1 continued with training.init previous), saved as a PEFT adapter exactly as
DPO saves it, so the sample, score and evaluate stages load it unchanged.

Measured on the digit-sums toy (README, TOY-STUDIES.md): SFT on self-consistent samples raised held-out
accuracy where DPO on the same judge's pairs did not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from selftrain.config import Config
from selftrain.training.dpo import build_trainer, load_for_training, train_and_save, train_dpo, trainer_args

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
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # `init_adapter` is continued: callers pass one only where the policy continues (training.init: previous
    # for the train stage, sft.train_from: previous for the sft stage)
    loaded = load_for_training(cfg, init_adapter)
    rows = pairs.to_pylist()
    dataset = Dataset.from_list(sft_rows(rows))
    ckpt_dir = out_dir / "checkpoints"
    args = SFTConfig(**trainer_args(cfg, ckpt_dir), completion_only_loss=True, packing=False)
    trainer = build_trainer(SFTTrainer, args, dataset, loaded)
    stats = train_and_save(trainer, ckpt_dir, out_dir, SFT_METRIC_KEYS)
    return {"loss_kind": "sft", "pairs": len(rows), "sft_examples": len(dataset), **stats}


def train_policy(cfg: Config, pairs: pa.Table, out_dir: Path, init_adapter: str | None) -> dict[str, Any]:
    """The loss dispatch of the train stage: sft here, dpo and rpo in training.dpo."""
    if cfg.training.loss == "sft":
        return train_sft(cfg, pairs, out_dir, init_adapter)

    return train_dpo(cfg, pairs, out_dir, init_adapter)
