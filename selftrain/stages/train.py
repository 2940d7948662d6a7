"""Stage 5, train: LoRA-DPO (or RPO, or SFT on the chosen side: training.loss) on this iteration's pairs (TRL +
PEFT); resumes from its last checkpoint.

In-process here; under `accelerate launch` (training.accelerate_config) through selftrain.training.launch,
which shares `prepare_train` and `finish_train`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from selftrain.config import Config
from selftrain.stages.common import StageInputs, finish
from selftrain.store import Manifest, StageWriter, file_info
from selftrain.training.dpo import save_identity_adapter
from selftrain.training.sft import train_policy

log = logging.getLogger(__name__)


def prepare_train(cfg: Config, inputs: StageInputs) -> tuple[pa.Table, str | None]:
    """(this iteration's pairs, adapter to continue from or None). The pairs come through the store's reader,
    which checks every shard's sha256: a damaged shard is a one-line StoreError, never a trainer traceback."""
    pairs = inputs.table("pairs")
    init = inputs.policy_adapter() if cfg.training.init == "previous" else None
    return pairs, init


def finish_train(writer: StageWriter, inputs: StageInputs, stats: dict) -> Manifest:
    outputs = [file_info(p) for p in sorted(writer.dir.glob("adapter_*")) if p.is_file()]
    return finish(writer, inputs, [], stats, outputs)


def fit_or_keep(
    cfg: Config,
    inputs: StageInputs,
    out_dir: Path,
    data: pa.Table,
    init: str | None,
    fit: Callable[[Config, pa.Table, Path, str | None], dict],
    what: str,
    main_process: bool = True,
) -> dict:
    """Train on `data` with `fit`, or, with no rows, keep the policy unchanged (the adapter `init` it would
    continue, or a no-op one). Shared by the trainer stages (train, sft), in-process and on every `accelerate
    launch` rank, so those paths cannot drift apart."""
    if data.num_rows == 0:
        if main_process:
            log.warning("iter-%03d has no %s: keeping the policy unchanged", inputs.iteration, what)
            save_identity_adapter(cfg, out_dir, init)
        return {"steps": 0, what.split()[-1]: 0, "trained": False}  # rows named as in `what`: pairs, examples
    return {**fit(cfg, data, out_dir, init), "trained": True}


def train_or_keep(cfg: Config, inputs: StageInputs, out_dir: Path, main_process: bool = True) -> dict:
    """Train on this iteration's pairs (training.loss), or, with none, keep the policy unchanged."""
    pairs, init = prepare_train(cfg, inputs)
    return fit_or_keep(cfg, inputs, out_dir, pairs, init, train_policy, "preference pairs", main_process)


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    return finish_train(writer, inputs, train_or_keep(cfg, inputs, writer.dir))
