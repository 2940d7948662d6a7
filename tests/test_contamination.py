"""The contamination guard: training questions equal to an evaluation question (normalised) never reach training.

Only the questions stage runs here (no model). This file imports nothing the guard added, so it can be run
against the code before the guard, where test_train_question_equal_to_eval_question_is_dropped fails.
"""

from __future__ import annotations

import json

import pytest

from selftrain.config import Config, SourceConfig
from selftrain.pipeline import execute_stage
from selftrain.store import RunStore, read_stage


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _questions_stage(tmp_path, train: list[dict], eval_: list[dict], **data):
    cfg = Config.model_validate(
        {
            "run": {"name": "guard"},
            "data": {"train": train, "eval": eval_, "questions_per_iteration": 100, "shard_size": 8, **data},
            "store": {"root": str(tmp_path)},
        }
    )
    store = RunStore(cfg.run_dir())
    manifest = execute_stage(cfg, store, 0, "questions")
    return read_stage(store.stage_dir(0, "questions")).to_pylist(), manifest.stats


@pytest.mark.parametrize("mix", ["proportional", "uniform"])
def test_train_question_equal_to_eval_question_is_dropped(tmp_path, mix):
    train = _jsonl(
        tmp_path / "train.jsonl",
        [
            {"q": "  What is 2 + 2?", "a": "4"},  # the eval question up to case, whitespace, end punctuation
            {"q": "What is 3 + 3?", "a": "6"},
            {"q": "What is 2 + 22?", "a": "24"},  # differs inside the text: kept
            {"q": "A train leaves at\n noon.", "a": "12"},
        ],
    )
    evals = _jsonl(
        tmp_path / "eval.jsonl",
        [{"q": "what is   2 + 2", "a": "4"}, {"q": "a TRAIN leaves at noon", "a": "12"}],
    )
    spec = {"name": "file", "question_field": "q", "reference_field": "a"}
    rows, stats = _questions_stage(
        tmp_path,
        [{**spec, "path": train}],
        [{**spec, "path": evals, "split": "test", "limit": 1}],  # the guard ignores the eval limit
        **({"mix": mix} if mix != "proportional" else {}),
    )
    assert sorted(r["question"] for r in rows) == ["What is 2 + 22?", "What is 3 + 3?"]
    assert stats["contamination_dropped"] == 2
    assert stats["contamination_dropped_by_source"] == {"file": 2}


def test_gpqa_trains_on_main_without_the_diamond_questions(tmp_path):
    def gpqa(i):
        return {
            "Question": f"Which particle is number {i}?",
            "Correct Answer": "right",
            "Incorrect Answer 1": "w1",
            "Incorrect Answer 2": "w2",
            "Incorrect Answer 3": "w3",
        }

    main = _jsonl(tmp_path / "main.jsonl", [gpqa(i) for i in range(10)])
    # diamond is a subset of main (its own option order, and here stray whitespace)
    diamond = _jsonl(
        tmp_path / "diamond.jsonl", [{**gpqa(i), "Question": f" {gpqa(i)['Question']}\n"} for i in (2, 7)]
    )
    rows, stats = _questions_stage(
        tmp_path,
        [{"name": "gpqa", "subset": "gpqa_main", "path": main}],
        [{"name": "gpqa", "subset": "gpqa_diamond", "path": diamond}],
    )
    assert len(rows) == 8 and stats["contamination_dropped"] == 2
    assert not {r["question"] for r in rows} & {gpqa(2)["Question"], gpqa(7)["Question"]}


def test_normalisation():
    from selftrain.data.contamination import normalise_question as norm

    assert norm("  What IS\t2+2?\n") == norm("what is 2+2") == "what is 2+2"
    assert norm("«Ｆｏｏ bar.»") == "foo bar"  # NFKC (full-width letters), quotes at the ends
    assert norm("Find $x$.") == "find $x$" and norm("Find $x$") != norm("Find $y$")
    assert norm("Is (a) true?") != norm("Is a true?")  # punctuation inside the text is kept


def test_math_level_reads_the_full_test_split(monkeypatch):
    from selftrain.data import sources

    calls = []

    def fake_hub(repo, subset, split):
        calls.append((repo, subset, split))
        return [
            {
                "problem": f"p{i}",
                "solution": f"\\boxed{{{i}}}",
                "level": f"Level {1 + i % 5}",
                "type": "Algebra",
            }
            for i in range(50)
        ]

    monkeypatch.setattr(sources, "_load_hub", fake_hub)
    rows = sources.load_source(SourceConfig(name="math", split="test", level=5), 0)
    assert calls == [("DigitalLearningGmbH/MATH-lighteval", "default", "test")]
    assert len(rows) == 10 and all(json.loads(r["meta"])["level"] == 5 for r in rows)
    sources.load_source(SourceConfig(name="math500", split="test"), 0)
    assert calls[-1] == ("HuggingFaceH4/MATH-500", None, "test")


def test_eval_limit_does_not_make_the_questions_stage_stale(tmp_path):
    from selftrain.plan import stage_config

    base = {"data": {"eval": [{"name": "gsm8k", "split": "test", "limit": 10}]}}
    more = {"data": {"eval": [{"name": "gsm8k", "split": "test", "limit": 20}]}}
    other = {"data": {"eval": [{"name": "gsm8k", "split": "train", "limit": 10}]}}
    conf = [stage_config(Config.model_validate(c), "questions") for c in (base, more, other)]
    assert conf[0] == conf[1] and conf[0] != conf[2]
