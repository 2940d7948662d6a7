"""Self-instruction (Self-Rewarding, arXiv 2401.10020 section 2.3, after Self-Instruct, Wang et al. 2023): the
k-shot prompt that asks the model for a new question, reading the question out of a generation, and the
filters a generated question must pass. The prompts stage (selftrain.methods.self_rewarding.prompts) runs them.

The generation prompt is this project's, in Self-Instruct's style (the paper does not print its own): for chat
models a list of `<task>` items to continue; for the tiny model's `plain` template the `Q:` lines it was
pre-trained on, continued by one more `Q:`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from selftrain.data.contamination import normalise_question

if TYPE_CHECKING:
    from selftrain.config import SelfInstructConfig
    from selftrain.prompts import PromptBuilder

INSTRUCTION = (
    "Come up with a new task or question in the style of the examples below. Write only the task or question, "
    "between <task> and </task>, with no answer, explanation or other text.\n\n"
)


def k_shot_prompt(builder: PromptBuilder, shots: list[str]) -> str:
    if builder.template == "plain":
        return builder.user_turn("".join(f"Q: {s}\n" for s in shots) + "Q:")
    return builder.user_turn(INSTRUCTION + "".join(f"<task>{s}</task>\n" for s in shots))


def read_question(builder: PromptBuilder, generation: str) -> str:
    """The new question in a generation: its first line (plain), or its first <task> item (chat; the opening
    tag may be left out, the answer starting inside the item). Empty when there is none."""
    if builder.template == "plain":
        return generation.split("\n", 1)[0].strip()
    text = generation.split("<task>", 1)[1] if "<task>" in generation else generation
    return text.split("</task>", 1)[0].strip() if "</task>" in text else ""


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 over lower-cased whitespace tokens (Self-Instruct's similarity filter)."""
    ta, tb = a.lower().split(), b.lower().split()
    if not ta or not tb:
        return 0.0
    lcs = _lcs(ta, tb)
    return 0.0 if lcs == 0 else 2 * lcs / (len(ta) + len(tb))


@dataclass
class Filtered:
    kept: list[int] = field(default_factory=list)  # indices into the candidates, in order
    dropped: Counter = field(default_factory=Counter)  # reason -> count


def filter_questions(
    candidates: list[tuple[str, list[str]]],
    seed_keys: set[str],
    eval_keys: set[str],
    cfg: SelfInstructConfig,
    limit: int,
) -> Filtered:
    """Which (question, its k shots) candidates to keep, in order, at most `limit`, and why the others went:
    empty, too short or long, a blocked word, an evaluation question (the contamination guard's normalised
    match), a seed question, a repeat of a kept one, too similar (ROUGE-L) to its shots or a kept one."""
    out = Filtered()
    seen: set[str] = set()
    kept_text: list[str] = []
    blocked = re.compile(r"\b(" + "|".join(re.escape(w) for w in cfg.blocked_words) + r")\b", re.I)
    for i, (question, shots) in enumerate(candidates):
        key = normalise_question(question)
        words = len(question.split())
        if not key:
            reason = "empty"
        elif words < cfg.min_words or words > cfg.max_words:
            reason = "length"
        elif cfg.blocked_words and blocked.search(question):
            reason = "blocked_word"
        elif key in eval_keys:
            reason = "evaluation_question"
        elif key in seed_keys:
            reason = "seed_question"
        elif key in seen:
            reason = "duplicate"
        elif any(rouge_l(question, other) >= cfg.max_rouge_l for other in [*shots, *kept_text]):
            reason = "similar"
        elif len(out.kept) >= limit:
            reason = "over_limit"
        else:
            out.kept.append(i)
            seen.add(key)
            kept_text.append(question)
            continue
        out.dropped[reason] += 1
    return out
