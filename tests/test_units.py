"""Glue around the model: judges, pair builders, prompts, dataset sources. The judge test uses a stub engine
(a unit test of the glue only; the real engines run in test_e2e)."""

from __future__ import annotations

import json

import pytest

from selftrain.config import JudgeConfig, SourceConfig
from selftrain.data.sources import load_source
from selftrain.errors import DataError
from selftrain.judges import Judging, consistency, core_po
from selftrain.pairs import best_vs_rest, majority_vs_minority
from selftrain.prompts import PromptBuilder


class _Tok:
    chat_template = None
    bos_token = "<bos>"


class _StubEngine:
    """P(A) = 0.9 when the selected reasoning says 'ok' or the selected answer is 3, else 0.2."""

    def __init__(self):
        self.calls = 0

    def option_probs(self, prompts, options):
        self.calls += 1
        selected = [next(line[3:] for line in p.splitlines() if line.startswith("S: ")) for p in prompts]
        return [[0.9, 0.1] if "ok" in s or s == "3" else [0.2, 0.8] for s in selected]


def _sample(i, completion, answer, finish="stop"):
    return {
        "question_id": "q",
        "sample_index": i,
        "completion": completion,
        "answer": answer,
        "finish_reason": finish,
        "prompt": "P",
    }


def test_core_po_scores_product_and_zero_for_bad_samples():
    builder = PromptBuilder(_Tok(), "plain")
    group = [
        _sample(0, " ok step #### 3", "3"),
        _sample(1, " bad step #### 4", "4"),
        _sample(2, " no answer marker", None),
        _sample(3, " ok but cut #### 3", "3", finish="length"),
    ]
    engine = _StubEngine()
    rows = core_po(
        Judging(JudgeConfig(), [{"question_id": "q", "question": "1+2=?"}], {"q": group}, engine, builder)
    )
    assert engine.calls == 1  # all judge prompts of a shard in one batched call
    by = {r["sample_index"]: r for r in rows}
    assert by[0]["score"] == pytest.approx(0.9 * 0.9)
    assert by[1]["score"] == pytest.approx(0.2 * 0.2)
    assert by[2]["score"] == 0.0 and by[3]["score"] == 0.0  # unparsable, truncated
    assert by[0]["consistency"] == pytest.approx(0.5)


def test_consistency_fraction():
    assert consistency([{"answer": "1"}, {"answer": "1"}, {"answer": "2"}, {"answer": None}]) == [
        0.5,
        0.5,
        0.25,
        0.0,
    ]


def test_consistency_among_finished_samples_only():
    """judge.votes: finished: a truncated sample's stray number neither votes nor counts in the share, and
    judge.min_votes keeps a lone finished sample from scoring 1.0."""
    from selftrain.config import JudgeConfig
    from selftrain.judges import JUDGES, Judging

    def s(i, answer, finish="stop"):
        return {"question_id": "q", "sample_index": i, "answer": answer, "finish_reason": finish}

    group = [s(0, "7"), s(1, "7"), s(2, "9"), s(3, "12", "length"), s(4, "12", "length"), s(5, None)]
    assert consistency(group) == pytest.approx([2 / 6, 2 / 6, 1 / 6, 2 / 6, 2 / 6, 0.0])  # SC-PO: all vote
    assert consistency(group, finished_only=True) == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0.0, 0.0, 0.0])
    assert consistency(group, finished_only=True, min_votes=2) == pytest.approx([2 / 3, 2 / 3, 0, 0, 0, 0])
    lone = [s(0, "7"), s(1, "3", "length"), s(2, "4", "length")]
    assert consistency(lone, finished_only=True, min_votes=2) == [0.0, 0.0, 0.0]
    # the judge reads both settings from its config
    sc = JUDGES.get("self_consistency")
    q = [{"question_id": "q", "question": "?"}]
    rows = sc(Judging(JudgeConfig(name="self_consistency", votes="finished", min_votes=2), q, {"q": group}))
    assert [r["score"] for r in rows] == pytest.approx([2 / 3, 2 / 3, 0, 0, 0, 0])


def _scored(i, score, answer="1", text=None):
    return {
        "question_id": "q",
        "sample_index": i,
        "prompt": "P",
        "completion": text or f"c{i}",
        "score": score,
        "answer": answer,
    }


def test_best_vs_rest_deterministic_ties_and_margin():
    group = [_scored(0, 0.5), _scored(1, 0.9), _scored(2, 0.9), _scored(3, 0.1)]
    pairs = best_vs_rest(group, 0.0)
    assert {p["chosen"] for p in pairs} == {"c1"}  # tie at 0.9 -> lower sample_index
    assert [p["rejected"] for p in pairs] == ["c0", "c3"]  # the equal-score sample is no pair
    assert [p["rejected"] for p in best_vs_rest(group, 0.5)] == ["c3"]


def test_majority_vs_minority():
    group = [_scored(0, 0.5, "7"), _scored(1, 0.75, "7"), _scored(2, 0.25, "8"), _scored(3, 0.0, None)]
    pairs = majority_vs_minority(group, 0.0)
    assert {p["chosen"] for p in pairs} == {"c1"}
    assert [p["rejected"] for p in pairs] == ["c2", "c3"]


