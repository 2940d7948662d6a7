"""Contamination guard: a training question whose normalised text equals an evaluation question is dropped.

Normalisation (`normalise_question`): Unicode NFKC, casefold, every run of whitespace collapsed to one space,
then whitespace and punctuation (Unicode category P*) stripped at both ends. So "What is 2+2?" and
"  what   IS 2+2" are the same question; anything inside the text (digits, LaTeX, `$`) must match exactly.
Only the question text is compared, not the options of a multiple-choice question: GPQA's diamond questions
reappear in gpqa_main with their options shuffled differently, and must still be caught.

The guard compares against every row of each evaluation source, before its `limit`: raising an eval limit
later must not reveal questions an earlier iteration trained on.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING

from selftrain.data.sources import Row, load_source

if TYPE_CHECKING:
    from selftrain.config import Config

log = logging.getLogger(__name__)


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def normalise_question(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end]


def eval_question_keys(cfg: Config) -> set[str]:
    """Normalised text of every question of every evaluation source of the run (limits ignored)."""
    keys: set[str] = set()
    for spec in cfg.data.eval:
        for row in load_source(spec.model_copy(update={"limit": None}), cfg.run.seed):
            keys.add(normalise_question(row["question"]))
    return keys


def drop_contaminated(sources: list[list[Row]], keys: set[str]) -> tuple[list[list[Row]], Counter]:
    """Each source without its questions found in `keys`, and how many were dropped per source name."""
    kept: list[list[Row]] = []
    dropped: Counter = Counter()
    for rows in sources:
        clean = []
        for row in rows:
            if normalise_question(row["question"]) in keys:
                dropped[row["source"]] += 1
            else:
                clean.append(row)
        kept.append(clean)
    total = sum(dropped.values())
    if total:
        log.warning(
            "contamination guard: dropped %d training question(s) equal to an evaluation question (%s)",
            total,
            ", ".join(f"{src}: {n}" for src, n in sorted(dropped.items())),
        )
    else:
        log.info("contamination guard: no training question equals an evaluation question")
    return kept, dropped
