"""End to end on a tiny model, what a finished run holds: real transformers sampling and judging, real
TRL/PEFT training, real Parquet; status, artifacts, export, Prefect, bad inputs. Recovery (SIGKILL, rerun,
damage, staleness) is in test_e2e_recovery.py; both share conftest's `reference` run. Marked slow."""

from __future__ import annotations

import json
import os

import pytest

from selftrain.store import METRICS, RunStore

from .conftest import ROOT, adapter_weights, cli, stage_tables, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow


def test_score_stats_report_the_judge_against_references(reference):
    """The synthetic questions carry references: the score stage grades the samples (diagnostic only) and its
    judge_auroc agrees with a recomputation from the stored samples, scores and questions."""
    from selftrain.diagnostics import auroc
    from selftrain.grading.grade import is_equivalent

    store = RunStore(reference)
    stats = store.manifest(0, "score").stats
    tables = stage_tables(reference)
    refs = {q["question_id"]: q["reference"].rsplit("####", 1)[-1].strip() for q in tables["questions"]}
    labels = [is_equivalent("arithmetic", r["answer"], refs[r["question_id"]]) for r in tables["score"]]
    assert stats["graded"] == len(tables["score"]) == len(tables["sample"])
    assert stats["sample_accuracy"] == round(sum(labels) / len(labels), 6)
    expected = auroc([r["score"] for r in tables["score"]], labels)
    # (the 40-step test model gets nearly everything wrong, when AUROC is undefined: the unit tests cover values)
    assert stats["judge_auroc"] == (None if expected is None else round(expected, 6))


def test_completed_run_status_and_artifacts(reference):
    proc = cli("status", str(reference))
    assert proc.returncode == 0, proc.stderr
    rows = [
        line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit() and "done" in line
    ]
    assert len(rows) == 2 and all(cell == "done" for row in rows for cell in row[1:7])
    metrics = json.loads((reference / "iter-000" / "evaluate" / METRICS).read_text())
    assert set(metrics) == {"base", "policy"} and metrics["policy"]["synthetic_arithmetic"]["n"] == 12
    # training changed the adapter: LoRA B starts at zero
    assert max(float(v.abs().max()) for k, v in adapter_weights(reference).items() if "lora_B" in k) > 0
    # iteration 1 continued from adapter 0 and changed it again
    a0, a1 = adapter_weights(reference, 0), adapter_weights(reference, 1)
    assert any(float((a0[k] - a1[k]).abs().max()) > 0 for k in a0)


