"""GSI, guided self-improvement (arXiv 2411.00750): guided_sample.py -> rationales.py -> the core sft stage
(as rationale_sft) -> the core evaluate stage; core.py: the guidance prompts and the report lines; config.py:
gsi.*."""

from selftrain.methods.base import Method, register

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
        report="selftrain.methods.gsi.core:report_lines",
    )
)
