"""The SmolLM2 study page's paired comparisons (bench/smollm2_page.py): arm minus arm on the same questions."""

from __future__ import annotations

import random

from bench.smollm2_page import paired_lines


def _cell(arm: str, correct: str, ids: str = "abc", seed: int = 1, tag: str = "") -> dict:
    gain = {"gain": 0.0, "correct": correct, "ids": ids}
    return {
        "arm": arm,
        "tag": tag,
        "seed": seed,
        "iterations": 1,
        "evaluation": {"single_digit": {"0": gain}},
    }


def test_paired_difference_is_per_question_and_needs_the_same_questions():
    results = {
        "sc": _cell("sc_sft", "1110"),
        "random": _cell("random_sft", "1000"),
        "oracle": _cell("oracle_sft", "1111", ids="other"),  # another question set: not compared
        "random-s2": _cell("random_sft", "0000", seed=2),  # no sc_sft cell of seed 2
    }
    rows = [line for line in paired_lines(results, random.Random(0)) if line.startswith("| sc_sft")]
    assert len(rows) == 1
    assert "| 1 | single_digit | +0.500 [" in rows[0] and rows[0].endswith("| 4 |")
    assert not [line for line in paired_lines(results, random.Random(0)) if line.startswith("| oracle")]


def test_paired_section_says_when_there_is_nothing_to_compare():
    lines = paired_lines({"sc": _cell("sc_sft", "1")}, random.Random(0))
    assert any("no seed has both cells" in line for line in lines)
