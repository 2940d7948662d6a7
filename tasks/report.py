"""Prefect tasks that publish what a person reads after an iteration: the evaluation table, a summary in
words and numbers, and a link to the run's HTML report (the work is in selftrain.report)."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from selftrain.report import build_report
from selftrain.report.summary import iteration_summary
from selftrain.store import RunStore


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


@task(name="summarize-iteration", tags=["selftrain"])
def summarize_iteration(run: str, iteration: int) -> None:
    name = RunStore(run).run_dir.name
    markdown, eval_rows = iteration_summary(run, iteration)
    if eval_rows:
        create_table_artifact(
            key=artifact_key(name, f"iter-{iteration:03d}", "eval"),
            table=eval_rows,
            description=f"evaluation of {name} iteration {iteration}: accuracy per model and source",
        )
    create_markdown_artifact(
        key=artifact_key(name, f"iter-{iteration:03d}", "summary"),
        markdown=markdown,
        description=f"{name} iteration {iteration}: accuracy, judge, pairs, training, stage times",
    )


@task(name="report", tags=["selftrain"])
def report(run: str) -> str:
    """Write RUN/report/report.html; the flow's last artifact links to it."""
    result = build_report(run)
    path = result.html.resolve()
    create_link_artifact(
        key=artifact_key(RunStore(run).run_dir.name, "report"),
        link=path.as_uri(),
        link_text=str(path),
        description=f"HTML run report (open the file in a browser; {len(result.figures)} figures, "
        f"{len(result.missing)} stages not complete)",
    )
    return str(path)
