"""Shared body of the stage tasks: resolve the run, run the stage unless complete, publish a Prefect artifact."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact

from selftrain.config import load_config
from selftrain.pipeline import execute_stage
from selftrain.report.summary import stage_markdown
from selftrain.store import RunStore


def run_stage_task(run: str, iteration: int, stage: str, rebuild_stale: bool) -> dict:
    store = RunStore(run)
    cfg = load_config(store.config_path)
    manifest = execute_stage(cfg, store, iteration, stage, rebuild_stale=rebuild_stale)
    key = re.sub(r"[^a-z0-9-]", "-", f"{store.run_dir.name}-iter-{iteration:03d}-{stage}".lower())
    create_markdown_artifact(
        key=key,
        markdown=stage_markdown(manifest, store.run_dir.name),
        description=f"{stage} output of {store.run_dir}",
    )
    return {"stage": stage, "iteration": iteration, "rows": manifest.rows, "stats": manifest.stats}
