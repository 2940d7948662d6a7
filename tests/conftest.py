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

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

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
    from selftrain.config import BootstrapConfig
    from selftrain.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(
        path, BootstrapConfig(steps=40, batch_size=16, hidden_size=64, num_layers=2, num_heads=2)
    )
    return path


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
