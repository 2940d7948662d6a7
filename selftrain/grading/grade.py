"""Grading: extraction + equivalence per task, and grading whole generation files."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftrain.errors import DataError
from selftrain.faults import read_text_utf8
from selftrain.fileio import atomic_write_text
from selftrain.grading.extract import extract_choice, extract_math, extract_numeric, reference_answer
from selftrain.grading.normalize import to_number
from selftrain.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """How to read an answer out of a completion and compare it with a reference."""

    family: str  # numeric | math | choice
    extract: Callable[[str, list[str] | None], str | None]


TASKS: Registry[Task] = Registry("grading task")
for _name in ("gsm8k", "arithmetic", "numeric"):
    TASKS.register(_name)(Task("numeric", lambda text, choices=None: extract_numeric(text)))
TASKS.register("math")(Task("math", lambda text, choices=None: extract_math(text)))
for _name in ("choice", "arc_challenge", "gpqa"):
    TASKS.register(_name)(Task("choice", extract_choice))


def extract_answer(task: str, completion: str, choices: list[str] | None = None) -> str | None:
    return TASKS.get(task).extract(completion, choices)


def _compact(s: str) -> str:
    return re.sub(r"\s+", "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


@functools.lru_cache(maxsize=4096)
def _math_parse(expr: str):  # noqa: ANN202 - math_verify's own types
    from math_verify import parse

    return parse(f"${expr}$", parsing_timeout=None)


def math_equal(pred: str, ref: str) -> bool:
    """Symbolic equivalence with math-verify, after cheap exact and numeric checks."""
    if _compact(pred) == _compact(ref):
        return True
    a, b = to_number(pred), to_number(ref)
    if a is not None and b is not None:
        return a == b
    from math_verify import verify

    try:
        gold, answer = _math_parse(ref), _math_parse(pred)
        return bool(gold and answer and verify(gold, answer, timeout_seconds=None))
    except Exception:  # math-verify raises on exotic LaTeX; an unparsable answer is simply not equal
        return False


def is_equivalent(task: str, pred: str | None, ref: str | None) -> bool:
    if pred is None or ref is None:
        return False
    family = TASKS.get(task).family
    if family == "numeric":
        a, b = to_number(pred), to_number(ref)
        return a is not None and a == b
    if family == "math":
        return math_equal(pred, ref)
    return pred == ref


def grade(
    task: str, completion: str, reference: str | None, choices: list[str] | None = None
) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one completion."""
    answer = extract_answer(task, completion, choices)
    ref = reference_answer(TASKS.get(task).family, reference, choices)
    return answer, is_equivalent(task, answer, ref)


def get_field(row: dict[str, Any], dotted: str) -> Any:
    """row['a']['b'] for 'a.b'; a literal key containing dots wins."""
    if dotted in row:
        return row[dotted]
    node: Any = row
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(dotted)
    return node


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")

    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    rows = []
    for lineno, line in enumerate(read_text_utf8(path, DataError).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append({"__malformed__": f"line {lineno} is not JSON"})
    return rows


def grade_rows(
    task: str,
    rows: list[dict[str, Any]],
    completion_field: str,
    reference_field: str,
    choices_field: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grade rows; malformed rows are counted with their (1-based) row numbers and never stop the rest."""
    TASKS.get(task)
    # added columns never overwrite an input column (MATH-500 has its own `answer`)
    clash = any(k in ("answer", "correct") for row in rows[:1] for k in row)
    answer_key, correct_key = ("graded_answer", "graded_correct") if clash else ("answer", "correct")
    out, malformed = [], []
    correct = unparsable = 0
    for i, row in enumerate(rows, 1):
        try:
            if "__malformed__" in row:
                raise ValueError(row["__malformed__"])
            completion = get_field(row, completion_field)
            reference = get_field(row, reference_field)
            choices = get_field(row, choices_field) if choices_field else None
            for name, value in ((completion_field, completion), (reference_field, reference)):
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    kind = "null" if value is None else type(value).__name__
                    raise ValueError(f"field '{name}' is {kind}, not a string")
        except (KeyError, ValueError) as e:
            reason = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            malformed.append({"row": i, "reason": reason})
            out.append({**row, answer_key: None, correct_key: None})
            continue
        answer, ok = grade(task, str(completion), str(reference), choices)
        correct += ok
        unparsable += answer is None
        out.append({**row, answer_key: answer, correct_key: ok})
    graded = len(rows) - len(malformed)
    summary = {
        "task": task,
        "n": graded,
        "correct": correct,
        "accuracy": round(correct / graded, 6) if graded else 0.0,
        "unparsable": unparsable,
        "malformed": len(malformed),
        "malformed_rows": malformed[:50],
        "columns_added": [answer_key, correct_key],
    }
    return summary, out


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix == ".parquet":
        import os

        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
        return
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
