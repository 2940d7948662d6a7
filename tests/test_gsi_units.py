"""GSI's pure parts (selftrain.methods.gsi.core), its config checks and its place among the methods: fast, no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftrain.config import ConfigError
from selftrain.data.sources import load_source
from selftrain.methods.gsi.core import (
    fraction_prefix,
    gold_rationale,
    gold_steps,
    hinted_question,
    pass_bucket,
    round_fraction,
    steps_prefix,
    tail_report,
)
from selftrain.plan import dag, policy_stage, upstream_of
from selftrain.recipes import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _q(qid: str, question: str, reference: str, meta: dict | None = None) -> dict:
    return {
        "question_id": qid,
        "question": question,
        "reference": reference,
        "task": "arithmetic",
        "choices": None,
        "meta": json.dumps(meta or {}),
    }


def test_gold_rationale_from_a_toy_solution_gsm8k_and_math_and_none_from_a_bare_answer():
    toy = load_source(load_config(CONFIGS / "tiny-gsi.yaml").data.train[0], 0)[0]
    assert gold_rationale(toy) == json.loads(toy["meta"])["solution"].split(" ####")[0]
    assert "=" in gold_rationale(toy) and "####" not in gold_rationale(toy)
    gsm = _q("g", "How many?", "He has 3+4=7 apples.\nThen 7*2=14.\n#### 14")
    assert gold_rationale(gsm) == "He has 3+4=7 apples.\nThen 7*2=14."
    math = _q("m", "x?", "5", {"solution": "We get $x=5$, so the answer is $\\boxed{5}$."})
    assert gold_rationale(math).startswith("We get")
    assert gold_rationale(_q("b", "x?", "72")) is None  # nothing to hint with or prefill


def test_state_reset_prefixes_steps_and_token_fractions():
    assert gold_steps("4*2=8 3+8=11") == ["4*2=8", "3+8=11"]
    assert gold_steps("a=1\nb=2\nc=3") == ["a=1", "b=2", "c=3"]
    assert gold_steps("First add. Then multiply.") == ["First add.", "Then multiply."]
    # round k prefills k steps, never all of several: the model writes the last step and the answer
    assert steps_prefix("a=1\nb=2\nc=3", 1) == "a=1\n"
    assert steps_prefix("a=1\nb=2\nc=3", 5) == "a=1\nb=2\n"
    assert steps_prefix("4*2=8 3+8=11", 3) == "4*2=8 "
    chars = (list, "".join)  # a character tokenizer
    assert fraction_prefix("abcdefghij", 0.2, *chars) == "ab"
    assert fraction_prefix("abcdefghij", 0.8, *chars) == "abcdefgh"
    fractions = [0.2, 0.4, 0.6, 0.8]
    assert [round_fraction(fractions, k) for k in (1, 2, 4, 7)] == [0.2, 0.4, 0.8, 0.8]


def test_hints_name_the_answer_or_the_rationale_or_the_teachers_words():
    assert "the final answer is 11" in hinted_question("3+4*2=?", "answer", "11", "4*2=8 3+8=11")
    assert "4*2=8 3+8=11" in hinted_question("3+4*2=?", "rationale", "11", "4*2=8 3+8=11")
    assert "multiply first" in hinted_question("3+4*2=?", "teacher", "11", "", " multiply first\n")
    assert hinted_question("3+4*2=?", "state_reset", "11", "4*2=8") == "3+4*2=?"


def test_tail_report_counts_kept_questions_by_bucket_and_lengths_plain_vs_guided():
    qs = [_q("a", "1+2+3=?", "6", {"operands": 3}), _q("b", "1+2+3+4=?", "0", {"operands": 4})]

    def s(qid, round_, ok, tokens, text):
        return {
            "question_id": qid,
            "round": round_,
            "correct": ok,
            "response_tokens": tokens,
            "completion": text,
        }

    samples = [
        s("a", 0, True, 10, "x"),
        s("a", 0, True, 10, "x"),  # the same rationale twice: one length
        s("a", 0, False, 12, "y"),
        s("a", 0, True, 14, "z"),
        s("b", 0, False, 9, "p"),
        s("b", 0, False, 9, "q"),
        s("b", 0, False, 9, "r"),
        s("b", 0, False, 9, "s"),
        s("b", 1, False, 20, "t"),
        s("b", 2, True, 30, "u"),  # rescued by the second guided round
    ]
    r = tail_report(qs, samples, n_plain=4)
    assert (r["questions"], r["kept_plain"], r["kept"], r["guided_rounds"]) == (2, 0.5, 1.0, 2)
    assert r["by_pass_rate"] == {
        "0": {"questions": 1, "kept_plain": 0.0, "kept": 1.0},
        ">=1/2": {"questions": 1, "kept_plain": 1.0, "kept": 1.0},
    }
    assert set(r["by_operands"]) == {"3", "4"} and r["by_operands"]["4"]["kept_plain"] == 0.0
    assert r["kept_length"]["plain"]["n"] == 2 and r["kept_length"]["plain"]["mean"] == 12
    assert r["kept_length"]["guided"] == {"n": 1, "mean": 30, "p10": 30, "p50": 30, "p90": 30, "max": 30}
    assert [pass_bucket(c, 8) for c in (0, 1, 4, 8)] == ["0", "<1/2", ">=1/2", "all"]


def test_gsi_recipe_dag_and_config_checks():
    cfg = load_config(CONFIGS / "tiny-gsi.yaml")
    assert cfg.method == "gsi" and policy_stage(cfg) == "rationale_sft" and cfg.sft.train_from == "base"
    assert dag(cfg) == {
        "questions": [],
        "guided_sample": ["questions"],
        "rationales": ["questions", "guided_sample"],
        "rationale_sft": ["rationales"],
        "evaluate": ["rationale_sft"],
    }
    # sampling from M(i-1); every rationale so far (the previous rationales); SFT from the base model
    assert upstream_of(cfg, 1, "guided_sample") == [(1, "questions"), (0, "rationale_sft")]
    assert upstream_of(cfg, 1, "rationales") == [(1, "questions"), (1, "guided_sample"), (0, "rationales")]
    assert upstream_of(cfg, 1, "rationale_sft") == [(1, "rationales")]
    assert load_config(None, ["method=gsi"]).sft.train_from == "base"  # the method's default
    with pytest.raises(ConfigError, match="gsi.teacher.path"):
        load_config(None, ["method=gsi", "gsi.guidance=teacher"])
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        load_config(None, ["gsi.state_reset_fractions=[0.2, 1.0]"])
    teacher = load_config(None, ["method=gsi", "gsi.guidance=teacher", "gsi.teacher.path=some/teacher-70b"])
    assert teacher.gsi.teacher.path == "some/teacher-70b"
    paper = load_config(CONFIGS / "llama3-8b-gsi.yaml")
    g = paper.gsi
    assert (paper.run.iterations, g.sampling.n, g.sampling.temperature, g.min_correct, g.max_resample) == (
        4,
        8,
        0.7,
        4,
        8,
    )
    assert (
        g.state_reset_fractions == [0.2, 0.4, 0.6, 0.8] and paper.model.path == "meta-llama/Meta-Llama-3-8B"
    )
