"""Dataset sources: a registry of loaders that turn a `SourceConfig` into question rows.

Every loader reads a local `path:` when given (jsonl or parquet) and the dataset hub otherwise; hub access is
real code, exercised here only through local files because no hub is reachable from CI.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selftrain.data import arithmetic_words, synthetic
from selftrain.errors import DataError
from selftrain.faults import read_text_utf8
from selftrain.grading.normalize import ROMAN, label_to_index
from selftrain.registry import Registry

if TYPE_CHECKING:
    from selftrain.config import SourceConfig

Row = dict[str, Any]
Loader = Callable[["SourceConfig", int], list[Row]]


SOURCES: Registry[Loader] = Registry("dataset source")


def _read_local(path: str) -> list[Row]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset file not found: {p}")
    if p.suffix == ".parquet" or p.is_dir():
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"{p}: not a readable parquet file ({str(e).splitlines()[0]})") from None

    rows = []
    for lineno, line in enumerate(read_text_utf8(p, DataError).split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{p}:{lineno}: not a JSON line") from None
    return rows


def _load_hub(repo: str, subset: str | None, split: str) -> list[Row]:
    from datasets import load_dataset

    try:
        return load_dataset(repo, subset, split=split).to_list()
    except Exception as e:  # network, auth, missing split: one line, naming the dataset
        raise DataError(f"cannot load {repo} ({subset or 'default'}, {split}) from the hub: {e}") from None


def _rows(spec: SourceConfig, repo: str, subset: str | None, *fields: str) -> tuple[list[Row], str]:
    """The rows of spec.path, else of the hub dataset `repo`, and where they came from; an error unless they
    have `fields`."""
    rows, origin = (
        (_read_local(spec.path), spec.path)
        if spec.path
        else (_load_hub(repo, spec.subset or subset, spec.split), repo)
    )
    _require(rows, origin, *fields)
    return rows, origin


def _require(rows: list[Row], origin: str, *fields: str) -> None:
    if not rows:
        raise DataError(f"dataset {origin} has no rows")
    for field in fields:
        if field not in rows[0]:
            cols = ", ".join(sorted(rows[0])[:12])
            raise DataError(f"dataset {origin} has no column '{field}' (columns: {cols})")


def _make(spec: SourceConfig, task: str, i: int, question: str, reference: Any, **extra: Any) -> Row:
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"source {spec.name}: row {i} has an empty or non-string question")
    choices = extra.pop("choices", None)
    return {
        "question_id": f"{spec.name}-{spec.split}-{i:06d}",
        "source": spec.label or spec.name,
        "split": spec.split,
        "task": task,
        "question": question,
        "reference": None if reference is None else str(reference),
        "choices": choices,
        "meta": json.dumps(extra, default=str),
    }


@SOURCES.register("synthetic_arithmetic")
def load_synthetic(spec: SourceConfig, seed: int) -> list[Row]:
    size = spec.limit or spec.size
    return [
        # the worked solution and operand count: GSI's gold rationale and difficulty (never read to train else)
        _make(spec, "arithmetic", i, p.question, p.answer(), operands=3, solution=p.solution())
        for i, p in enumerate(synthetic.problems(spec.split, size, seed))
    ]


def _digit_sums(spec: SourceConfig, split: str) -> list[Row]:
    size = spec.limit or spec.size
    return [
        _make(spec, "arithmetic", i, p.question, p.answer(), operands=len(p.operands), solution=p.solution())
        for i, p in enumerate(synthetic.digit_sums(split, size, 0))
    ]


@SOURCES.register("digit_sums")
def load_digit_sums(spec: SourceConfig, seed: int) -> list[Row]:
    """Digit sums mod 10 (the tiny recipe's toy): `split` train (4-8 operands, unlabeled use), hard, easy."""
    return _digit_sums(spec, spec.split)


@SOURCES.register("digit_sums_hard")
def load_digit_sums_hard(spec: SourceConfig, seed: int) -> list[Row]:
    """Held-out 6-8-operand digit sums (longer chains than pre-training mostly saw); `split` is ignored."""
    return _digit_sums(spec, "hard")


@SOURCES.register("digit_sums_easy")
def load_digit_sums_easy(spec: SourceConfig, seed: int) -> list[Row]:
    """Held-out 4-5-operand digit sums (the lengths pre-training saw); `split` is ignored."""
    return _digit_sums(spec, "easy")


@SOURCES.register("arithmetic_words")
def load_arithmetic_words(spec: SourceConfig, seed: int) -> list[Row]:
    """One-step arithmetic in plain words (selftrain/data/arithmetic_words.py): `subset` add1, mul1, add2, mul2,
    word1 or a comma-separated mix; `split` train or test, held out by fact; `size` questions per drawn task
    (add1 and mul1 give all of theirs). Ids name the task, so a task's ids are the same alone or in a mix."""
    try:
        questions = arithmetic_words.questions(spec.subset, spec.split, spec.size, seed)
    except ValueError as e:
        raise DataError(f"source {spec.name}: {e}") from None
    rows = []
    for q in questions:
        row = _make(spec, "numeric", q.index, q.text, q.answer, subset=q.task, op=q.op, operands=[q.a, q.b])
        rows.append({**row, "question_id": f"{spec.name}-{spec.split}-{q.task}-{q.index:06d}"})
    return rows


@SOURCES.register("gsm8k")
def load_gsm8k(spec: SourceConfig, seed: int) -> list[Row]:
    rows, _ = _rows(spec, "openai/gsm8k", "main", "question", "answer")
    return [_make(spec, "gsm8k", i, r["question"], r["answer"]) for i, r in enumerate(rows)]


@SOURCES.register("math")
def load_math(spec: SourceConfig, seed: int) -> list[Row]:
    # The full MATH (7500 train, 5000 test) for every split, so `level: 5` on the test split gives the test
    # set's level-5 problems (what the CORE-PO paper reports), not MATH-500's 134.
    return _math(spec, *_rows(spec, "DigitalLearningGmbH/MATH-lighteval", "default", "problem"))


@SOURCES.register("math500")
def load_math500(spec: SourceConfig, seed: int) -> list[Row]:
    # MATH-500 (a 500-problem subset of the MATH test set) has one split, "test"
    return _math(
        spec, *_rows(spec.model_copy(update={"split": "test"}), "HuggingFaceH4/MATH-500", None, "problem")
    )


def _math(spec: SourceConfig, rows: list[Row], origin: str) -> list[Row]:
    out = []
    for i, r in enumerate(rows):
        level = r.get("level")
        level_num = int(str(level).split()[-1]) if level not in (None, "", "Level ?") else None
        if spec.level is not None and level_num != spec.level:
            continue
        ref = r.get("answer") or r.get("solution")
        out.append(
            _make(
                spec,
                "math",
                i,
                r["problem"],
                ref,
                level=level_num,
                subject=r.get("subject", r.get("type")),
                solution=r.get("solution"),  # GSI's gold rationale (MATH-500's reference is the bare answer)
            )
        )
    if not out:
        raise DataError(f"dataset {origin} has no rows at level {spec.level}")
    return out


@SOURCES.register("arc_challenge")
def load_arc(spec: SourceConfig, seed: int) -> list[Row]:
    rows, _ = _rows(spec, "allenai/ai2_arc", "ARC-Challenge", "question", "choices", "answerKey")
    return [_arc_row(spec, i, r) for i, r in enumerate(rows)]


def _arc_row(spec: SourceConfig, i: int, r: Row) -> Row:
    labels, texts = r["choices"]["label"], r["choices"]["text"]
    # ARC mixes letter and digit labels ("1".."4" on 22 test items); we re-label by position as [I]..[V]
    ref = ROMAN[labels.index(r["answerKey"])] if r["answerKey"] in labels else None
    return _make(spec, "choice", i, r["question"], ref, choices=list(texts), labels=labels)


@SOURCES.register("gpqa")
def load_gpqa(spec: SourceConfig, seed: int) -> list[Row]:
    rows, _ = _rows(spec, "Idavidrein/gpqa", "gpqa_main", "Question", "Correct Answer", "Incorrect Answer 1")
    return [_gpqa_row(spec, seed, i, r) for i, r in enumerate(rows)]


def _gpqa_row(spec: SourceConfig, seed: int, i: int, r: Row) -> Row:
    """The correct answer and the incorrect ones in an order fixed per question and seed."""
    options = [r["Correct Answer"]] + [
        r[f"Incorrect Answer {k}"] for k in (1, 2, 3) if r.get(f"Incorrect Answer {k}")
    ]
    options = [str(o).strip() for o in options]
    order = list(range(len(options)))
    random.Random(f"gpqa-{seed}-{i}").shuffle(order)
    shuffled = [options[j] for j in order]
    return _make(spec, "choice", i, r["Question"].strip(), ROMAN[order.index(0)], choices=shuffled)


@SOURCES.register("file")
def load_file(spec: SourceConfig, seed: int) -> list[Row]:
    if not spec.path:
        raise DataError("source 'file' needs a path")
    rows = _read_local(spec.path)
    qf, rf = spec.question_field or "question", spec.reference_field
    _require(rows, spec.path, qf, *([rf] if rf else []))
    task = spec.task or "numeric"
    out = []
    for i, r in enumerate(rows):
        choices = r.get("choices") if task == "choice" else None
        ref = r.get(rf) if rf else None
        if task == "choice" and ref is not None:
            idx = label_to_index(str(ref), len(choices) if choices else None)
            ref = ROMAN[idx] if idx is not None else ref
        out.append(_make(spec, task, i, r[qf], ref, choices=choices))
    return out


_SELF_ORDERED = {"synthetic_arithmetic", "arithmetic_words"}


def load_source(spec: SourceConfig, seed: int) -> list[Row]:
    """Rows of one source after a seeded shuffle and `limit` (the synthetic sources are already random, and
    arithmetic_words orders its test split without the run seed, so a limit keeps one evaluation set)."""
    rows = SOURCES.get(spec.name)(spec, seed)
    if not rows:
        raise DataError(f"source {spec.name} ({spec.path or spec.split}) has no rows")
    if spec.name not in _SELF_ORDERED and not spec.name.startswith("digit_sums"):
        rng = random.Random(f"{spec.name}-{spec.split}-{seed}")
        rows = rows[:]
        rng.shuffle(rows)
    return rows[: spec.limit] if spec.limit else rows
