"""End to end on a tiny model: real transformers sampling and judging, real TRL/PEFT training, real Parquet,
real SIGKILLs. Marked slow (about a minute each on 2 cores)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from selftrain.store import DAMAGED, MANIFEST, METRICS, RunStore, read_stage, sha256_file

from .conftest import ROOT, cli, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow

COMPARED = ["questions", "sample", "score", "pairs"]


def _tables(run_dir: Path, iteration: int = 0) -> dict:
    store = RunStore(run_dir)
    return {st: read_stage(store.stage_dir(iteration, st)).to_pylist() for st in COMPARED}


def _adapter(run_dir: Path, iteration: int = 0) -> dict:
    from safetensors.torch import load_file

    return load_file(str(RunStore(run_dir).stage_dir(iteration, "train") / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model):
    """An uninterrupted 2-iteration run."""
    root = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(root / "r.yaml", tiny_recipe(root, tiny_model, run={"name": "t", "iterations": 2}))
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = root / "runs" / "t"
    # stdout carries the result only (training's loss dicts and library warnings go to stderr)...
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run folder: {run_dir}" and lines[1].split()[:3] == ["iteration", "model", "source"]
    # the accuracy table (3 rows), a blank line, the per-iteration table with changes from base (header + 3
    # rows), then the report's path: `run` writes RUN/report/report.html at the end
    assert len(lines) == 2 + 3 + 2 + 3 + 1, proc.stdout
    assert all(line.split()[0].isdigit() for line in lines[2:5] + lines[7:-1]), proc.stdout
    assert lines[5] == "" and lines[6].split()[:2] == ["iteration", "model"], proc.stdout
    assert lines[-1].startswith("report: ") and lines[-1].endswith("report.html"), proc.stdout
    # ...and the config is logged in full once per run, not once per stage
    assert (
        proc.stderr.count("data.questions_per_iteration") == 0
        and proc.stderr.count("questions_per_iteration: 8") == 1
    )
    assert RunStore(run_dir).manifest(0, "pairs").rows > 0, "the tiny test model made no pairs"
    return run_dir


def _copy(reference: Path, tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """A copy of the reference run and a recipe pointing at it."""
    root = tmp_path / "copy"
    shutil.copytree(reference, root / "runs" / "t")
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(root, tiny_model, run={"name": "t", "iterations": 2})
    )
    return root / "runs" / "t", recipe


def test_score_stats_report_the_judge_against_references(reference):
    """The synthetic questions carry references: the score stage grades the samples (diagnostic only) and its
    judge_auroc agrees with a recomputation from the stored samples, scores and questions."""
    from selftrain.diagnostics import auroc
    from selftrain.grading.grade import is_equivalent

    store = RunStore(reference)
    stats = store.manifest(0, "score").stats
    tables = _tables(reference)
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
    metrics = json.loads((reference / "iter-000" / "eval" / METRICS).read_text())
    assert set(metrics) == {"base", "policy"} and metrics["policy"]["synthetic_arithmetic"]["n"] == 12
    # training changed the adapter: LoRA B starts at zero
    assert max(float(v.abs().max()) for k, v in _adapter(reference).items() if "lora_B" in k) > 0
    # iteration 1 continued from adapter 0 and changed it again
    a0, a1 = _adapter(reference, 0), _adapter(reference, 1)
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
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(reference / "iter-001" / "policy")
    )
    logits = model(input_ids=torch.tensor([[2, 10, 11, 12]])).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kill_at", ["sample:shard:0", "score:shard:1", "train:step:2"])
def test_sigkill_then_resume_equals_uninterrupted(kill_at, reference, tmp_path, tiny_model):
    root = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(root, tiny_model))
    run_dir = root / "runs" / "t"
    proc = cli("run", str(recipe), "--no-prefect", env={"SELFTRAIN_KILL_AT": kill_at})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    stage = kill_at.split(":")[0]
    status = cli("status", str(run_dir)).stdout
    assert "partial" in status, status
    stage_dir = RunStore(run_dir).stage_dir(0, stage)
    kept = {p.name: p.stat().st_mtime_ns for p in stage_dir.glob("part-*.parquet")}
    ckpts = (
        sorted(p.name for p in (stage_dir / "checkpoints").glob("checkpoint-*")) if stage == "train" else []
    )

    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # finished shards were reused, not redone
    assert {p: (stage_dir / p).stat().st_mtime_ns for p in kept} == kept
    if stage == "train":
        assert ckpts == ["checkpoint-2"]
        manifest = json.loads((stage_dir / MANIFEST).read_text())
        assert manifest["stats"]["resumed_from"] == "checkpoint-2" and manifest["stats"]["steps"] == 4
        ref, got = _adapter(reference), _adapter(run_dir)
        assert all(float((ref[k] - got[k]).abs().max()) < 1e-5 for k in ref)
    assert _tables(run_dir) == _tables(reference)


def test_rerun_score_keeps_upstream_and_marks_later_stale(reference, tmp_path, tiny_model):
    run_dir, _ = _copy(reference, tmp_path, tiny_model)
    store = RunStore(run_dir)
    before = {
        st: [sha256_file(p) for p in sorted(store.stage_dir(0, st).glob("part-*"))]
        for st in ("questions", "sample")
    }
    ids = {st: store.manifest(0, st).output_id for st in ("score", "pairs", "train", "evaluate")}
    proc = cli("rerun", str(run_dir), "--iteration", "0", "--stage", "score", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {
        st: [sha256_file(p) for p in sorted(store.stage_dir(0, st).glob("part-*"))]
        for st in ("questions", "sample")
    }
    assert after == before
    for st, old in ids.items():
        assert store.manifest(0, st).output_id != old, st
    assert list((run_dir / "iter-000").glob("scores.stale-*")) and list(
        (run_dir / "iter-000").glob("policy.stale-*")
    )
    assert "iter-001/sample" in proc.stdout
    status = cli("status", str(run_dir)).stdout
    assert "iter-001/sample stale: upstream iter-000/train was rebuilt" in status


def test_rerun_every_stage_at_iteration_1_and_evaluate_at_0(reference, tmp_path, tiny_model):
    """Rerun's upstream check must not read a policy (adapter files, no shards) as a table: evaluate's upstream
    is always a policy, and sample/score/train at iteration >= 1 read the previous iteration's policy."""
    from selftrain.runner import rerun
    from selftrain.store import STAGES

    run_dir, _ = _copy(reference, tmp_path, tiny_model)
    store = RunStore(run_dir)
    # README's example through the real CLI, once; the other stages in-process (same code path, no imports)
    proc = cli("rerun", str(run_dir), "--iteration", "1", "--stage", "score", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for iteration, stage in [(0, "evaluate"), *((1, s) for s in reversed(STAGES))]:
        old = store.manifest(iteration, stage).output_id
        assert rerun(store, iteration, stage) == [], (iteration, stage)
        assert store.manifest(iteration, stage).output_id != old, (iteration, stage)
    for stage in STAGES:
        assert store.manifest(1, stage) is not None, stage
    status = cli("status", str(run_dir))
    assert status.returncode == 0 and "stale" not in status.stdout, status.stdout


def _status_rows(run_dir: Path) -> dict[str, list[str]]:
    out = cli("status", str(run_dir)).stdout
    states = {"done", "damaged", "stale", "partial", "failed", "missing", "blocked"}
    rows = [ln.split() for ln in out.splitlines() if ln[:9].strip().isdigit()]
    return {cells[0]: cells[1:7] for cells in rows if set(cells[1:7]) <= states}


def test_damaged_stages_reported_by_status_and_verify_and_repaired(reference, tmp_path, tiny_model):
    """A truncated shard of a complete stage is `damaged` in status (sizes) and stops `run`; a same-size bit
    flip only `verify` (sha256) finds: it marks the stage, names the rerun that repairs it, and unmarks a stage
    repaired by hand."""
    run_dir, recipe = _copy(reference, tmp_path, tiny_model)
    truncated = run_dir / "iter-000" / "samples" / "part-00001.parquet"
    original = truncated.read_bytes()
    truncated.write_bytes(original[:-100])
    flipped = run_dir / "iter-001" / "pairs" / "part-00000.parquet"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))

    status = cli("status", str(run_dir))
    assert status.returncode == 0, status.stderr[-2000:]
    rows = _status_rows(run_dir)
    assert rows["0"][1] == "damaged" and rows["1"][3] == "done", status.stdout  # sizes only: the flip unseen
    assert "part-00001.parquet has" in status.stdout and "selftrain verify" in status.stdout

    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "iter-000/sample is damaged" in last and "--iteration 0 --stage sample" in last, last

    proc = cli("verify", str(run_dir))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "iter-000/sample damaged" in proc.stdout, proc.stdout
    assert "iter-001/pairs damaged: part-00000.parquet: sha256" in proc.stdout, proc.stdout
    assert f"selftrain rerun {run_dir} --iteration 0 --stage sample" in proc.stdout
    assert f"selftrain rerun {run_dir} --iteration 1 --stage pairs" in proc.stdout
    assert _status_rows(run_dir)["1"][3] == "damaged"  # marked by verify

    proc = cli("rerun", str(run_dir), "--iteration", "1", "--stage", "pairs", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    truncated.write_bytes(original)  # repaired by hand
    proc = cli("verify", str(run_dir))
    assert proc.returncode == 0 and "0 damaged" in proc.stdout, proc.stdout
    assert not [
        p for p in run_dir.glob(f"iter-*/*/{DAMAGED}") if "." not in p.parent.name
    ]  # (moved aside: kept)
    assert all(cell == "done" for row in _status_rows(run_dir).values() for cell in row)


def test_run_folder_with_legacy_manifest_names_is_complete(reference, tmp_path, tiny_model):
    """A run folder written before the dot prefix (`_manifest.json`): status, verify and run see it complete,
    as it is (nothing redone, nothing renamed)."""
    from selftrain.store import LEGACY

    run_dir, recipe = _copy(reference, tmp_path, tiny_model)
    manifests = sorted(run_dir.glob(f"iter-*/*/{MANIFEST}"))
    assert len(manifests) == 2 * 6
    for path in manifests:
        os.replace(path, path.with_name(LEGACY[MANIFEST]))
    assert all(cell == "done" for row in _status_rows(run_dir).values() for cell in row)
    proc = cli("verify", str(run_dir))
    assert proc.returncode == 0 and "0 damaged" in proc.stdout, proc.stdout
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(run_dir.glob(f"iter-*/*/{MANIFEST}")) and not list(run_dir.glob("iter-*/*.replaced-*"))
    assert _tables(run_dir, 1) == _tables(reference, 1)


def test_changed_key_makes_stage_stale_and_nothing_is_deleted(reference, tmp_path, tiny_model):
    run_dir, recipe = _copy(reference, tmp_path, tiny_model)
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    proc = cli("run", str(recipe), "--no-prefect", "--set", "sampling.temperature=0.7")
    assert proc.returncode == 2
    assert "iter-000/sample is stale (sampling.temperature: 0.8 -> 0.7)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) == files


def test_second_concurrent_run_is_refused(reference, tmp_path, tiny_model):
    run_dir, recipe = _copy(reference, tmp_path, tiny_model)
    with RunStore(run_dir).lock():
        proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2 and "is in use by pid" in proc.stderr, proc.stderr


def test_corrupt_shard_is_named_and_store_left_intact(reference, tmp_path, tiny_model):
    run_dir, _ = _copy(reference, tmp_path, tiny_model)
    shard = run_dir / "iter-000" / "samples" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-40] + b"\0" * 40)
    proc = cli("show", str(shard.parent))
    assert proc.returncode == 2 and "corrupt shard" in proc.stderr and "part-00000.parquet" in proc.stderr
    proc = cli("rerun", str(run_dir), "--iteration", "0", "--stage", "score", "--no-prefect")
    assert proc.returncode == 2 and "part-00000.parquet" in proc.stderr, proc.stderr
    assert (run_dir / "iter-000" / "scores" / MANIFEST).exists()  # nothing moved aside


def test_corrupt_pairs_shard_stops_train_with_one_line(reference, tmp_path, tiny_model):
    """Train reads its pairs through the store (sha256 checked): a damaged shard is named in one line, exit 2,
    and nothing is moved or written."""
    run_dir, recipe = _copy(reference, tmp_path, tiny_model)
    shard = run_dir / "iter-001" / "pairs" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-40] + b"\0" * 40)
    for stage in ("policy", "eval"):  # train (and so evaluate) must run again
        (run_dir / "iter-001" / stage).rename(run_dir / "iter-001" / f"{stage}.aside")
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "corrupt shard" in last and "iter-001/pairs/part-00000.parquet" in last, last
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) == files


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
    from selftrain.config import load_config
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
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(reference / "iter-001" / "policy")
    )(input_ids=ids).logits
    assert torch.allclose(merged, peft, atol=1e-4)
    proc = cli("export", str(reference), "--iteration", "1", "--output", str(tmp_path / "merged"))
    assert proc.returncode == 2 and "already exists" in proc.stderr