def test_core_po_prompt_parse_roundtrip():
    """The original's parsing: reasoning up to the first final-answer marker, answer up to the next one or
    `<|eot_id|>`, nothing stripped; a missing marker makes the sample unparsable."""
    b = PromptBuilder(_Tok(), "core_po")
    text = '**Understanding the question:** add\n**Reasoning:** 1+2=3\n**Final answer:** "The answer is $3$"'
    parsed = b.parse(text)
    assert parsed.reasoning == " add 1+2=3\n"
    assert parsed.answer == ' "The answer is $3$"'
    assert b.parse(text + "<|eot_id|>junk").answer == ' "The answer is $3$"'
    assert not b.parse("just 3").ok
    assert not b.parse("**Understanding the question:** no final marker").ok
    q = b.question("Capital?", ["London", "Paris", "Rome"])
    assert "Capital? Choices:\n[I]: London\n[II]: Paris\n[III]: Rome\n" in q
    assert "DO NOT RETURN TWO OR MORE ANSWERS" in q
    assert b.reasoning_judge("Q", "R", ["o1"]).endswith("The **selected reasoning** is: ")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sources_local_files_and_errors(tmp_path, shared_data):
    rows = load_source(
        SourceConfig(name="gsm8k", split="test", path=str(shared_data / "gsm8k/test.jsonl"), limit=5), 0
    )
    assert len(rows) == 5 and rows[0]["task"] == "gsm8k"
    math = load_source(
        SourceConfig(name="math", split="test", path=str(shared_data / "math500/test.jsonl"), level=5), 0
    )
    assert math and all(json.loads(r["meta"])["level"] == 5 for r in math)
    with pytest.raises(DataError, match="no column 'question'"):
        load_source(
            SourceConfig(name="gsm8k", path=_jsonl(tmp_path / "a.jsonl", [{"q": "x", "answer": "1"}])), 0
        )
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="has no rows"):
        load_source(SourceConfig(name="gsm8k", path=str(tmp_path / "empty.jsonl")), 0)


def test_arc_and_gpqa_loaders(tmp_path):
    arc = _jsonl(
        tmp_path / "arc.jsonl",
        [
            {
                "question": "Q1",
                "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]},
                "answerKey": "2",
            },
            {
                "question": "Q2",
                "choices": {"text": ["a", "b", "c", "d", "e"], "label": list("ABCDE")},
                "answerKey": "E",
            },
        ],
    )
    rows = sorted(
        load_source(SourceConfig(name="arc_challenge", split="test", path=arc), 0),
        key=lambda r: r["question"],
    )
    assert [r["reference"] for r in rows] == ["II", "V"]
    gp = _jsonl(
        tmp_path / "gpqa.jsonl",
        [
            {
                "Question": f"Q{i}",
                "Correct Answer": "right",
                "Incorrect Answer 1": "w1",
                "Incorrect Answer 2": "w2",
                "Incorrect Answer 3": "w3",
            }
            for i in range(8)
        ],
    )
    g1 = load_source(SourceConfig(name="gpqa", path=gp), 0)
    g2 = load_source(SourceConfig(name="gpqa", path=gp), 0)
    assert g1 == g2  # fixed seed
    from selftrain.grading.normalize import label_to_index

    for r in g1:
        assert r["choices"][label_to_index(r["reference"])] == "right"
    assert len({r["reference"] for r in g1}) > 1  # really shuffled


def test_synthetic_test_split_is_held_out():
    train = {r["question"] for r in load_source(SourceConfig(name="synthetic_arithmetic", size=3000), 0)}
    test = {
        r["question"]
        for r in load_source(SourceConfig(name="synthetic_arithmetic", split="test", limit=200), 0)
    }
    assert not train & test


def test_auroc_ranks_ties_and_degenerate_cases():
    from selftrain.diagnostics import auroc

    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5  # ties count one half
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == 0.875
    assert auroc([0.3, 0.4], [True, True]) is None


def test_judge_diagnostics_grade_against_references_only_where_present():
    from selftrain.diagnostics import judge_diagnostics

    questions = [
        {"question_id": "a", "task": "gsm8k", "reference": "so #### 72", "choices": None},
        {"question_id": "b", "task": "gsm8k", "reference": None, "choices": None},
    ]
    scored = [
        {"question_id": "a", "answer": "72", "score": 0.9},
        {"question_id": "a", "answer": "71", "score": 0.4},
        {"question_id": "a", "answer": None, "score": 0.6},
        {"question_id": "b", "answer": "5", "score": 0.1},  # no reference: not graded
    ]
    d = judge_diagnostics(questions, scored)
    assert d == {
        "graded": 3,
        "sample_accuracy": round(1 / 3, 6),
        "judge_auroc": 1.0,
        "judge_auroc_within": 1.0,
        # right (0.9) over each wrong (0.4, 0.6): 2 pairs, both ordered right
        "judge_pair_agreement": 1.0,
        "judge_pair_ties": 0.0,
        "judge_pairs": 2,
    }
    assert judge_diagnostics(questions[1:], scored) == {}


def test_cached_tiny_model_from_other_bootstrap_settings_is_refused(tmp_path):
    from selftrain.config import BootstrapConfig, ConfigError
    from selftrain.tiny import ensure_model

    built = BootstrapConfig(steps=2, batch_size=4, hidden_size=32, num_layers=1, num_heads=2)
    ensure_model(str(tmp_path / "m"), built)
    mtime = (tmp_path / "m" / "model.safetensors").stat().st_mtime_ns
    ensure_model(str(tmp_path / "m"), built)  # same settings: reused
    with pytest.raises(ConfigError, match=r"steps 3 vs 2.*move that folder away"):
        ensure_model(str(tmp_path / "m"), built.model_copy(update={"steps": 3}))
    assert (tmp_path / "m" / "model.safetensors").stat().st_mtime_ns == mtime  # never rebuilt in place
