"""The sft stages: TRL SFT with LoRA on a method's kept examples (STaSC's `sft`: correction prompt ->
correction; GSI's `rationale_sft`: question -> every kept rationale so far), on
the train stage's machinery (model loading, trainer arguments, checkpoints and resume, `accelerate launch`
through selftrain.training.launch); sft.train_from: base (a fresh adapter each iteration) or previous."""

from __future__ import annotations

from pathlib import Path

from selftrain.config import Config
from selftrain.spec import kind
from selftrain.stages.common import StageInputs
from selftrain.stages.train import finish_train, fit_or_keep
from selftrain.store import Manifest, StageWriter
from selftrain.training.sft import train_sft


def train_or_keep(cfg: Config, inputs: StageInputs, out_dir: Path, main_process: bool = True) -> dict:
    """Fine-tune on the kept examples (the stage kind's first input: `filter`, `rationales`), or, with none,
    keep the policy unchanged."""
    init = inputs.policy_adapter() if cfg.sft.train_from == "previous" else None
    examples = inputs.table(kind(inputs.stage).inputs[0].stage)
    return fit_or_keep(cfg, inputs, out_dir, examples, init, train_sft, "SFT examples", main_process)


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    return finish_train(writer, inputs, train_or_keep(cfg, inputs, writer.dir))
