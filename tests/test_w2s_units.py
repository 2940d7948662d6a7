"""Weak-to-Strong's pure parts: the agreement filter, the majority vote and every branch of the pair rule."""

from __future__ import annotations

import pytest

from selftrain.config import W2sConfig
from selftrain.methods.w2s.core import agree, gold_solution, majority, split, w2s_pair


def s(answer: str | None, text: str = "") -> dict:
    return {"answer": answer, "completion": text or f"says {answer}"}


def test_agree_needs_the_same_nonempty_final_answer():
    assert agree(s("8"), s(" 8 "))
    assert not agree(s("8"), s("9"))
    assert not agree(s(None), s(None))  # both empty is no agreement
    assert not agree(s(""), s(""))


def test_majority_counts_over_all_samples_and_ignores_empty_answers():
    assert majority([s("1"), s("1"), s(None), s("2")]) == ("1", 0.5)
    assert majority([s(None), s(None)]) == ("", 0.0)
    assert majority([s("2"), s("1"), s("1"), s("2")])[0] == "2"  # a tie goes to the first seen


def ten(**counts: int) -> list[dict]:
    out = [s(a, f"{a}#{k}") for a, c in counts.items() for k in range(c)]
    return out + [s(None, f"none#{k}") for k in range(10 - len(out))]


def test_pair_rule_weak_answer_is_the_majority():
    d = w2s_pair(s("a", "weak"), ten(a=7, b=3), 0.6, 0.8)
    assert d["rule"] == "weak_majority" and d["confidence"] == 0.7
    assert d["chosen"] == "weak" and d["rejected"] == "b#0"


def test_pair_rule_rejected_may_be_a_sample_without_an_answer():
    d = w2s_pair(s("a", "weak"), ten(a=9), 0.6, 0.8)
    assert d["rule"] == "weak_majority" and d["rejected"] == "none#0"


def test_pair_rule_no_rejected_when_every_sample_is_in_the_majority():
    d = w2s_pair(s("a", "weak"), ten(a=10), 0.6, 0.8)
    assert d["rule"] == "no_rejected" and d["chosen"] is None and d["rejected"] is None


def test_pair_rule_confident_strong_majority_beats_the_weak_answer():
    d = w2s_pair(s("b", "weak"), ten(a=8, b=2), 0.6, 0.8)
    assert d["rule"] == "strong_majority" and d["chosen"] == "a#0" and d["rejected"] == "weak"
    # an empty weak answer is never the majority
    assert w2s_pair(s(None, "weak"), ten(a=8), 0.6, 0.8)["rule"] == "strong_majority"


def test_pair_rule_unsure_between_the_two_thresholds():
    d = w2s_pair(s("b", "weak"), ten(a=7, b=3), 0.6, 0.8)
    assert d["rule"] == "unsure" and d["chosen"] is None


def test_pair_rule_skips_low_confidence_even_when_the_weak_answer_is_the_majority():
    assert w2s_pair(s("a"), ten(a=5, b=4), 0.6, 0.8)["rule"] == "low_confidence"
    assert w2s_pair(s("a"), ten(), 0.6, 0.8)["rule"] == "low_confidence"  # no sample has an answer
    assert w2s_pair(s("a"), ten(a=6, b=4), 0.6, 0.8)["rule"] == "weak_majority"  # 0.6 is not below 0.6


def test_split_and_gold_solution():
    qs = [{"question_id": str(i)} for i in range(5)]
    one, two = split(qs, 2)
    assert [q["question_id"] for q in one] == ["0", "1"] and len(two) == 3
    assert gold_solution({"meta": '{"solution": "2*3=6 #### 6"}', "reference": "6"}) == "2*3=6 #### 6"
    assert gold_solution({"meta": None, "reference": "x #### 7"}) == "x #### 7"


def test_config_thresholds_must_be_ordered():
    assert W2sConfig().stage2.sampling.n == 10 and W2sConfig().stage2.sampling.temperature == 1.0
    with pytest.raises(ValueError, match="strong_confidence"):
        W2sConfig(stage2={"min_confidence": 0.9, "strong_confidence": 0.8})


def test_recipes_and_the_method_dag():
    from pathlib import Path

    from selftrain.plan import policy_stage
    from selftrain.recipes import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    tiny = load_config(configs / "tiny-w2s.yaml")
    assert tiny.method == "w2s" and policy_stage(tiny) == "w2s_dpo" and tiny.run.iterations == 1
    assert tiny.w2s.train_1_size < tiny.data.questions_per_iteration  # leaves a train_2
    paper = load_config(configs / "llama2-w2s.yaml")
    assert (paper.model.path, paper.w2s.weak.path) == (
        "meta-llama/Llama-2-70b-hf",
        "meta-llama/Llama-2-7b-hf",
    )
    assert paper.w2s.train_1_size == 7000 and paper.data.questions_per_iteration == 14000
    s2 = paper.w2s.stage2
    assert (s2.sampling.n, s2.sampling.temperature, s2.min_confidence, s2.strong_confidence) == (
        10,
        1.0,
        0.6,
        0.8,
    )
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(
        paper.training.lora.target_modules
    )
