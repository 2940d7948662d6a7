"""Self-Rewarding (arXiv 2401.10020): the rubric prompt, score parsing, the llm_as_judge judge, best_vs_worst
pairs and the judge-quality statistics."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selftrain.config import JudgeConfig
from selftrain.diagnostics import judge_diagnostics, judgment_stats, pair_agreement
from selftrain.engines.base import Completion
from selftrain.judges import Judging, llm_as_judge
from selftrain.methods import METHODS
from selftrain.pairs import PAIR_BUILDERS
from selftrain.prompts import PromptBuilder
from selftrain.rubric import parse_score, render

GOLDEN = Path(__file__).parent / "data" / "self_rewarding_rubric.golden.txt"
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
RESPONSE = "In May she sold 48 / 2 = 24 clips, so 48 + 24 = 72 in all. {braces stay} #### 72"


class _Tok:
    chat_template = None
    bos_token = "<bos>"


def test_paper_rubric_renders_byte_for_byte_as_the_golden_string():
    assert render("paper", QUESTION, RESPONSE).encode() == GOLDEN.read_bytes()


def test_rendering_fills_each_field_once_and_leaves_braces_alone():
    text = render("compact", "say {response} literally", "a {question} b {x}")
    assert "Q: say {response} literally\nR: a {question} b {x}\nJ:" in text


def test_llama3_user_turn_wraps_the_rubric_as_the_only_user_message():
    prompt = PromptBuilder(_Tok(), "core_po_llama3").user_turn("RUBRIC")
    assert "system" not in prompt
    assert prompt.endswith(
        "user<|end_header_id|>\n\nRUBRIC<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize(
    ("judgment", "points"),
    [
        ("The response is correct and well organised. Score: 4", 4.0),  # well-formed
        ("score:5", 5.0),  # case and spacing
        ("Relevant (+1), substantial (+1). **Score: 2**", 2.0),  # markdown emphasis
        ("Score: 3.5", 3.5),
        ("First pass Score: 2 ... on reflection Score: 4", 4.0),  # several: the last one counts
        ("Score: 5 of 5, I mean Score: 1", 1.0),
        ("Score: 7", None),  # out of the rubric's 0-5 range: missing
        ("Score: -1", None),
        ("I would give it four points.", None),  # malformed: no `Score: N`
        ("Score: four", None),
        ("", None),  # empty
    ],
)
def test_parse_score(judgment, points):
    assert parse_score(judgment) == points


class _JudgeEngine:
    """A scripted judge: the judgments for each prompt come from the response shown in it."""

    def __init__(self, by_response: dict[str, list[str]]):
        self.by_response = by_response
        self.specs = []

    def generate(self, prompts, spec):
        self.specs.append(spec)
        out = []
        for p in prompts:
            response = p.split("\nR: ", 1)[1].split("\nJ:", 1)[0]
            out.append([Completion(t, 5, "stop") for t in self.by_response[response][: spec.n]])
        return out


def _sample(i, completion, answer):
    return {"question_id": "q", "sample_index": i, "completion": completion, "answer": answer, "prompt": "P"}


def test_llm_as_judge_averages_parsed_judgments_and_keeps_every_text():
    engine = _JudgeEngine(
        {
            "A": ["ok Score: 4", "Score: 5", "Score: 3"],
            "B": ["Score: 1", "no idea", "Score: 2"],  # one unparsable: the mean of the other two
            "C": ["hmm", "", "Score: 9"],  # none parsable: no score at all, not 0
        }
    )
    cfg = JudgeConfig(name="llm_as_judge", rubric="compact", samples=3)
    samples = {"q": [_sample(0, "A", "1"), _sample(1, "B", "2"), _sample(2, "C", "3")]}
    rows = llm_as_judge(
        Judging(
            cfg, [{"question_id": "q", "question": "Q?"}], samples, engine, PromptBuilder(_Tok(), "plain"), 7
        )
    )
    assert [r["score"] for r in rows] == [4.0, 1.5, None]
    assert rows[1]["judgments"] == ["Score: 1", "no idea", "Score: 2"]
    assert rows[2]["judgment_scores"] == [None, None, None]
    spec = engine.specs[0]
    assert (spec.n, spec.temperature, spec.top_p, spec.seed) == (3, 0.7, 0.9, 7)  # the paper's sampling
    stats = judgment_stats(rows)
    assert stats == {"judgments": 9, "unparsable_rate": round(4 / 9, 6), "unscored_samples": 1}


def _scored(i, score, completion=None):
    return {
        "question_id": "q",
        "sample_index": i,
        "score": score,
        "completion": completion or f"c{i}",
        "prompt": "P",
    }


def test_best_vs_worst_pairs_highest_with_lowest_and_drops_ties():
    build = PAIR_BUILDERS.get("best_vs_worst")
    pairs = build([_scored(0, 3.0), _scored(1, 4.5), _scored(2, 1.0), _scored(3, 4.5)], 0.0)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("c1", "c2")]  # ties broken by sample_index
    assert build([_scored(0, 3.0), _scored(1, 3.0)], 0.0) == []  # all tied: no preference
    assert build([_scored(0, 3.0), _scored(1, 2.5)], 1.0) == []  # under min_margin
    assert build([_scored(0, 3.0)], 0.0) == []


def test_pair_agreement_counts_right_over_wrong_and_ties():
    # right answers score 5 and 3, wrong 3 and 1: pairs (5,3) (5,1) (3,3) (3,1) -> 3 of 3 ordered agree, 1 tie
    agreement, ties, n = pair_agreement([([5.0, 3.0, 3.0, 1.0], [True, True, False, False])])
    assert (agreement, ties, n) == (1.0, 0.25, 4)
    assert pair_agreement([([1.0, 2.0], [True, True])]) == (None, None, 0)
    qs = [{"question_id": "q", "task": "arithmetic", "reference": "7"}]
    rows = [
        {"question_id": "q", "answer": "7", "score": 1.0},
        {"question_id": "q", "answer": "8", "score": 4.0},
        {"question_id": "q", "answer": "9", "score": None},  # unscored: not graded
    ]
    diag = judge_diagnostics(qs, rows)
    assert diag["judge_pair_agreement"] == 0.0 and diag["judge_pairs"] == 1 and diag["graded"] == 2


def test_self_rewarding_method_sets_the_papers_defaults():
    m = METHODS.get("self_rewarding")
    assert m.defaults["judge.name"] == "llm_as_judge" and m.defaults["pairs.builder"] == "best_vs_worst"
    assert (m.defaults["training.beta"], m.defaults["sampling.n"]) == (0.1, 4)


def test_score_shards_written_before_the_judgment_columns_still_read(tmp_path):
    from selftrain.schemas import SCORES
    from selftrain.stages.common import read_shards
    from selftrain.store import ShardInfo

    old = pa.schema([f for f in SCORES if f.name not in ("judgments", "judgment_scores")])
    row = {"question_id": "q", "sample_index": 0, "answer": "1", "consistency": 1.0, "score": 0.5}
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / "a.parquet")
    pq.write_table(
        pa.Table.from_pylist([{**row, "judgments": ["Score: 1"]}], schema=SCORES), tmp_path / "b.parquet"
    )
    shards = [ShardInfo(name=n, rows=1, sha256="") for n in ("a.parquet", "b.parquet")]
    t = read_shards(tmp_path, shards, SCORES)
    assert t.column("judgments").to_pylist() == [None, ["Score: 1"]]


def test_llm_as_judge_on_the_real_tiny_model_gives_missing_not_zero(tiny_model):
    """The session's tiny model was never taught the rubric: its judgments do not parse, so every sample is
    unscored (None), and the pairs stage will drop them rather than pair on zeros."""
    from selftrain.engines.hf import HFEngine
    from selftrain.recipes import load_config

    cfg = load_config(
        None,
        [
            f"model.path={tiny_model}",
            "prompt.template=plain",
            "judge.name=llm_as_judge",
            "judge.rubric=compact",
            "judge.samples=2",
            "judge.max_tokens=12",
        ],
    )
    engine = HFEngine(cfg)
    samples = {"q": [_sample(0, "1+2 = 3 #### 3", "3"), _sample(1, "#### 4", "4")]}
    builder = PromptBuilder(engine.tokenizer, "plain")
    rows = llm_as_judge(
        Judging(cfg.judge, [{"question_id": "q", "question": "1+2"}], samples, engine, builder)
    )
    assert all(len(r["judgments"]) == 2 for r in rows)
    assert all((r["score"] is None) == all(p is None for p in r["judgment_scores"]) for r in rows)


def test_llm_judge_settings_count_in_the_fingerprint_only_for_that_judge():
    from selftrain.plan import stage_config
    from selftrain.recipes import load_config

    core = [stage_config(load_config(None, s), "score") for s in ([], ["judge.samples=5"])]
    assert core[0] == core[1] and "judge.samples" not in core[0]  # core_po runs' fingerprints unchanged
    sr = [
        stage_config(load_config(None, ["method=self_rewarding", *s]), "score")
        for s in ([], ["judge.samples=5"])
    ]
    assert sr[0]["judge.samples"] == 3 and sr[1]["judge.samples"] == 5


def test_self_instruct_filters_drop_and_count_evaluation_questions_and_copies():
    from selftrain.config import SelfInstructConfig
    from selftrain.data.contamination import normalise_question
    from selftrain.methods.self_rewarding.self_instruct import filter_questions, read_question, rouge_l

    cfg = SelfInstructConfig(min_words=2, max_words=12)
    seeds = ["What is 2 + 3?", "How many legs does a spider have?"]
    evals = ["What is the capital of France?"]
    shots = seeds
    candidates = [
        ("  what is the CAPITAL of france ", shots),  # an evaluation question, normalised: dropped, counted
        ("What is 2 + 3?", shots),  # a seed
        ("How many legs does a spider have today?", shots),  # ROUGE-L 0.93 with a shot
        ("Name three prime numbers above fifty.", shots),  # kept
        ("name three prime numbers above fifty", shots),  # repeats the kept one
        ("Draw a picture of a cat.", shots),  # blocked word
        ("Why?", shots),  # too short
        ("Which ocean is the largest on Earth?", shots),  # kept
        ("", shots),
    ]
    out = filter_questions(
        candidates, {normalise_question(s) for s in seeds}, {normalise_question(e) for e in evals}, cfg, 10
    )
    assert out.kept == [3, 7]
    assert out.dropped == {
        "evaluation_question": 1,
        "seed_question": 1,
        "similar": 1,
        "duplicate": 1,
        "blocked_word": 1,
        "length": 1,
        "empty": 1,
    }
    assert filter_questions(candidates, set(), set(), cfg, 1).kept == [0]  # capped at the limit
    assert rouge_l("a b c d", "a b c d") == 1.0 and rouge_l("a b", "c d") == 0.0

    chat, plain = PromptBuilder(_Tok(), "core_po"), PromptBuilder(_Tok(), "plain")
    assert read_question(chat, "<task>Sum 2 and 2.</task>\n<task>x</task>") == "Sum 2 and 2."
    assert read_question(chat, "Sum 2 and 2.</task>") == "Sum 2 and 2."
    assert read_question(chat, "no closing tag") == ""
    assert read_question(plain, " 3+4=?\nA: 7") == "3+4=?"
