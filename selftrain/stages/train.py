"""Stage 5, train: LoRA-DPO on this iteration's pairs (TRL + PEFT); resumes from its last checkpoint."""

from __future__ import annotations

import logging

from selftrain.config import Config
from selftrain.stages.common import StageInputs, finish
from selftrain.store import Manifest, ShardInfo, StageWriter, sha256_file
from selftrain.training.dpo import save_identity_adapter, train_dpo

log = logging.getLogger(__name__)


def init_adapter(cfg: Config, inputs: StageInputs) -> str | None:
    if cfg.training.init != "previous" or inputs.iteration == 0:
        return None
    return str(inputs.store.stage_dir(inputs.iteration - 1, "train"))


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    pairs_dir = inputs.store.stage_dir(inputs.iteration, "pairs")
    pairs_manifest = inputs.store.manifest(inputs.iteration, "pairs")
    assert pairs_manifest is not None
    files = [str(pairs_dir / s.name) for s in pairs_manifest.shards if s.rows > 0]
    if pairs_manifest.rows == 0:
        log.warning("iter-%03d has no preference pairs: keeping the policy unchanged", inputs.iteration)
        save_identity_adapter(cfg, writer.dir, init_adapter(cfg, inputs))
        stats: dict = {"steps": 0, "pairs": 0, "trained": False}
    else:
        stats = {**train_dpo(cfg, files, writer.dir, init_adapter(cfg, inputs)), "trained": True}
    outputs = [
        ShardInfo(name=p.name, rows=0, sha256=sha256_file(p))
        for p in sorted(writer.dir.glob("adapter_*"))
        if p.is_file()
    ]
    return finish(writer, inputs, [], stats, outputs)
