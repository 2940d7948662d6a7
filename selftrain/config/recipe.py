"""`Config`: every section composed into one recipe. Names that pick a registered part (judge, pair builder,
data source) are checked against their registries when a recipe is loaded (selftrain.recipes), so that
this module imports no registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

import selftrain.config.sections as sec
import selftrain.config.training as tr
import selftrain.methods.gsi.config as gs
import selftrain.methods.self_rewarding.config as si
import selftrain.methods.stasc.config as st
import selftrain.methods.w2s.config as w2
from selftrain.config.base import Section
from selftrain.config.placement import PlacementConfig


class Config(Section):
    method: str = Field(
        "core_po",
        description="Registered method (selftrain/methods/): core_po (the default), sc_po, stasc, gsi, w2s, "
        "self_rewarding, self_rewarding_instruct; picks the stages "
        "each iteration runs and sets its own defaults (e.g. sc_po: judge.name self_consistency) where the "
        "recipe sets nothing.",
    )
    run: sec.RunConfig = Field(default_factory=sec.RunConfig)
    model: sec.ModelConfig = Field(default_factory=sec.ModelConfig)
    data: sec.DataConfig = Field(default_factory=sec.DataConfig)
    prompt: sec.PromptConfig = Field(default_factory=sec.PromptConfig)
    sampling: sec.SamplingConfig = Field(default_factory=sec.SamplingConfig)
    judge: sec.JudgeConfig = Field(default_factory=sec.JudgeConfig)
    pairs: sec.PairsConfig = Field(default_factory=sec.PairsConfig)
    training: tr.TrainingConfig = Field(default_factory=tr.TrainingConfig)
    evaluation: tr.EvaluationConfig = Field(default_factory=tr.EvaluationConfig)
    engine: tr.EngineConfig = Field(default_factory=tr.EngineConfig)
    store: tr.StoreConfig = Field(default_factory=tr.StoreConfig)
    sft: tr.SftConfig = Field(default_factory=tr.SftConfig)
    stasc: st.StascConfig = Field(default_factory=st.StascConfig)
    gsi: gs.GsiConfig = Field(default_factory=gs.GsiConfig)
    self_instruct: si.SelfInstructConfig = Field(default_factory=si.SelfInstructConfig)
    placement: PlacementConfig = Field(  # type: ignore[valid-type]
        default_factory=PlacementConfig,
        description="Which Prefect work pool runs each stage (several machines).",
    )
    w2s: w2.W2sConfig = Field(default_factory=w2.W2sConfig)

    @model_validator(mode="after")
    def _loss_needs_pairs(self) -> Config:
        if self.pairs.builder == "chosen_only" and self.training.loss != "sft":
            raise ValueError(
                f"pairs.builder chosen_only has no rejected side; training.loss {self.training.loss} needs pairs "
                "(use loss sft, or builder best_vs_rest / majority_vs_minority)"
            )
        return self

    def run_dir(self) -> Path:
        return Path(self.store.root) / "runs" / self.run.name

    def section(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj
