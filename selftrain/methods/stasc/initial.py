"""STaSC's initial answers: stasc.initial.n per question, from the base model M0 or, with
stasc.initial_answer_with_new_model, from the newest policy (the sample stage's machinery and schema)."""

from __future__ import annotations

from selftrain.config import Config
from selftrain.stages.common import StageInputs
from selftrain.stages.sample import sample_questions
from selftrain.store import Manifest, StageWriter


def run(cfg: Config, inputs: StageInputs, writer: StageWriter) -> Manifest:
    adapter = inputs.policy_adapter() if cfg.stasc.initial_answer_with_new_model else None
    return sample_questions(cfg, inputs, writer, cfg.stasc.initial, adapter)
