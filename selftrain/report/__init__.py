"""`selftrain report RUN`: a run's results as one self-contained HTML page plus its figures as PNGs, made from
the store alone (a finished run, a half-finished one, or one copied from another machine)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from selftrain.report import figures, html, tables
from selftrain.report.gather import RunData, gather

log = logging.getLogger(__name__)

REPORT_DIR = "report"  # default output: RUN/report/
REPORT_FILE = "report.html"


@dataclass
class Report:
    html: Path
    figures: list[Path]
    missing: list[str]  # stages not complete (and anything unreadable)


TEXT = {
    "status": "Which stages of which iteration are complete (done), were interrupted (partial), failed, or "
    "have not run (missing), and those `selftrain verify` found damaged. From the files alone; `selftrain "
    "status RUN` also checks staleness.",
    "accuracy": "Greedy accuracy of each iteration's policy (after that iteration's training) on each "
    "evaluation source, with 95 % Wilson intervals; best-of-K beside it where `evaluation.best_of` was set. "
    "Grey lines: the base model, evaluated in iteration 0.",
    "judge": "Where the training questions carry references, every sample is graded against them (diagnostic "
    "only: pairs never see it). Reliability: samples binned by judge score; a calibrated judge's points lie on "
    "the diagonal. ECE: the share-weighted gap between score and accuracy over the bins. AUROC pooled: does a "
    "higher score mean a right answer, across questions. AUROC within question: the same over right/wrong "
    "pairs of one question only — the comparison pair building makes, so it says whether the pairs carry "
    "signal (0.5 = none). ECE is given pooled only: calibration is a property of the score's absolute scale.",
    "pairs": "Preference pairs built from the scores: how many, the chosen-minus-rejected score gap, the "
    "answers' lengths (a judge that prefers short or long answers shows here), and the questions that "
    "yielded no pair (all samples scored alike, or fewer than two).",
    "training": "The DPO trainer's log history (policy/log_history.json), per optimizer step: loss (0.693 = "
    "log 2 at the start), reward margin (chosen minus rejected implicit reward) and reward accuracy (share of "
    "pairs with a positive margin).",
    "time": "Wall time of each stage (from the manifests' start and end times, 1 s resolution; a resumed "
    "stage counts its last attempt) and the rate it reached.",
    "examples": "One pair per question, a few questions per iteration, truncated. ✓/✗: the answer graded "
    "against the reference (where there is one).",
}


def _missing(run: RunData) -> list[str]:
    out = []
    for it in run.iterations:
        states = [st for st in it.stages.values() if st.status != "done"]
        if len(states) == len(it.stages) and all(st.status == "missing" for st in states):
            out.append(f"iter-{it.iteration:03d} not started")  # one line, not one per stage
            continue
        out += [f"{st.where} {st.status}{f': {st.error}' if st.error else ''}" for st in states]
    return out + run.problems


def build_report(run_dir: str | Path, output: str | Path | None = None) -> Report:
    """Write OUTPUT/report.html and OUTPUT/<figure>.png (OUTPUT defaults to RUN/report)."""

    run = gather(run_dir)
    out = Path(output) if output is not None else run.run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes | None] = {}
    written = []
    for name, draw in figures.FIGURES.items():
        fig = draw(run)
        if fig is None:
            pngs[name] = None
            (out / f"{name}.png").unlink(
                missing_ok=True
            )  # a stale figure from an earlier report would mislead
            continue
        path = out / f"{name}.png"
        pngs[name] = figures.render_png(fig, path)
        written.append(path)

    def each(fn) -> list:  # noqa: ANN001 - one row per iteration that has one
        return [r for it in run.iterations if (r := fn(it))]

    def note(key: str) -> str:
        return f"<p class='note'>{html.e(TEXT[key])}</p>"

    sections = [
        ("status", "Stages", note("status") + html.table(tables.status_rows(run), status_cells=True)),
        (
            "accuracy",
            "Accuracy",
            note("accuracy")
            + html.image(pngs["accuracy"], "accuracy")
            + html.table([r for it in run.iterations for r in tables.eval_rows(it)]),
        ),
        (
            "judge",
            "Judge",
            note("judge")
            + html.table(each(tables.judge_row))
            + html.image(pngs["judge"], "judge reliability")
            + html.image(pngs["judge_scores"], "judge score histograms"),
        ),
        (
            "pairs",
            "Pairs",
            note("pairs") + html.table(each(tables.pairs_row)) + html.image(pngs["pairs"], "pairs"),
        ),
        (
            "training",
            "Training",
            note("training") + html.image(pngs["training"], "training") + html.table(each(tables.train_row)),
        ),
        (
            "time",
            "Time",
            note("time")
            + html.image(pngs["time"], "time")
            + html.table(tables.time_rows(run))
            + html.table(tables.throughput_rows(run)),
        ),
        ("examples", "Examples", note("examples") + html.table(tables.example_rows(run), cls="examples")),
    ]
    missing = _missing(run)
    path = out / REPORT_FILE
    path.write_text(html.page(run, sections, missing), encoding="utf-8")
    log.info("report written to %s (%d figures)", path, len(written))
    return Report(path, written, missing)
