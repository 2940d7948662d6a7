"""Methods: a method is a DAG of stage kinds (selftrain.spec) run once per iteration, the stage among them whose
adapter is the policy, and the config values it sets unless the recipe does. `method:` in a recipe picks one.

The DAG's edges are the stage kinds' own inputs, so a method lists only its stages; registering it checks that
every input a stage may read is one of them (or the policy) and that the list is in an order where each stage
follows the stages it reads (the order `--no-prefect` runs them in; the Prefect flow starts each stage as soon
as its inputs are complete, so stages that do not read each other run at the same time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selftrain.registry import Registry
from selftrain.spec import POLICY, kind


@dataclass(frozen=True)
class Method:
    name: str
    stages: tuple[str, ...]  # stage kinds, each after the stages of the same iteration it reads
    policy: str  # the stage whose adapter samples the next iteration and is evaluated
    # dotted config keys -> values, applied where the recipe (or --set) leaves the key unset
    defaults: dict[str, Any] = field(default_factory=dict)
    doc: str = ""

    def check(self) -> None:
        """Raise ValueError unless the stages form a DAG in this order, closed under their inputs."""
        if self.policy not in self.stages:
            raise ValueError(f"method {self.name}: its policy stage {self.policy} is not one of its stages")
        for i, stage in enumerate(self.stages):
            for needed in kind(stage).inputs:
                name = self.policy if needed.stage == POLICY else needed.stage
                if name not in self.stages:
                    raise ValueError(
                        f"method {self.name}: {stage} reads {name}, which is not one of its stages"
                    )
                if not needed.previous and name not in self.stages[:i]:
                    raise ValueError(f"method {self.name}: {stage} reads {name}, so it must come after it")


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    method.check()
    return METHODS.register(method.name)(method)


PREFERENCE_STAGES = ("questions", "sample", "score", "pairs", "train", "evaluate")


def preference_method(name: str, judge: str, builder: str, doc: str) -> Method:
    """A method of the preference chain: sample, score with `judge`, build pairs with `builder`, train."""
    defaults = {"judge.name": judge, "pairs.builder": builder}
    return register(Method(name=name, stages=PREFERENCE_STAGES, policy="train", defaults=defaults, doc=doc))


preference_method(
    "core_po",
    "core_po",
    "best_vs_rest",
    "CORE-PO (arXiv 2505.17454): sample, score by the model's confidence in its reasoning and answer, "
    "best-vs-rest pairs, DPO. The default.",
)
preference_method(
    "sc_po",
    "self_consistency",
    "majority_vs_minority",
    "SC-PO, the self-consistency baseline: score = the share of samples with the same answer, "
    "majority-vs-minority pairs, DPO.",
)
