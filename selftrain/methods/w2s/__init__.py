"""Weak-to-Strong reasoning (arXiv 2407.13647): weak_sft.py -> answers.py (weak_answers, strong_answers) ->
agree.py -> the core sft stage (as strong_sft) -> stage2_sample.py -> pairs.py -> dpo.py -> evaluate.py; core.py:
the train_1/train_2 split, the pair rule and the report lines; config.py: w2s.*."""

from selftrain.methods.base import Method, register

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
        report="selftrain.methods.w2s.core:report_lines",
    )
)
