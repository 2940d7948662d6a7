"""The arithmetic_words source: splits held out by fact, sizes, determinism, ids, and grading of plain answers."""

from __future__ import annotations

import json
import re

import pytest

from selftrain.config import Config, SourceConfig
from selftrain.data import arithmetic_words as aw
from selftrain.data.contamination import normalise_question
from selftrain.data.sources import load_source
from selftrain.errors import DataError
from selftrain.grading import grade


def rows(subset: str, split: str, seed: int = 0, **kw) -> list[dict]:
    return load_source(SourceConfig(name="arithmetic_words", subset=subset, split=split, **kw), seed)


def facts(rs: list[dict]) -> set[tuple[str, int, int]]:
    out = set()
    for r in rs:
        meta = json.loads(r["meta"])
        out.add(aw.fact(meta["op"], *meta["operands"]))
    return out


ALL = ",".join(aw.TASKS)


def test_no_fact_is_shared_between_train_and_test_across_all_tasks():
    train, test = rows(ALL, "train", size=3000), rows(ALL, "test", size=3000)
    assert facts(train).isdisjoint(facts(test))
    # the commutative twin and the inverse question rest on the same fact: all are on one side of the split
    pairs = {(json.loads(r["meta"])["op"], *json.loads(r["meta"])["operands"]) for r in test}
    for op, a, b in pairs:
        if op in "+*":
            assert aw.is_held_out(op, b, a)
        if op == "+" and a + b < 100:
            assert aw.is_held_out("-", a + b, a) and aw.is_held_out("-", a + b, b)
        if op == "*" and a * b < 100 and b > 1:
            assert aw.is_held_out("/", a * b, b)
    assert {normalise_question(r["question"]) for r in train}.isdisjoint(
        normalise_question(r["question"]) for r in test
    )


@pytest.mark.parametrize("task", ["add1", "mul1"])
def test_single_digit_tasks_enumerate_every_question_and_hold_out_enough(task):
    train, test = rows(task, "train"), rows(task, "test")
    assert len(test) >= 75
    k = len(aw.ADD)
    assert len(train) + len(test) == 81 * k  # every ordered pair in 1..9 times every phrasing
    held = len(facts(test)) / 45
    assert 0.25 <= held <= 0.3
    assert len({r["question"] for r in test}) == len(test)


def test_mixed_single_digit_test_set_has_150_questions_and_one_split_per_fact_across_tasks():
    assert len(rows("add1,mul1", "test")) >= 150
    # a single-digit addition fact held out of add1 is held out of word1 too ("gives away", "buys more")
    word_train = rows("word1", "train", size=3000)
    add1_test = facts(rows("add1", "test"))
    assert add1_test.isdisjoint(facts(word_train))


@pytest.mark.parametrize("task", ["add2", "mul2", "word1"])
def test_drawn_tasks_give_size_distinct_questions_and_hold_out_about_30_percent(task):
    test = rows(task, "test", size=500)
    assert len(test) == 500 and len({r["question"] for r in test}) == 500
    universe = {aw.fact(*t) for t in aw.operands(task)}
    share = sum(aw.is_held_out(*f) for f in universe) / len(universe)
    assert 0.25 <= share <= 0.32


def test_every_reference_is_the_arithmetic_truth():
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    for split in ("train", "test"):
        for r in rows(ALL, split, size=300):
            meta = json.loads(r["meta"])
            a, b = meta["operands"]
            if meta["op"] == "/":
                assert a % b == 0 and int(r["reference"]) * b == a
            else:
                assert int(r["reference"]) == ops[meta["op"]](a, b)
            assert r["task"] == "numeric" and meta["subset"] in aw.TASKS
            nums = [int(n) for n in re.findall(r"\d+", r["question"])]
            assert a in nums and b in nums  # the operands are in the question as stated
            if meta["subset"] == "word1":
                assert max(a, b, int(r["reference"])) < 100


def test_rows_are_deterministic_and_the_test_set_does_not_depend_on_the_run_seed():
    assert rows("add1,word1", "train", seed=3, size=200) == rows("add1,word1", "train", seed=3, size=200)
    assert rows("add1,mul2", "test", seed=0, limit=40) == rows("add1,mul2", "test", seed=7, limit=40)
    assert rows("add1", "train", seed=0) != rows("add1", "train", seed=1)  # the train order is seeded


def test_mixed_subsets_give_unique_ids_and_the_same_ids_as_each_task_alone():
    mixed = rows("add1,mul1,word1", "test", size=300)
    ids = [r["question_id"] for r in mixed]
    assert len(set(ids)) == len(ids)
    alone = {
        r["question_id"]: r["question"] for t in ("add1", "mul1", "word1") for r in rows(t, "test", size=300)
    }
    assert {r["question_id"]: r["question"] for r in mixed} == alone
    assert rows("add1,add1", "test") == rows("add1", "test")


@pytest.mark.parametrize(
    "subset, split, match",
    [
        ("ad1", "test", r"^source arithmetic_words: unknown subset 'ad1' \(did you mean 'add1'\?\)$"),
        ("add1,mull1", "test", r"unknown subset 'mull1' \(did you mean 'mul1'\?\)"),
        (None, "test", r"needs a subset"),
        (
            "add1",
            "validation",
            r"^source arithmetic_words: unknown split 'validation' \(choose from: test, train\)$",
        ),
        ("add1", "tset", r"unknown split 'tset' \(did you mean 'test'\?\)"),
    ],
)
def test_bad_subset_or_split_is_a_one_line_error(subset, split, match):
    with pytest.raises(DataError, match=match):
        rows(subset, split)


def test_a_recipe_can_name_the_source():
    cfg = Config.model_validate(
        {"data": {"eval": [{"name": "arithmetic_words", "subset": "add1,mul1", "split": "test"}]}}
    )
    assert load_source(cfg.data.eval[0], cfg.run.seed)


# the model's natural-language answers to "What is 7 + 5?" (reference 12)
GRADED = [
    ("7 + 5 = 12", "12", True),
    ("The answer is 12.", "12", True),
    ("7 + 5 = 12. So the answer is 12.", "12", True),
    ("**12**", "12", True),
    ("The sum of 7 and 5 is 12.", "12", True),
    ("12.", "12", True),
    ("$12", "12", True),
    ("The answer is: **12**", "12", True),
    ("7 + 5 = 12\n\nI hope this helps!", "12", True),
    ("Sam has 12 apples now.", "12", True),
    ("7 + 5 = 13", "13", False),
    ("The answer is 13.", "13", False),
    ("7 + 5 = 12. So the answer is 13.", "13", False),  # the marker wins over the last equation
]


@pytest.mark.parametrize("completion, extracted, correct", GRADED)
def test_plain_answers_grade_by_the_marker_else_the_last_number(completion, extracted, correct):
    assert grade("numeric", completion, "12") == (extracted, correct)
