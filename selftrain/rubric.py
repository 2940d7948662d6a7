"""The Self-Rewarding LLM-as-a-Judge prompt (Yuan et al. 2024, arXiv 2401.10020, Figure 2) and its score parser.

`paper` is the published rubric, word for word (the PDF's soft line wraps joined: one line per paragraph and per
criterion; the typographic quotes kept as printed). `compact` keeps the paper's output contract (a short
justification ending in `Score: <total points>`) in a few lines, for models whose context cannot hold the full
rubric: the tiny character-level model has 1024 positions, and the paper's rubric alone is ~1,800 characters.
"""

from __future__ import annotations

import re

PAPER_RUBRIC = (
    "Review the user’s question and the corresponding response using the additive 5-point scoring system "
    "described below. Points are accumulated based on the satisfaction of each criterion:\n"
    "- Add 1 point if the response is relevant and provides some information related to the user’s inquiry, "
    "even if it is incomplete or contains some irrelevant content.\n"
    "- Add another point if the response addresses a substantial portion of the user’s question, but does not "
    "completely resolve the query or provide a direct answer.\n"
    "- Award a third point if the response answers the basic elements of the user’s question in a useful way, "
    "regardless of whether it seems to have been written by an AI Assistant or if it has elements typically "
    "found in blogs or search results.\n"
    "- Grant a fourth point if the response is clearly written from an AI Assistant’s perspective, addressing "
    "the user’s question directly and comprehensively, and is well-organized and helpful, even if there is "
    "slight room for improvement in clarity, conciseness or focus.\n"
    "- Bestow a fifth point for a response that is impeccably tailored to the user’s question by an AI "
    "Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a high-quality, "
    "engaging, and insightful answer.\n"
    "User: {question}\n"
    "<response>{response}</response>\n"
    "After examining the user’s instruction and the response:\n"
    "- Briefly justify your total score, up to 100 words.\n"
    "- Conclude with the score using the format: “Score: <total points>”\n"
    "Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To "
    "evaluate the response in alignment with this additive scoring model, we’ll systematically attribute points "
    "based on the outlined criteria."
)

# ASCII only: the tiny model's character vocabulary is string.printable
COMPACT_RUBRIC = 'Additive 5-point score of R for Q; end with "Score: N".\nQ: {question}\nR: {response}\nJ:'

_FIELD = re.compile(r"\{(question|response)\}")
RUBRICS = {"paper": PAPER_RUBRIC, "compact": COMPACT_RUBRIC}
MAX_POINTS = 5

# "Score: 4", "score: 4.5", "Score:4/5"; the paper's model is told to conclude with it, so the LAST one counts
# (a justification may quote the format or an intermediate tally before the verdict)
_SCORE = re.compile(r"score\s*:\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def render(rubric: str, question: str, response: str) -> str:
    """The judge's user message for one (question, response). One pass over the template's own fields, not
    str.format: braces in a question or response (code, LaTeX) are text, and a question that contains
    "{response}" must not be filled in its turn."""
    values = {"question": question, "response": response}
    return _FIELD.sub(lambda m: values[m.group(1)], RUBRICS[rubric])


def parse_score(judgment: str) -> float | None:
    """The points in the judgment's last `Score: N`; None (a missing score, never 0) where there is none or
    it is outside 0-5 (an out-of-range number is not a reading of this rubric)."""
    found = _SCORE.findall(judgment or "")
    if not found:
        return None
    value = float(found[-1])
    return value if 0 <= value <= MAX_POINTS else None
