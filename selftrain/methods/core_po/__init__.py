"""CORE-PO and its self-consistency baseline SC-PO: the preference chain (questions -> sample -> score ->
pairs -> train -> evaluate), which is all core stages (selftrain.stages); the two differ only in the judge
(core_po: the model's P(True) on its reasoning and its answer; self_consistency: the share of samples with the
same answer, both in selftrain.judges) and the pair rule (selftrain.pairs)."""

from selftrain.methods.base import preference_method

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
