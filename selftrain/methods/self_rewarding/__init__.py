"""Self-Rewarding (arXiv 2401.10020): the preference chain judged by the policy itself with the paper's rubric
(llm_as_judge); self_rewarding_instruct adds the `prompts` stage (prompts.py: questions the model writes itself,
self_instruct.py: the k-shot prompt, dedup and filters; config.py: self_instruct.*)."""

from selftrain.methods.base import preference_method

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
