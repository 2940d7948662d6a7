"""Config section of GSI (Guided Self-Improvement, arXiv 2411.00750): STaR-style sampling with guided resampling
of the questions the model rarely solves (the tail), SFT from the base model on every kept rationale so far."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from selftrain.config.base import Section
from selftrain.config.sections import SamplingConfig


def _paper_sampling() -> SamplingConfig:
    return SamplingConfig(n=8, temperature=0.7, top_p=1.0, max_tokens=512, batch_size=16)


class TeacherConfig(Section):
    """Teacher-help guidance: a stronger model writes a hint from the question and the reference solution."""

    path: str | None = Field(
        None, description="The teacher model (a local folder or hub id); required with gsi.guidance teacher."
    )
    max_tokens: int = Field(128, ge=1, description="Maximum new tokens of a hint.")
    temperature: float = Field(
        0.7, ge=0, description="Hint sampling temperature (each round draws a new hint)."
    )


class GsiConfig(Section):
    """GSI: sample, keep the samples whose answer matches the gold answer, resample the questions with fewer
    than min_correct right with guidance, SFT on every kept rationale so far. Uses gold answers, as the paper."""

    sampling: SamplingConfig = Field(
        default_factory=_paper_sampling,
        description="Plain and guided sampling: n per question and round, temperature (the paper: 8, 0.7).",
    )
    min_correct: int = Field(
        4, ge=1, description="A question with fewer right samples than this is resampled with guidance."
    )
    max_resample: int = Field(
        8, ge=0, description="Guided resampling rounds at most (0: plain STaR-style sampling only)."
    )
    guidance: Literal["answer", "rationale", "state_reset", "teacher"] = Field(
        "state_reset",
        description="answer: the gold final answer in the prompt; rationale: the reference solution as a hint; "
        "state_reset: the first part of the gold solution prefilled in the response (state_reset_by); "
        "teacher: a hint the teacher model writes from the reference solution (gsi.teacher). A question "
        "without a worked reference gets the answer hint instead of the last three.",
    )
    state_reset_by: Literal["fraction", "steps"] = Field(
        "fraction",
        description="fraction: round k prefills the first state_reset_fractions[k-1] of the gold solution's "
        "tokens (later rounds the last); steps: round k prefills its first k steps (lines; never all).",
    )
    state_reset_fractions: list[float] = Field(
        default_factory=lambda: [0.2, 0.4, 0.6, 0.8],
        min_length=1,
        description="Shares of the gold solution prefilled, by round (the paper: 20/40/60/80 %).",
    )
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher-help guidance.")

    @model_validator(mode="after")
    def _teacher_needs_a_model(self) -> GsiConfig:
        if self.guidance == "teacher" and not self.teacher.path:
            raise ValueError("gsi.guidance teacher needs gsi.teacher.path (the teacher model)")
        if any(not 0 < f < 1 for f in self.state_reset_fractions):
            raise ValueError("gsi.state_reset_fractions: each share must lie strictly between 0 and 1")
        return self
