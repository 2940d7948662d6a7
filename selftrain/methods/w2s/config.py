"""Config section of Weak-to-Strong reasoning (arXiv 2407.13647): a weak model fine-tuned on a labelled half of
the training questions (train_1) teaches a strong model that sees only the questions of the other half
(train_2). Stage I: SFT of the strong model on the questions where the weak model's answer and the strong
model's few-shot answer agree. Stage II: preference pairs from the stage-I model's samples and the weak
answers (majority vote and its confidence), DPO."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from selftrain.config.base import Section
from selftrain.config.sections import ModelConfig, SamplingConfig


def _paper_stage2_sampling() -> SamplingConfig:
    return SamplingConfig(n=10, temperature=1.0, top_p=1.0, max_tokens=512, batch_size=16)


class Stage2Config(Section):
    """Stage II: the stage-I model's samples, their majority vote and the pair rule (selftrain.methods.w2s.core.w2s_pair)."""

    sampling: SamplingConfig = Field(
        default_factory=_paper_stage2_sampling,
        description="Samples of the stage-I model per train_2 question (the paper: 10 at temperature 1.0).",
    )
    min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Questions whose majority share (majority count / n) is below this are skipped.",
    )
    strong_confidence: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Where the weak answer is not the majority: a pair (chosen a majority sample, rejected the "
        "weak response) only at this majority share or above.",
    )


class W2sConfig(Section):
    """Weak-to-strong: the weak model, the split of the training questions, stage I and stage II settings.
    The strong model is `model` (the run's policy); its LoRA settings are `training.lora`."""

    weak: ModelConfig = Field(
        default_factory=lambda: ModelConfig(path="meta-llama/Llama-2-7b-hf"),
        description="The weak model (path; for the toy a bootstrap builds a smaller tiny model there), "
        "fine-tuned (LoRA SFT, the run's `training` settings) on the gold solutions of train_1.",
    )
    train_1_size: int = Field(
        7000,
        ge=1,
        description="The first this many of the iteration's questions (a seeded draw from data.train) are "
        "train_1, labelled, for the weak model; the rest are train_2, whose questions alone the strong model "
        "sees (the paper: GSM8K 7,000 / 7,000).",
    )
    few_shot: int = Field(
        4,
        ge=0,
        description="Worked train_1 examples (question, gold solution) before each train_2 question in the "
        "strong model's stage-I prompt.",
    )
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens of a stage-I (greedy) answer.")
    batch_size: int = Field(
        16, ge=1, description="Prompts per generate call of the stage-I answers (hf engine)."
    )
    stage2: Stage2Config = Field(
        default_factory=Stage2Config, description="Stage II's sampling and pair rule."
    )
    loss: Literal["dpo"] = Field(
        "dpo",
        description="Stage II's preference loss: dpo (TRL's DPOTrainer, with training.beta and training.lora). "
        "ORPO is not wired: TRL's ORPOTrainer trains without a reference model and would need its own "
        "trainer path.",
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> W2sConfig:
        if self.stage2.strong_confidence < self.stage2.min_confidence:
            raise ValueError("w2s.stage2.strong_confidence must be >= w2s.stage2.min_confidence")
        return self
