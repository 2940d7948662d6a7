"""Answer extraction from free-form completions, per task family.

Markers are tried in a fixed priority (CORE-PO's **Final answer:** block, "The answer is", `#### N`,
`\\boxed{}`), and within a marker the last occurrence wins: models often restate a draft before the answer.
"""

from __future__ import annotations

import re

from selftrain.grading.normalize import (
    ROMAN,
    format_number,
    index_to_roman,
    label_to_index,
    last_number,
    strip_latex_wrappers,
    to_number,
)

FINAL_ANSWER = "**Final answer:**"
_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is[:\s]*", re.MULTILINE)


def find_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), with nested braces."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # "\boxed 5" form
        m = re.match(r"\\(?:boxed|fbox)\s+([^\s$]+)", text[start:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: truncated output


def _after_hashes(text: str) -> str | None:
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    return tail.splitlines()[0].strip() if tail else None


def _answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end() :].strip()
    if not tail:
        return None
    tail = tail.splitlines()[0]
    if tail.startswith("$"):
        # "$\frac{1}{2}$" — take the whole math span even if it contains periods
        end = tail.find("$", 1)
        if end > 0:
            return tail[1:end].strip()
    boxed = find_boxed(tail)
    if boxed is not None:
        return boxed
    # cut at the sentence end (". " or final "."), keeping decimal points
    tail = re.split(r"\.(?:\s|$)", tail, maxsplit=1)[0]
    return tail.strip().strip('"').strip()


def final_answer_region(text: str) -> str:
    """The part of a completion that states the answer (after CORE-PO's **Final answer:** if present)."""
    if FINAL_ANSWER in text:
        return text.rsplit(FINAL_ANSWER, 1)[1].strip()
    return text


def extract_marked(text: str) -> str | None:
    """The answer string behind the strongest marker present, not yet normalised."""
    region = final_answer_region(text)
    for finder in (_answer_is, _after_hashes, find_boxed):
        found = finder(region)
        if found:
            return found
    if region is not text and region.strip():
        return region.strip().strip('"')
    return None


def extract_numeric(text: str) -> str | None:
    """GSM8K-style: a number behind a marker, else the last number in the text."""
    marked = extract_marked(text)
    if marked is not None:
        value = to_number(marked)
        if value is None:
            # "18 dollars per day", "x = 5 apples": the last number inside the marked span
            inner = last_number(strip_latex_wrappers(marked))
            value = to_number(inner) if inner else None
        if value is not None:
            return format_number(value)
    fallback = last_number(text)
    value = to_number(fallback) if fallback else None
    return format_number(value) if value is not None else None


def extract_math(text: str) -> str | None:
    """MATH-style: a LaTeX expression; \\boxed wins over the prose markers because MATH answers live there."""
    region = final_answer_region(text)
    boxed = find_boxed(region)
    if boxed is not None:
        return strip_latex_wrappers(boxed)
    marked = extract_marked(text)
    return strip_latex_wrappers(marked) if marked else None


_CHOICE_TOKEN = re.compile(r"\[\s*(" + "|".join(reversed(ROMAN)) + r")\s*\]")


def extract_choice(text: str, choices: list[str] | None = None) -> str | None:
    """A multiple-choice answer as a roman label ('II'): [II], letters, digits, or the option's text."""
    n = len(choices) if choices else None
    region = final_answer_region(text)
    marked = extract_marked(text)
    for span in (marked, region):
        if not span:
            continue
        bracketed = _CHOICE_TOKEN.findall(span)
        if bracketed:
            return bracketed[0] if span is marked else bracketed[-1]
        if span is not marked:
            continue  # a bare leading "I"/"A" in free text is a word, not a label
        m = re.match(r"\(?\s*([A-Za-z]|\d{1,2}|[IVX]{1,4})\s*\)?(?:[\s.:,]|$)", span.strip())
        if m:
            idx = label_to_index(m.group(1), n)
            if idx is not None:
                return index_to_roman(idx)
    if choices:
        # the option's text, the last one mentioned
        best, pos = None, -1
        low = (marked or text).lower()
        for i, choice in enumerate(choices):
            p = low.rfind(choice.strip().lower()) if choice.strip() else -1
            if p > pos:
                best, pos = i, p
        if best is not None:
            return index_to_roman(best)
    return None


def reference_answer(task: str, reference: str | None, choices: list[str] | None = None) -> str | None:
    """Normalise a dataset reference (a full GSM8K solution, a MATH solution or answer, a choice label)."""
    if reference is None:
        return None
    if task == "choice":
        idx = label_to_index(reference, len(choices) if choices else None)
        if idx is None and choices and reference in choices:
            idx = choices.index(reference)
        return index_to_roman(idx) if idx is not None else None
    if task == "math":
        boxed = find_boxed(reference)
        return strip_latex_wrappers(boxed if boxed is not None else reference)
    hashed = _after_hashes(reference)
    value = to_number(hashed if hashed is not None else reference)
    if value is None:
        return extract_numeric(reference)
    return format_number(value)
