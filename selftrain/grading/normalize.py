"""Turning answer strings into comparable values: numbers (exact fractions) and choice indices."""

from __future__ import annotations

import re
from fractions import Fraction

ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"]

_UNIT_WORDS = (
    r"dollars?|cents?|percent|per\s*cent|pounds?|kg|kilograms?|grams?|g|miles?|km|meters?|metres?|m|cm|mm|"
    r"feet|foot|ft|inch(?:es)?|in|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|"
    r"units?|degrees?|points?|people|students?|apples?|items?|cups?|liters?|litres?|gallons?|ounces?|oz|lbs?|"
    r"square|sq|cubic|per|each|and"
)
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|operatorname)\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?[\d.]+)\s*\}\{\s*(-?[\d.]+)\s*\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac(\d)(\d)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:\s*/\s*-?\d+(?:\.\d+)?)?")


def strip_latex_wrappers(text: str) -> str:
    """Remove $...$, \\( \\), \\text{}, \\left/\\right, trailing punctuation: the noise around an answer."""
    s = text.strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", " ")
    s = re.sub(r"\\left|\\right", "", s)
    s = re.sub(r"^\$+|\$+$", "", s.strip()).strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    for _ in range(3):
        s = _TEXT_WRAP.sub(r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "%").replace("\\$", "$")
    return s.strip().rstrip(".").strip()


def to_number(text: str | None) -> Fraction | None:
    """Parse an answer to an exact number; None when it is not one number.

    Handles thousands separators, $, %, unit words, trailing .0, negatives, a/b and \\frac{a}{b}.
    """
    if text is None:
        return None
    s = strip_latex_wrappers(text)
    s = _FRAC.sub(r"\1/\2", s)
    s = _FRAC_SHORT.sub(r"\1/\2", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5"
    s = s.replace("$", "").replace("%", "").replace("−", "-").replace("\u2212", "-")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,234,567
    s = re.sub(rf"\b(?:{_UNIT_WORDS})\b\.?", " ", s, flags=re.IGNORECASE)
    s = s.replace("{", "").replace("}", "").strip().rstrip(".").strip()
    if not re.fullmatch(r"[-+]?\s*\d[\d\s./]*", s):
        return None
    s = s.replace(" ", "").lstrip("+")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> str | None:
    """The last number in free text (the fallback for numeric tasks)."""
    cleaned = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    found = _NUMBER.findall(cleaned)
    return found[-1].replace(" ", "") if found else None


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"


def label_to_index(label: str | None, num_choices: int | None = None) -> int | None:
    """'[II]', 'II', 'B', '(b)', '2' -> 1 (zero-based). Digits are 1-based as in ARC's numeric labels."""
    if label is None:
        return None
    s = label.strip().strip("[]().:*$ ").strip()
    if not s:
        return None
    upper = s.upper()
    limit = num_choices or len(ROMAN)
    if upper in ROMAN[:limit]:
        # 'I' is both a roman numeral and a letter; as an option label it means the first option either way
        # except letters beyond 'I', which are never roman in our prompts.
        return ROMAN.index(upper)
    if len(upper) == 1 and "A" <= upper <= "Z":
        idx = ord(upper) - ord("A")
        return idx if idx < limit else None
    if s.isdigit():
        idx = int(s) - 1
        return idx if 0 <= idx < limit else None
    return None


def index_to_roman(index: int) -> str:
    return ROMAN[index]
