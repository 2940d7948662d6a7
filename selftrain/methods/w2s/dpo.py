"""W2S stage II's training: DPO (TRL, w2s.loss) on the w2s_pairs rows, continuing the stage-I adapter
(strong_sft) with a frozen copy of it as the reference; with no pairs the stage-I model is kept. This adapter is
the method's policy."""

from __future__ import annotations

from pathlib import Path

from selftrain.config import Config
from selftrain.stages.common import StageInputs
from selftrain.stages.train import finish_train, fit_or_keep
from selftrain.store import Manifest, StageWriter
from selftrain.training.sft import train_policy


def dpo_config(cfg: Config) -> Config:
    """The run's config as the DPO trainer reads it: continue the given adapter (stage I), anchored at it."""
    forced = {"init": "previous", "reference": "previous", "loss": cfg.w2s.loss}
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=forced)})


def train_or_keep(cfg: Config, inputs: StageInputs, out_dir: Path, main_process: bool = True) -> dict:
    stage1 = str(inputs.store.stage_dir(inputs.iteration, "strong_sft"))
    pairs = inputs.table("w2s_pairs")
    return fit_or_keep(
        dpo_config(cfg), inputs, out_dir, pairs, stage1, train_policy, "preference pairs", main_process
    )


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    return finish_train(writer, inputs, train_or_keep(cfg, inputs, writer.dir))
