"""The config section of STaSC (self-taught self-correction, arXiv 2503.08681)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from selftrain.config.base import Section
from selftrain.config.sections import SamplingConfig


def _paper_sampling() -> SamplingConfig:
    return SamplingConfig(n=5, temperature=0.6, top_p=0.9, max_tokens=256, batch_size=16)


class StascConfig(Section):
    """STaSC: initial answers, corrections of each, a gold-based reward, the corrections that improved kept,
    SFT on question -> initial -> correction. Gold answers are used to build training data, as in the paper."""

    initial: SamplingConfig = Field(
        default_factory=_paper_sampling,
        description="Initial answers: n per question, temperature, top_p, max_tokens (the paper: 5, 0.6, 0.9, 256).",
    )
    correction: SamplingConfig = Field(
        default_factory=_paper_sampling,
        description="Corrections: n per initial answer, and their sampling (the paper: as the initial answers).",
    )
    reward: Literal["in_acc", "exact_match"] = Field(
        "in_acc",
        description="in_acc: a normalised gold answer appears in the text (the paper's); exact_match: the "
        "task's extracted answer equals the gold answer (selftrain.grading).",
    )
    only_better_correction: bool = Field(
        True, description="Keep only wrong -> right corrections; false also keeps right -> right ones."
    )
    initial_answer_with_new_model: bool = Field(
        False,
        description="Initial answers come from the newest policy M(i-1) (true) or always from the base model "
        "M0 (false).",
    )
