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
# Self-Rewarding, the paper: N=4 candidates at T 0.7 / top-p 0.9, 3 rubric judgments each averaged
# (llm_as_judge), the highest- vs the lowest-scored candidate (ties dropped), DPO with beta 0.1, each iteration
# from the last model
SELF_REWARDING = {
    "sampling.n": 4,
    "sampling.temperature": 0.7,
    "sampling.top_p": 0.9,
    "training.loss": "dpo",
    "training.beta": 0.1,
    "training.init": "previous",
    "training.reference": "previous",  # M(t+1) is DPO-trained from M(t) against M(t)
}
preference_method(
    "self_rewarding",
    "llm_as_judge",
    "best_vs_worst",
    "Self-Rewarding (arXiv 2401.10020): the policy answers, judges its own answers with the paper's "
    "additive 5-point rubric (llm_as_judge), best-vs-worst pairs, DPO; M1 -> M2 -> M3 over iterations.",
    defaults=SELF_REWARDING,
)
preference_method(
    "self_rewarding_instruct",
    "llm_as_judge",
    "best_vs_worst",
    "Self-Rewarding with self-instruction: as self_rewarding, on questions the model writes itself "
    "each iteration from k-shot seed questions (the prompts stage; self_instruct.*).",
    questions="prompts",
    defaults=SELF_REWARDING,
)
register(
    Method(
        name="stasc",
        stages=("questions", "initial", "correct", "filter", "sft", "evaluate_correction"),
        policy="sft",
        evaluation="evaluate_correction",
        # the paper: lr 1e-5, one epoch per iteration
        defaults={"training.learning_rate": 1e-5, "training.epochs": 1.0, "training.max_steps": -1},
        doc="STaSC, self-taught self-correction (arXiv 2503.08681): initial answers, corrections, the "
        "corrections that a gold-based reward says improved, SFT on question -> initial -> correction. Uses "
        "the gold answers to build training data, as the paper does.",
    )
)
register(
    Method(
        name="gsi",
        stages=("questions", "guided_sample", "rationales", "rationale_sft", "evaluate"),
        policy="rationale_sft",
        # the paper: STaR-style, a fresh adapter on the base model each iteration on every rationale so far
        defaults={"sft.train_from": "base"},
        doc="GSI, guided self-improvement (arXiv 2411.00750): sample, keep the samples right by the gold "
        "answer, resample the questions with fewer than gsi.min_correct right with guidance (answer, "
        "rationale, state reset, teacher), SFT from the base model on every kept rationale so far. Uses the "
        "gold answers to build training data, as the paper does.",
        report="selftrain.gsi:report_lines",
    )
)

register(
    Method(
        name="w2s",
        stages=(
            "questions",
            "weak_sft",
            "weak_answers",
            "strong_answers",
            "agree",
            "strong_sft",
            "stage2_sample",
            "w2s_pairs",
            "w2s_dpo",
            "w2s_evaluate",
        ),
        policy="w2s_dpo",
        evaluation="w2s_evaluate",
        # one pass of stage I and stage II, as the paper
        defaults={"run.iterations": 1},
        doc="Weak-to-Strong reasoning (arXiv 2407.13647): a weak model fine-tuned on the labelled train_1 "
        "answers train_2; stage I SFTs the strong model on the questions where the weak and its few-shot "
        "answers agree; stage II DPO on pairs from the stage-I model's majority vote and the weak answers. "
        "Uses the gold solutions of train_1 (for the weak model) only.",
        report="selftrain.w2s:report_lines",
    )
)


def method_of(config: dict[str, Any]) -> Method:
    """The method a run's config (as read from its config.yaml) names; core_po where it names none or one
    this version does not know (reports and tables read old and foreign runs without failing)."""
    name = str(config.get("method") or "core_po")
    return METHODS.get(name) if name in METHODS else METHODS.get("core_po")
