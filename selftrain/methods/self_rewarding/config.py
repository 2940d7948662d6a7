"""Config of the prompts stage: self-instruction as in Self-Rewarding (arXiv 2401.10020, section 2.3), which
writes new prompts with 8-shot prompting from seed prompts, following Self-Instruct (Wang et al. 2023)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from selftrain.config.base import Section


class SelfInstructConfig(Section):
    """The prompts stage (method self_rewarding_instruct): k-shot generations, each giving at most one new
    question; the seed pool is data.train (after the contamination guard)."""

    candidates: int = Field(
        128,
        ge=1,
        description="k-shot generations per iteration; the kept questions are capped at "
        "data.questions_per_iteration.",
    )
    shots: int = Field(8, ge=1, description="Seed questions shown in each generation prompt (the paper: 8).")
    generator: Literal["base", "policy"] = Field(
        "base",
        description="The model that writes the questions: the base model every iteration (the paper keeps its "
        "prompt generator fixed) or the newest policy M(i-1).",
    )
    temperature: float = Field(0.6, ge=0, description="Sampling temperature of the generations.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus top-p of the generations.")
    max_tokens: int = Field(128, ge=1, description="Tokens per generation.")
    min_words: int = Field(3, ge=1, description="Drop shorter questions (Self-Instruct: 3 words).")
    max_words: int = Field(150, ge=1, description="Drop longer questions (Self-Instruct: 150 words).")
    max_rouge_l: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Drop a question whose ROUGE-L F1 with one of its k shots or an earlier kept question "
        "reaches this (Self-Instruct: 0.7). Exact copies of any seed are dropped whatever this is.",
    )
    blocked_words: tuple[str, ...] = Field(
        (
            "image",
            "images",
            "graph",
            "graphs",
            "picture",
            "pictures",
            "file",
            "files",
            "map",
            "maps",
            "draw",
            "plot",
            "go to",
            "video",
            "audio",
            "music",
            "flowchart",
            "diagram",
        ),
        description="Drop a question containing one of these (Self-Instruct: tasks a text model cannot do).",
    )
