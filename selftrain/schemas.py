"""Explicit, versioned pyarrow schemas: one per stage (DESIGN.md, "Parquet contracts")."""

from __future__ import annotations

import pyarrow as pa

# 2: eval rows gained decoding / sample_index / finish_reason / judge_score / selected (best-of-K evaluation)
SCHEMA_VERSION = 2

QUESTIONS = pa.schema(
    [
        ("question_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("task", pa.string()),  # grading task (gsm8k, math, choice, arithmetic)
        ("question", pa.string()),
        ("reference", pa.string()),  # nullable; label-free methods never read it to build pairs
        ("choices", pa.list_(pa.string())),  # nullable
        ("meta", pa.string()),  # JSON object
    ]
)

SAMPLES = pa.schema(
    [
        ("question_id", pa.string()),
        ("sample_index", pa.int32()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("num_tokens", pa.int32()),
        ("finish_reason", pa.string()),  # "stop" (end of turn) or "length" (truncated)
        ("cumulative_logprob", pa.float64()),  # nullable (hf engine does not compute it while sampling)
        ("answer", pa.string()),  # extracted, nullable
    ]
)

SCORES = pa.schema(
    [
        ("question_id", pa.string()),
        ("sample_index", pa.int32()),
        ("answer", pa.string()),
        ("answer_confidence", pa.float64()),  # nullable for judges that do not compute it
        ("reasoning_confidence", pa.float64()),
        ("consistency", pa.float64()),
        ("score", pa.float64()),  # null: no score (llm_as_judge: every judgment unparsable) -- missing, not 0
        # llm_as_judge: each judgment's text and its parsed points (null where unparsable), so a person can read
        # why a sample got its score. Added after schema 2 as trailing nullable columns: shards written before
        # lack them and still read (the store fills them with nulls), so no version bump and no stale runs.
        ("judgments", pa.list_(pa.string())),
        ("judgment_scores", pa.list_(pa.float64())),
    ]
)

PAIRS = pa.schema(
    [
        ("question_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
    ]
)

# One row per greedy completion and, with evaluation.best_of K > 1, one row per best-of candidate (K per
# question and model). Accuracy counts the `selected` rows: every greedy row, and the judge's pick among each
# question's candidates.
EVAL = pa.schema(
    [
        ("model", pa.string()),  # "policy" (this iteration's adapter) or "base"
        ("decoding", pa.string()),  # "greedy" or "best_of"
        ("source", pa.string()),
        ("question_id", pa.string()),
        ("sample_index", pa.int32()),  # 0 for greedy; the candidate's index (0..K-1) for best_of
        ("completion", pa.string()),
        ("finish_reason", pa.string()),  # "stop" or "length" (truncated)
        ("answer", pa.string()),
        ("reference", pa.string()),
        ("correct", pa.bool_()),
        ("judge_score", pa.float64()),  # the run's judge's score of a best_of candidate; null for greedy
        ("selected", pa.bool_()),  # counted in the accuracy: greedy rows, and the highest-scored candidate
    ]
)

# STaSC (self-correction). One row per correction: k per initial answer.
CORRECTIONS = pa.schema(
    [
        ("question_id", pa.string()),
        ("sample_index", pa.int32()),  # the initial answer's index in the initial stage
        ("correction_index", pa.int32()),
        ("prompt", pa.string()),  # the correction prompt: question and initial answer
        ("initial", pa.string()),
        ("completion", pa.string()),  # the correction
        ("num_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("initial_answer", pa.string()),  # extracted, nullable
        ("answer", pa.string()),  # extracted from the correction, nullable
    ]
)

# The SFT examples a method keeps (STaSC: the corrections that improved): prompt -> chosen.
SFT_EXAMPLES = pa.schema(
    [
        ("question_id", pa.string()),
        ("sample_index", pa.int32()),
        ("correction_index", pa.int32()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("initial_reward", pa.float64()),
        ("correction_reward", pa.float64()),
    ]
)

# Self-correction evaluation: a greedy initial answer, then a greedy correction of it, per question and model.
CORRECTION_EVAL = pa.schema(
    [
        ("model", pa.string()),  # "policy" or "base"
        ("source", pa.string()),
        ("question_id", pa.string()),
        ("initial", pa.string()),
        ("initial_answer", pa.string()),
        ("initial_correct", pa.bool_()),
        ("completion", pa.string()),  # the correction
        ("answer", pa.string()),
        ("reference", pa.string()),
        ("correct", pa.bool_()),
    ]
)

# GSI (guided self-improvement). One row per sample: round 0 plain, rounds 1.. guided (the question's tail).
GUIDED_SAMPLES = pa.schema(
    [
        ("question_id", pa.string()),
        ("round", pa.int32()),  # 0: plain sampling; k >= 1: the k-th guided resampling round
        ("guidance", pa.string()),  # none | answer | rationale | state_reset | teacher
        ("sample_index", pa.int32()),
        ("prompt", pa.string()),  # what the model saw: hint and prefilled prefix included
        ("train_prompt", pa.string()),  # the plain question prompt a kept rationale is trained on
        ("hint", pa.string()),  # the teacher's hint; nullable
        ("prefix", pa.string()),  # the prefilled gold part (state reset); "" otherwise
        ("completion", pa.string()),  # prefix + what the model wrote: the rationale kept if right
        ("num_tokens", pa.int32()),  # tokens the model wrote
        ("response_tokens", pa.int32()),  # tokens of the whole rationale (prefix included)
        ("finish_reason", pa.string()),
        ("answer", pa.string()),  # extracted, nullable
        ("correct", pa.bool_()),  # against the gold answer
    ]
)

# GSI's kept rationales, every iteration's so far (the SFT data of the `rationale_sft` stage): prompt -> chosen.
RATIONALES = pa.schema(
    [
        ("question_id", pa.string()),
        ("iteration", pa.int32()),  # the iteration whose sampling kept it
        ("round", pa.int32()),
        ("guidance", pa.string()),
        ("prompt", pa.string()),  # the plain question prompt: hints are never trained on
        ("chosen", pa.string()),
        ("response_tokens", pa.int32()),
    ]
)

# Weak-to-strong stage I: the agreed train_2 questions' rationales (the weak model's and the strong model's, each
# trained on with the plain question prompt).
W2S_SFT = pa.schema(
    [
        ("question_id", pa.string()),
        ("source", pa.string()),  # "weak" or "strong": whose rationale
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("answer", pa.string()),  # the final answer both gave
    ]
)

# Weak-to-strong stage II: one preference pair per train_2 question that the pair rule (selftrain.methods.w2s.core.w2s_pair)
# keeps.
W2S_PAIRS = pa.schema(
    [
        ("question_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("rule", pa.string()),  # weak_majority or strong_majority
        ("majority", pa.string()),  # the stage-I model's majority answer
        ("confidence", pa.float64()),  # majority count / samples
    ]
)