def test_status_json_prints_state_and_eval_rows(reference):
    proc = cli("status", str(reference), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [it["iteration"] for it in out["state"]] == [0, 1]
    assert all(st["status"] == "done" for it in out["state"] for st in it["stages"].values())
    rows = {(r["iteration"], r["model"], r["source"]): r for r in out["eval"]}
    assert set(rows) == {
        (0, "base", "synthetic_arithmetic"),
        (0, "policy", "synthetic_arithmetic"),
        (1, "policy", "synthetic_arithmetic"),
    }
    assert all(r["n"] == 12 and 0 <= r["accuracy"] <= 1 for r in rows.values())


def test_pairs_load_with_datasets(reference):
    from datasets import load_dataset

    files = sorted(str(p) for p in (reference / "iter-000" / "pairs").glob("part-*.parquet"))
    ds = load_dataset("parquet", data_files=files, split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    assert len(ds) > 0 and all(r["chosen"] != r["rejected"] for r in ds)


@pytest.mark.parametrize("stage", ["sample", "score", "pairs", "evaluate"])
def test_stage_folders_load_with_datasets_and_pandas(stage, reference, tmp_path):
    """A completed stage folder as it is, given to datasets' parquet loader and to pandas: both read every
    non-hidden file in it, so its metadata (manifest, metrics, markers) must not be one of them."""
    import pandas as pd
    from datasets import load_dataset

    store = RunStore(reference)
    for iteration in (0, 1):
        folder = store.stage_dir(iteration, stage)
        rows = store.manifest(iteration, stage).rows
        assert rows > 0
        ds = load_dataset("parquet", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == rows
        assert len(pd.read_parquet(folder)) == rows


def test_adapter_loads_with_peft(reference, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(reference / "iter-001" / "train")
    )
    logits = model(input_ids=torch.tensor([[2, 10, 11, 12]])).logits
    assert torch.isfinite(logits).all()


def test_bad_inputs_fail_with_one_line(tmp_path, tiny_model):
    cases = {
        "missing model": (tiny_recipe(tmp_path, tmp_path / "no-model"), "model.path: no model at"),
        "no question column": (
            tiny_recipe(
                tmp_path, tiny_model, data={"train": [{"name": "file", "path": str(tmp_path / "d.jsonl")}]}
            ),
            "has no column 'question'",
        ),
        "empty dataset": (
            tiny_recipe(
                tmp_path, tiny_model, data={"train": [{"name": "file", "path": str(tmp_path / "e.jsonl")}]}
            ),
            "has no rows",
        ),
    }
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1", "answer": "2"}\n')
    (tmp_path / "e.jsonl").write_text("")
    for name, (recipe, message) in cases.items():
        recipe["run"] = {"name": name.replace(" ", "-")}
        proc = cli("run", str(write_recipe(tmp_path / f"{name}.yaml", recipe)), "--no-prefect")
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert message in lines[-1] and "Traceback" not in proc.stderr, (name, proc.stderr[-2000:])


@pytest.fixture
def restored_environ():
    """configure_prefect sets process-wide defaults and Prefect attaches its API handler to the `selftrain`
    logger: later tests must inherit neither (the handler warns on every record outside a flow run)."""
    import logging

    saved = os.environ.copy()
    logger = logging.getLogger("selftrain")
    handlers, level = list(logger.handlers), logger.level
    yield
    os.environ.clear()
    os.environ.update(saved)
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_one_iteration_under_prefect(tmp_path, tiny_model, restored_environ):
    """The DAG under a real (temporary) Prefect server, training under `accelerate launch`: the launched
    process's output reaches the train task run's logs and the metrics its artifact."""
    import asyncio

    from prefect.testing.utilities import prefect_test_harness

    from flows import configure_prefect
    from selftrain.recipes import load_config
    from selftrain.runner import run

    configure_prefect(str(tmp_path))
    recipe = tiny_recipe(tmp_path, tiny_model)
    recipe["training"]["accelerate_config"] = str(ROOT / "configs" / "accelerate" / "cpu-1proc.yaml")
    recipe = write_recipe(tmp_path / "r.yaml", recipe)
    with prefect_test_harness(server_startup_timeout=180):
        from flows.iteration import iteration

        store = run(load_config(recipe), iteration_fn=lambda r, i, rb: iteration(r, i, rb))
        task_logs, artifact = asyncio.run(_train_task_logs_and_artifact())
        published = asyncio.run(_artifacts_by_key())
    for stage in ("questions", "sample", "score", "pairs", "train", "evaluate"):
        assert store.manifest(0, stage) is not None, stage
    assert (store.stage_dir(0, "evaluate") / METRICS).exists()
    assert any("accelerate.commands.launch" in m for m in task_logs), task_logs[:20]  # the launch command
    saved = [m for m in task_logs if "adapter saved" in m]  # written by the launched rank-0 process
    assert len(saved) == 1, saved  # relayed once, not once per handler
    # the stage artifact is a table a person reads, not a JSON dump
    assert "| rewards_accuracies |" in artifact and "| processes | 1 |" in artifact
    # per iteration: the evaluation table and a summary; the flow's last artifact links to the HTML report
    assert published["t-iter-000-eval"].type == "table"
    assert (
        "greedy" in published["t-iter-000-summary"].data
        and "**Pairs**" in published["t-iter-000-summary"].data
    )
    report = store.run_dir.resolve() / "report" / "report.html"
    assert report.as_uri() in str(
        published["t-report"].data
    )  # a link artifact (Prefect stores it as markdown)
    assert report.exists()


async def _artifacts_by_key() -> dict:
    from prefect import get_client

    async with get_client() as client:
        return {a.key: a for a in await client.read_artifacts() if a.key}


async def _train_task_logs_and_artifact() -> tuple[list[str], str]:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        LogFilter,
        LogFilterTaskRunId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    async with get_client() as client:
        runs = await client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train"))
        )
        assert runs, "no train task run"
        logs = await client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])), limit=200
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="iter-000-train"))
        )
    assert artifacts, "no train artifact"
    return [log.message for log in logs], str(artifacts[0].data)


def test_export_adapter_and_merged(reference, tmp_path, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    proc = cli("export", str(reference), "--iteration", "1", "--output", str(tmp_path / "adapter"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    proc = cli("export", str(reference), "--iteration", "1", "--output", str(tmp_path / "merged"), "--merge")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids = torch.tensor([[2, 40, 41, 42]])
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))(input_ids=ids).logits
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(reference / "iter-001" / "train")
    )(input_ids=ids).logits
    assert torch.allclose(merged, peft, atol=1e-4)
    proc = cli("export", str(reference), "--iteration", "1", "--output", str(tmp_path / "merged"))
    assert proc.returncode == 2 and "already exists" in proc.stderr
