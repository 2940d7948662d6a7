"""The report's tables as lists of rows (dicts, column order = key order). The HTML report and the Prefect
artifacts render the same rows, so the UI and the file never disagree."""

from __future__ import annotations

import statistics
from typing import Any

from selftrain.grading import grade
from selftrain.report.gather import IterationData, RunData, StageInfo

Row = dict[str, Any]


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def eval_rows(it: IterationData) -> list[Row]:
    rows = []
    for model, cells in it.metrics().items():
        for src, cell in sorted(cells.items()):
            row: Row = {
                "iteration": it.iteration,
                "model": model,
                "source": src,
                "n": cell["n"],
                "correct": cell["correct"],
                "accuracy": _r(cell["accuracy"]),
            }
            if cell.get("best_of_k"):
                row[f"best-of-{cell['best_of_k']}"] = _r(cell.get("best_of_accuracy"))
            rows.append(row)
    return rows


def judge_row(it: IterationData) -> Row | None:
    if it.judge is None:
        return None
    q = it.judge.quality
    return {
        "iteration": it.iteration,
        "graded samples": q.graded,
        "sample accuracy": _r(q.sample_accuracy),
        "AUROC pooled": _r(q.auroc),
        "AUROC within question": _r(q.within_auroc),
        "mixed questions": f"{q.mixed_questions}/{q.questions}",
        "ECE": _r(q.ece),
        "mean score": _r(statistics.fmean(it.judge.scores)) if it.judge.scores else None,
        # share of samples the judge could read (core_po: the response format parsed; else an answer)
        "parsed samples": _r(it.stage("score").stats.get("parse_rate")),
    }


def pairs_row(it: IterationData) -> Row | None:
    if it.pairs is None:
        return None
    n_questions = it.stage("pairs").stats.get("questions") or (len(it.questions) if it.questions else 0)
    with_pair = len({p["question_id"] for p in it.pairs})
    two_sided = [p for p in it.pairs if p["rejected_score"] is not None]  # chosen-only builders have none
    gaps = [p["chosen_score"] - p["rejected_score"] for p in two_sided]
    return {
        "iteration": it.iteration,
        "pairs": len(it.pairs),
        "questions": n_questions,
        "questions without a pair": f"{n_questions - with_pair} ({(n_questions - with_pair) / n_questions:.0%})"
        if n_questions
        else "-",
        "median score gap": _r(statistics.median(gaps)) if gaps else None,
        "mean chosen length": _r(statistics.fmean(len(p["chosen"]) for p in it.pairs), 1)
        if it.pairs
        else None,
        "mean rejected length": _r(statistics.fmean(len(p["rejected"]) for p in two_sided), 1)
        if two_sided
        else None,
    }


def train_row(it: IterationData) -> Row | None:
    st = it.stage("train")
    if st.manifest is None:
        return None
    s = st.stats
    return {
        "iteration": it.iteration,
        "pairs": s.get("pairs"),
        "steps": s.get("steps"),
        "trained": {True: "yes", False: "no (policy kept)"}.get(s.get("trained"), ""),
        "final loss": s.get("loss"),
        "reward margin": s.get("rewards_margins"),
        "reward accuracy": s.get("rewards_accuracies"),
        "runtime (s)": s.get("train_runtime_s"),
        "resumed from": s.get("resumed_from") or "",
    }


def throughput(st: StageInfo) -> str:
    """The rate a stage reached, in the unit that stage is limited by."""
    s, wall = st.stats, st.wall_s
    if st.manifest is None:
        return ""
    if st.stage == "sample" and s.get("samples"):
        busy = s.get("sampling_s") or wall
        if busy:
            return f"{s['samples'] * s.get('mean_tokens', 0) / busy:.0f} tokens/s, {s['samples'] / busy:.1f} samples/s"
    if st.stage == "score" and s.get("scored") and wall:
        return f"{s['scored'] / wall:.1f} samples/s"
    if st.stage == "train" and s.get("steps") and s.get("train_runtime_s"):
        return f"{s['steps'] / s['train_runtime_s']:.2f} steps/s, {s.get('pairs', 0) / s['train_runtime_s']:.1f} pairs/s"
    if st.stage == "evaluate" and wall and st.manifest is not None and st.manifest.rows:
        return f"{st.manifest.rows / wall:.1f} completions/s"
    if st.stage in ("questions", "pairs") and wall and st.manifest is not None and st.manifest.rows:
        return f"{st.manifest.rows / wall:.0f} rows/s"
    return ""


def time_rows(run: RunData) -> list[Row]:
    """Wall seconds, iterations x stages, with the iteration's total."""
    rows = []
    for it in run.iterations:
        walls = {s: st.wall_s for s, st in it.stages.items()}
        if any(w is not None for w in walls.values()):
            total = sum(w for w in walls.values() if w is not None)
            rows.append({"wall (s)": f"iter {it.iteration}", **walls, "total": total})
    return rows


def throughput_rows(run: RunData) -> list[Row]:
    rows = []
    for it in run.iterations:
        rates = {s: throughput(st) for s, st in it.stages.items() if s not in ("questions", "pairs")}
        if any(rates.values()):
            rows.append({"throughput": f"iter {it.iteration}", **{s: r or None for s, r in rates.items()}})
    return rows


def status_rows(run: RunData) -> list[Row]:
    return [
        {"iteration": it.iteration, **{s: st.status for s, st in it.stages.items()}} for it in run.iterations
    ]


def truncate(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def example_rows(run: RunData, per_iteration: int = 3, limit: int = 300) -> list[Row]:
    """A few pairs per iteration with their question; with references, whether chosen/rejected are right."""

    rows = []
    for it in run.iterations:
        if not it.pairs:
            continue
        questions = {q["question_id"]: q for q in it.questions or []}
        seen: set[str] = set()
        for p in it.pairs:
            if p["question_id"] in seen:
                continue  # one pair per question: the table should show several questions
            seen.add(p["question_id"])
            q = questions.get(p["question_id"], {})
            row: Row = {
                "iteration": it.iteration,
                "question": truncate(q.get("question", p["question_id"]), limit),
            }
            for side in ("chosen", "rejected"):
                if p[side] is None:  # chosen-only builders (SFT data)
                    row[side], row[f"{side} score"] = "-", "-"
                    continue
                verdict = ""
                if q.get("reference") is not None and q.get("task"):
                    # graded here: a pair holds texts and scores, and no table of the store grades them
                    _, ok = grade(q["task"], p[side], q["reference"], q.get("choices"))
                    verdict = " ✓" if ok else " ✗"
                row[side] = truncate(p[side], limit)
                row[f"{side} score"] = f"{p[f'{side}_score']:.3f}{verdict}"
            rows.append(row)
            if len(seen) >= per_iteration:
                break
    return rows
