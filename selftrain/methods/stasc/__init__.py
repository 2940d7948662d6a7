"""STaSC, self-taught self-correction (arXiv 2503.08681): initial.py -> correct.py -> filter.py -> the core
sft stage -> evaluate_correction.py; core.py: the prompts and the gold-based reward; config.py: stasc.*."""

from selftrain.methods.base import Method, register

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
