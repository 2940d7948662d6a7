"""The method contract: a method is a DAG of stage kinds (selftrain.spec) run once per iteration, the stage among them whose
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
from selftrain.spec import POLICY, QUESTIONS, kind


@dataclass(frozen=True)
class Method:
    name: str
    stages: tuple[str, ...]  # stage kinds, each after the stages of the same iteration it reads
    policy: str  # the stage whose adapter samples the next iteration and is evaluated
    evaluation: str = "evaluate"  # the stage whose manifest holds the accuracy metrics
    questions: str = "questions"  # the stage whose rows are the iteration's questions (spec.QUESTIONS)
    # dotted config keys -> values, applied where the recipe (or --set) leaves the key unset
    defaults: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    # "module:function" taking the RunStore and returning the method's own report lines, printed by `selftrain
    # run` and `status` under the accuracy table (a dotted name: this module imports no stage code)
    report: str = ""

    def check(self) -> None:
        """Raise ValueError unless the stages form a DAG in this order, closed under their inputs."""
        for role, stage in (
            ("policy", self.policy),
            ("evaluation", self.evaluation),
            ("questions", self.questions),
        ):
            if stage not in self.stages:
                raise ValueError(f"method {self.name}: its {role} stage {stage} is not one of its stages")
        for i, stage in enumerate(self.stages):
            for needed in kind(stage).inputs:
                name = {POLICY: self.policy, QUESTIONS: self.questions}.get(needed.stage, needed.stage)
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


def preference_method(
    name: str, judge: str, builder: str, doc: str, questions: str = "questions", defaults: dict | None = None
) -> Method:
    """A method of the preference chain: sample, score with `judge`, build pairs with `builder`, train, on the
    rows of the stage `questions`; `defaults`: its other config defaults."""
    return register(
        Method(
            name=name,
            stages=(questions, *PREFERENCE_STAGES[1:]),
            policy="train",
            questions=questions,
            defaults={"judge.name": judge, "pairs.builder": builder, **(defaults or {})},
            doc=doc,
        )
    )


def method_of(config: dict[str, Any]) -> Method:
    """The method a run's config (as read from its config.yaml) names; core_po where it names none or one
    this version does not know (reports and tables read old and foreign runs without failing)."""
    name = str(config.get("method") or "core_po")
    return METHODS.get(name) if name in METHODS else METHODS.get("core_po")
