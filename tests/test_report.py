"""The run report: judge metrics on known numbers, progress lines off a terminal, and the HTML report of a
hand-built store (fast) and of a real tiny run (slow): self-contained, figures embedded, missing stages named."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml

from selftrain.report.calibration import (
    ece,
    judge_quality,
    quantile_bins,
    reliability_bins,
    within_question_auroc,
)
from selftrain.spec import KINDS
from selftrain.store import DAMAGED, STARTED, Manifest, RunStore, write_manifest, write_shard

from .conftest import cli, tiny_recipe, write_recipe

EXTERNAL = re.compile(r"https?://", re.I)


def test_within_question_auroc_and_ece_on_known_numbers():
    qids = ["a", "a", "b", "b", "c", "c", "d", "d"]
    scores = [0.9, 0.8, 0.3, 0.1, 0.5, 0.5, 0.4, 0.4]
    labels = [True, False, True, False, True, True, True, False]
    # a: right above wrong (1), b: right above wrong (1), c: no wrong sample (skipped), d: a tie (1/2)
    value, mixed = within_question_auroc(qids, scores, labels)
    assert mixed == 3 and value == pytest.approx(2.5 / 3)
    q = judge_quality(qids, scores, labels)
    # pooled: right {.9,.3,.5,.5,.4} vs wrong {.8,.1,.4}: 15 comparisons, won 3 + 1 + 2 + 2 + 1.5
    assert q.auroc == pytest.approx(9.5 / 15)
    assert q.within_auroc == pytest.approx(2.5 / 3) and q.mixed_questions == 3 and q.questions == 4
    assert q.sample_accuracy == pytest.approx(5 / 8) and q.graded == 8
    # a question weighs by its right x wrong pairs: 2 right + 1 wrong (2 pairs, both won), 1+1 lost (1 pair)
    value, _ = within_question_auroc(["x", "x", "x", "y", "y"], [0.9, 0.8, 0.1, 0.2, 0.7], [1, 1, 0, 1, 0])
    assert value == pytest.approx(2 / 3)
    assert within_question_auroc(["x", "x"], [0.1, 0.2], [True, True]) == (None, 0)


def test_ece_and_reliability_bins():
    # bin [0.9, 1]: mean .95, 1 of 2 right (gap .45); bin [0.1, 0.2): mean .15, none right (gap .15)
    scores, labels = [0.95, 0.95, 0.15, 0.15], [True, False, False, False]
    assert ece(scores, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.15)
    bins = reliability_bins(scores, labels)
    assert len(bins) == 10 and bins[9].n == 2 and bins[9].accuracy == 0.5 and bins[1].mean_score == 0.15
    assert bins[0].n == 0 and bins[0].accuracy is None
    assert reliability_bins([1.0, 0.0, 1.3], [True, False, True])[9].n == 2  # 1 and above: last bin
    assert ece([0.7] * 10, [True] * 7 + [False] * 3) == pytest.approx(0.0)
    assert ece([], []) is None
    # the diagram's bins: equal counts in score order, however crowded the scores are
    bins = quantile_bins(
        [0.25, 0.26, 0.24, 0.27, 0.23, 0.22], [True, False, True, True, False, False], n_bins=3
    )
    assert [b.n for b in bins] == [2, 2, 2]
    assert [b.accuracy for b in bins] == [0.0, 1.0, 0.5] and bins[0].mean_score == pytest.approx(0.225)


def test_progress_logs_lines_off_a_terminal(monkeypatch, caplog):
    from selftrain import progress

    monkeypatch.setattr(progress, "QUIET_FIRST_S", 0.0)
    with caplog.at_level(logging.INFO, logger="selftrain.progress"):
        with progress.Progress(50, "sample iter-000", unit="question", terminal=False) as bar:
            for _ in range(50):
                bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10, lines  # every 10 %, the last one 100 %
    assert lines[0].startswith("sample iter-000: 5/50 question (10%)") and "question/s" in lines[0]
    assert "ETA" in lines[0] and lines[-1].startswith("sample iter-000: 50/50 question (100%)")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="selftrain.progress"):
        monkeypatch.setattr(progress, "QUIET_FIRST_S", 60.0)
        assert list(progress.track(range(5), "pairs")) == [0, 1, 2, 3, 4]
    assert caplog.records == []  # a loop over in seconds says nothing


# --- a hand-built store: iteration 0 complete, iteration 1 stopped in its score stage --------------------


def _stage(
    store: RunStore, it: int, stage: str, rows: list[dict], stats: dict, started="2026-01-01T00:00:00+00:00"
):
    d = store.stage_dir(it, stage)
    d.mkdir(parents=True, exist_ok=True)
    schema = KINDS[stage].schema
    shards = [write_shard(d, 0, rows, schema)] if schema is not None else []
    finished = "2026-01-01T00:00:07+00:00"
    write_manifest(
        d,
        Manifest(
            stage=stage,
            iteration=it,
            fingerprint="f",
            output_id=f"{stage}{it}",
            shards=shards,
            started_at=started,
            finished_at=finished,
            stats=stats,
        ),
    )


def _questions(n: int) -> list[dict]:
    q = [
        {
            "question_id": f"q{i}",
            "source": "synthetic_arithmetic",
            "split": "train",
            "task": "arithmetic",
            "question": f"{i}+1=?",
            "reference": str(i + 1),
            "choices": None,
            "meta": "{}",
        }
        for i in range(n)
    ]
    q[0]["question"] = "<script>alert(1)</script> 0+1=?"  # must come out escaped
    return q


def _fake_run(root: Path, chosen_only: bool = False) -> Path:
    store = RunStore(root / "runs" / "fake")
    store.run_dir.mkdir(parents=True)
    store.config_path.write_text(
        yaml.safe_dump(
            {"run": {"name": "fake", "iterations": 3}, "model": {"path": "m"}, "judge": {"name": "core_po"}}
        )
    )
    questions = _questions(6)
    samples, scores = [], []
    for i, q in enumerate(questions):
        for k in range(3):
            answer = str(i + 1) if k < 2 - (i % 3 == 0) else "99"
            samples.append(
                {
                    "question_id": q["question_id"],
                    "sample_index": k,
                    "prompt": f"Q: {q['question']}",
                    "completion": f"work #### {answer}",
                    "num_tokens": 10,
                    "finish_reason": "stop",
                    "cumulative_logprob": None,
                    "answer": answer,
                }
            )
            scores.append(
                {
                    "question_id": q["question_id"],
                    "sample_index": k,
                    "answer": answer,
                    "answer_confidence": None,
                    "reasoning_confidence": None,
                    "consistency": None,
                    "score": 0.9 - 0.3 * k + 0.01 * i,
                }
            )
    pairs = [
        {
            "question_id": q["question_id"],
            "prompt": "Q",
            "chosen": "work #### " + str(i + 1),
            "rejected": "a longer wrong work #### 99",
            "chosen_score": 0.9,
            "rejected_score": 0.3,
        }
        for i, q in enumerate(questions[:4])
    ]
    if chosen_only:  # SFT data (pairs.builder chosen_only): no rejected side
        pairs = [{**p, "rejected": None, "rejected_score": None} for p in pairs]
    metrics = {
        "base": {
            "synthetic_arithmetic": {
                "n": 20,
                "correct": 8,
                "accuracy": 0.4,
                "best_of_k": 4,
                "best_of_correct": 10,
                "best_of_accuracy": 0.5,
            }
        },
        "policy": {
            "synthetic_arithmetic": {
                "n": 20,
                "correct": 9,
                "accuracy": 0.45,
                "best_of_k": 4,
                "best_of_correct": 11,
                "best_of_accuracy": 0.55,
            }
        },
    }
    _stage(store, 0, "questions", questions, {"questions": 6})
    _stage(store, 0, "sample", samples, {"samples": 18, "mean_tokens": 10.0, "sampling_s": 2.0})
    _stage(store, 0, "score", scores, {"scored": 18})
    _stage(store, 0, "pairs", pairs, {"pairs": 4, "questions": 6})
    _stage(
        store, 0, "train", [], {"steps": 3, "pairs": 4, "train_runtime_s": 1.5, "loss": 0.69, "trained": True}
    )
    history = [
        {"loss": 0.69 - 0.01 * s, "rewards/margins": 0.1 * s, "rewards/accuracies": 0.5, "step": s}
        for s in (1, 2, 3)
    ] + [{"train_runtime": 1.5, "step": 3}]
    (store.stage_dir(0, "train") / "log_history.json").write_text(json.dumps(history))
    _stage(store, 0, "evaluate", [], {"metrics": metrics})
    _stage(store, 1, "questions", questions, {"questions": 6})
    _stage(store, 1, "sample", samples, {"samples": 18, "mean_tokens": 10.0, "sampling_s": 2.0})
    (store.stage_dir(1, "sample") / DAMAGED).write_text("{}")  # as `selftrain verify` marks it
    (store.stage_dir(1, "score")).mkdir(parents=True)
    (store.stage_dir(1, "score") / STARTED).write_text(json.dumps({"fingerprint": "f"}))
    return store.run_dir


def _check_self_contained(html: str, figures: int) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.findall(html)[:3]
    assert html.count("src='data:image/png;base64,") == figures
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_report_of_a_half_finished_store(tmp_path):
    from selftrain.report import build_report

    run_dir = _fake_run(tmp_path)
    report = build_report(run_dir, tmp_path / "out")
    html = report.html.read_text()
    _check_self_contained(html, figures=6)
    assert sorted(p.name for p in report.figures) == sorted(
        f"{n}.png" for n in ("accuracy", "judge", "judge_scores", "pairs", "training", "time")
    )
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in report.figures)
    # what is missing is named, at the top of the page and in the result
    for text in (
        "iter-001/sample damaged: files differ from the manifest",
        "iter-001/score partial",
        "iter-001/train missing",
        "iter-002 not started",
    ):
        assert text in report.missing and text in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # example questions are escaped
    for number in ("0.45", "0.55", "best-of-4"):  # accuracy table: greedy and best-of-K
        assert number in html
    assert "AUROC within question" in html and "questions without a pair" in html


def test_report_grades_only_what_the_store_holds_no_grade_of(tmp_path, monkeypatch):
    """The evaluate stage's rows carry their grade (`correct`) and its manifest the metrics: the report reads
    those and grades only the score rows (18: the judge's calibration) and the example pairs' sides (3 x 2)."""
    import sys

    from selftrain.report import build_report

    run_dir = _fake_run(tmp_path)
    store = RunStore(run_dir)
    metrics = store.manifest(0, "evaluate").stats["metrics"]
    row = {"model": "policy", "decoding": "greedy", "source": "synthetic_arithmetic", "sample_index": 0}
    rows = [
        {**row, "question_id": f"q{i}", "completion": "#### 1", "finish_reason": "stop", "answer": "1"}
        | {"reference": "1", "correct": True, "judge_score": None, "selected": True}
        for i in range(20)
    ]
    shutil.rmtree(store.stage_dir(0, "evaluate"))
    _stage(store, 0, "evaluate", rows, {"metrics": metrics})
    module = sys.modules["selftrain.grading.grade"]
    calls = []

    def counting(task, answer, ref):  # noqa: ANN001, ANN202
        calls.append(answer)
        return real(task, answer, ref)

    real = module.is_equivalent
    monkeypatch.setattr(module, "is_equivalent", counting)  # what grade() calls
    monkeypatch.setattr("selftrain.diagnostics.is_equivalent", counting)  # and sample_labels
    html = build_report(run_dir, tmp_path / "out").html.read_text()
    assert len(calls) == 18 + 3 * 2, calls
    assert "0.45" in html and "0.55" in html  # the evaluate manifest's numbers


def test_report_of_chosen_only_pairs(tmp_path):
    """SFT data has no rejected side: the report shows the chosen scores instead of a gap (it crashed on None)."""
    from selftrain.report import build_report

    report = build_report(_fake_run(tmp_path, chosen_only=True), tmp_path / "out")
    html = report.html.read_text()
    assert "pairs.png" in {p.name for p in report.figures}
    assert "questions without a pair" in html and "a longer wrong work" not in html


def test_iteration_summary_markdown(tmp_path):
    from selftrain.report.summary import iteration_summary, stage_markdown

    run_dir = _fake_run(tmp_path)
    markdown, rows = iteration_summary(run_dir, 0)
    assert "0.450 greedy (9/20), base 0.400 (+0.050); best-of-4 0.550" in markdown
    assert "**Pairs**: 4 from 6 questions; without a pair: 2 (33%)" in markdown
    assert "AUROC" in markdown and "| sample | done | 7 | 90 tokens/s, 9.0 samples/s |" in markdown
    assert rows[0]["best-of-4"] == 0.5 and {r["model"] for r in rows} == {"base", "policy"}
    markdown, rows = iteration_summary(run_dir, 1)
    assert rows == [] and "not evaluated yet" in markdown and "iter-001/score partial" in markdown
    table = stage_markdown(RunStore(run_dir).manifest(0, "evaluate"), "fake")
    assert "| metrics.policy.synthetic_arithmetic.accuracy | 0.45 |" in table


def test_report_of_a_folder_without_a_run(tmp_path):
    proc = cli("report", str(tmp_path))
    assert proc.returncode == 2 and "not a run folder" in proc.stderr


@pytest.mark.slow
def test_report_of_a_tiny_run(tmp_path, tiny_model):
    """`selftrain run` ends by writing the report; `selftrain report` on a copy with its last stages
    removed still reports what exists and names what is missing."""
    recipe = tiny_recipe(tmp_path, tiny_model, evaluation={"best_of": 2})
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    path = Path(proc.stdout.split("report: ")[-1].strip())
    assert path == (run_dir / "report" / "report.html").resolve() and path.exists()
    html = path.read_text()
    _check_self_contained(html, figures=sum(1 for p in path.parent.glob("*.png")))
    assert {"accuracy.png", "pairs.png", "training.png", "time.png"} <= {
        p.name for p in path.parent.glob("*.png")
    }
    assert "best-of-2" in html

    half = tmp_path / "half"
    shutil.copytree(run_dir, half, ignore=shutil.ignore_patterns("report"))
    for stage in ("train", "evaluate"):
        shutil.rmtree(half / "iter-000" / stage)
    proc = cli("report", str(half), "--output", str(tmp_path / "half-report"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "half-report" / "report.html").read_text()
    assert "iter-000/train missing" in html and "iter-000/evaluate missing" in html
    _check_self_contained(html, figures=len(list((tmp_path / "half-report").glob("*.png"))))
    assert not (tmp_path / "half-report" / "training.png").exists()
