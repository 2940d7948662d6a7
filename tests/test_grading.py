"""Extraction and equivalence, table-driven, plus whole-file grading on the real GSM8K and MATH-500 sets."""

from __future__ import annotations

import json
import time

import pytest

from selftrain.grading import extract_answer, grade, grade_rows

from .conftest import cli

# (task, completion, expected extracted answer)
EXTRACT = [
    ("gsm8k", "She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("gsm8k", "#### 1,234", "1234"),
    ("gsm8k", "#### -5", "-5"),
    ("gsm8k", "The answer is 42.", "42"),
    ("gsm8k", "The answer is $42$.", "42"),
    ("gsm8k", "So the total is \\boxed{17}.", "17"),
    ("gsm8k", "3 + 4 = 7 apples, and then 7 * 2 = 14", "14"),
    ("gsm8k", '**Final answer:** "The answer is $1,000$"', "1000"),
    ("gsm8k", "The answer is 5.0", "5"),
    ("gsm8k", "The answer is 12.50 dollars", "12.5"),
    ("gsm8k", "The answer is 25%.", "25"),
    ("gsm8k", "The answer is x = 5.", "5"),
    ("gsm8k", "The answer is 3/4", "0.75"),
    ("gsm8k", "The answer is 7. The answer is 8.", "8"),
    ("gsm8k", "no numbers here at all", None),
    ("gsm8k", "", None),
    ("gsm8k", "It costs $1,250,000 in total.\n#### 1250000", "1250000"),
    ("gsm8k", "#### 18 dollars", "18"),
    ("arithmetic", " 4*5=20 3+20=23 #### 23", "23"),
    ("arithmetic", " 4*5=20 3-20=-17 #### -17", "-17"),
    ("math", "so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("math", "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "( 3, \\frac{\\pi}{2} )"),
    ("math", "nested \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
    ("math", "\\boxed{10\\%}", "10%"),
    ("math", "\\boxed{5 \\text{ cm}}", "5  cm"),
    ("math", "first \\boxed{1} then \\boxed{2}", "2"),
    ("math", "The answer is $\\dfrac{3}{4}$.", "\\dfrac{3}{4}"),
    ("math", "\\boxed{[2, 5)}", "[2, 5)"),
    ("math", "truncated \\boxed{\\frac{1}{", None),
    ("math", "nothing", None),
    ("choice", '**Final answer:** "The answer is [II] which is Paris"', "II"),
    ("choice", "The answer is [IV].", "IV"),
    ("choice", "The answer is (B).", "II"),
    ("choice", "The answer is C", "III"),
    ("choice", "The answer is 3", "III"),
]

# (task, completion, reference, correct)
GRADE = [
    ("gsm8k", "#### 18", "Janet sells 9 eggs.\n#### 18", True),
    ("gsm8k", "#### 19", "#### 18", False),
    ("gsm8k", "The answer is 1,234.", "#### 1234", True),
    ("gsm8k", "The answer is 1234.0", "#### 1,234", True),
    ("gsm8k", "The answer is -3", "#### -3", True),
    ("gsm8k", "The answer is 3", "#### -3", False),
    ("gsm8k", "The answer is $5.", "#### 5", True),
    ("gsm8k", "The answer is 10%", "#### 10", True),
    ("gsm8k", "The answer is 0.5", "#### 1/2", True),
    ("gsm8k", "no answer", "#### 7", False),
    ("gsm8k", "The answer is 7. The answer is 8.", "#### 8", True),
    ("math", "\\boxed{\\frac{1}{2}}", "0.5", True),
    ("math", "\\boxed{1/2}", "\\frac{1}{2}", True),
    ("math", "\\boxed{\\dfrac{1}{2}}", "\\frac12", True),
    ("math", "\\boxed{10\\%}", "10", True),
    ("math", "\\boxed{x = 5}", "5", True),
    ("math", "\\boxed{5 \\text{ cm}}", "5", True),
    ("math", "\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("math", "\\boxed{(2, 5]}", "(2,5]", True),
    ("math", "\\boxed{[2, 5]}", "(2,5]", False),
    ("math", "\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("math", "\\boxed{\\frac{\\pi}{2}}", "\\pi/2", True),
    ("math", "\\boxed{3}", "4", False),
    ("math", "\\boxed{-\\frac{3}{4}}", "-0.75", True),
    ("math", "\\boxed{1,000}", "1000", True),
    ("math", "no box, no answer", "4", False),
    ("choice", "The answer is [II] which is Paris", "II", True),
    ("choice", "The answer is [III]", "II", False),
    ("choice", "The answer is (B)", "B", True),
    ("choice", "The answer is 2", "2", True),  # ARC numeric labels
    ("choice", "The answer is [I]", "1", True),
    ("choice", "I think it is Paris.", "II", True),
]

CHOICES = ["London", "Paris", "Rome", "Berlin"]


@pytest.mark.parametrize(("task", "text", "expected"), EXTRACT)
def test_extract(task, text, expected):
    assert extract_answer(task, text, CHOICES if task == "choice" else None) == expected


@pytest.mark.parametrize(("task", "completion", "reference", "correct"), GRADE)
def test_grade(task, completion, reference, correct):
    choices = CHOICES if task == "choice" else None
    assert grade(task, completion, reference, choices)[1] is correct


def test_enough_cases():
    assert len(EXTRACT) + len(GRADE) >= 60


def test_gsm8k_references_grade_against_themselves(shared_data):
    rows = [json.loads(line) for line in open(shared_data / "gsm8k" / "test.jsonl")]
    assert len(rows) == 1319
    summary, _ = grade_rows("gsm8k", rows, "answer", "answer")
    assert summary["correct"] == 1319
    shifted = [{"c": r["answer"], "r": rows[(i + 1) % len(rows)]["answer"]} for i, r in enumerate(rows)]
    summary, out = grade_rows("gsm8k", shifted, "c", "r")
    # only where the two final numbers happen to coincide
    coincide = sum(
        r["answer"].split("####")[-1].strip().replace(",", "")
        == rows[(i + 1) % len(rows)]["answer"].split("####")[-1].strip().replace(",", "")
        for i, r in enumerate(rows)
    )
    assert summary["correct"] == coincide < 30


def test_math500_solutions_grade_against_answers(shared_data):
    rows = [json.loads(line) for line in open(shared_data / "math500" / "test.jsonl")]
    summary, _ = grade_rows("math", rows, "solution", "answer")
    assert summary["correct"] == 500, summary
    shifted = [{"c": r["solution"], "r": rows[(i + 1) % len(rows)]["answer"]} for i, r in enumerate(rows)]
    summary, _ = grade_rows("math", shifted, "c", "r")
    assert summary["correct"] < 10


def test_malformed_rows_are_counted_not_fatal():
    rows = [
        {"c": "#### 5", "r": "#### 5"},
        {"r": "#### 5"},  # missing completion
        {"c": None, "r": "#### 5"},
        {"c": ["x"], "r": "#### 5"},
        {"c": {"text": "#### 6"}, "r": "#### 6"},
    ]
    summary, out = grade_rows("gsm8k", rows, "c", "r")
    assert summary["n"] == 1 and summary["correct"] == 1
    assert [m["row"] for m in summary["malformed_rows"]] == [2, 3, 4, 5]
    summary, _ = grade_rows("gsm8k", rows[4:], "c.text", "r")  # nested field
    assert summary["correct"] == 1


def test_grade_cli_on_gsm8k(shared_data, tmp_path):
    out = tmp_path / "graded.jsonl"
    start = time.monotonic()
    proc = cli(
        "grade",
        "gsm8k",
        str(shared_data / "gsm8k" / "test.jsonl"),
        "--completion-field",
        "answer",
        "--reference-field",
        "answer",
        "--output",
        str(out),
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["n"] == 1319 and summary["accuracy"] == 1.0
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(graded) == 1319 and all(r["graded_correct"] for r in graded)
    print(f"selftrain grade on 1319 GSM8K rows: {elapsed:.2f}s wall (process start included)")


def test_grade_cli_unknown_task_suggests(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"c": "1", "r": "1"}\n')
    proc = cli("grade", "gsm8", str(f), "--completion-field", "c", "--reference-field", "r")
    assert proc.returncode == 2
    assert "did you mean 'gsm8k'" in proc.stderr
