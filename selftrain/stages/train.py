"""Stage 5, train: LoRA-DPO (or RPO, or SFT on the chosen side: training.loss) on this iteration's pairs (TRL +
PEFT); resumes from its last checkpoint.

In-process here; under `accelerate launch` (training.accelerate_config) through selftrain.training.launch,
which shares `prepare_train` and `finish_train`.
"""

from __future__ import annotations

import logging

from selftrain.config import Config
from selftrain.stages.common import StageInputs, finish
from selftrain.store import Manifest, ShardInfo, StageWriter, sha256_file
from selftrain.training.dpo import save_identity_adapter
from selftrain.training.sft import train_policy

log = logging.getLogger(__name__)


def prepare_train(cfg: Config, inputs: StageInputs) -> tuple[list[str], str | None]:
    """(pair shard files, adapter to continue from or None)."""
    pairs_dir = inputs.store.stage_dir(inputs.iteration, "pairs")
    manifest = inputs.store.manifest(inputs.iteration, "pairs")
    assert manifest is not None
    files = [str(pairs_dir / s.name) for s in manifest.shards if s.rows > 0]
    init = None
    if cfg.training.init == "previous" and inputs.iteration > 0:
        init = str(inputs.store.stage_dir(inputs.iteration - 1, "train"))
    return files, init


def finish_train(writer: StageWriter, inputs: StageInputs, stats: dict) -> Manifest:
    outputs = [
        ShardInfo(name=p.name, rows=0, sha256=sha256_file(p))
        for p in sorted(writer.dir.glob("adapter_*"))
        if p.is_file()
    ]
    return finish(writer, inputs, [], stats, outputs)


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    files, init = prepare_train(cfg, inputs)
    if not files:
        log.warning("iter-%03d has no preference pairs: keeping the policy unchanged", inputs.iteration)
        save_identity_adapter(cfg, writer.dir, init)
        return finish_train(writer, inputs, {"steps": 0, "pairs": 0, "trained": False})
    return finish_train(writer, inputs, {**train_policy(cfg, files, writer.dir, init), "trained": True})
