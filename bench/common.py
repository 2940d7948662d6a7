"""Helpers shared by the benchmarks: a tiny model, a prepared run folder, child processes with peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSS_WRAPPER = """
import resource, runpy, sys, json
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code or 0
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_RSS_KB", max(me, kids), file=sys.stderr)
sys.exit(code)
"""


def ensure_tiny_model() -> Path:
    """The demo's tiny model if built (make demo), else a quickly pre-trained one in a temp folder."""
    from selftrain.config import BootstrapConfig, load_config
    from selftrain.tiny import ensure_model

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    path = ROOT / cfg.model.path
    if (path / "config.json").exists():
        return path
    quick = Path(tempfile.gettempdir()) / "selftrain-bench-tiny"
    ensure_model(str(quick), BootstrapConfig(steps=150, batch_size=32, num_heads=2))
    return quick


def run_child(module: str, *args: str, env: dict | None = None) -> tuple[float, int, str]:
    """Run `python -m module args` in a fresh process; (wall seconds, peak RSS in MiB incl. its children, stdout)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, module, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{module} failed with exit code {proc.returncode}")
    rss = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return wall, rss // 1024, proc.stdout


def emit(result: dict) -> None:
    """A child's result line; engines print their own chatter to stdout too."""
    print("BENCH_JSON " + json.dumps(result), flush=True)


def parse(stdout: str) -> dict:
    return json.loads(
        next(line for line in reversed(stdout.splitlines()) if line.startswith("BENCH_JSON "))[11:]
    )


def prepare_run(root: Path, overrides: list[str]) -> Path:
    """A run folder with config.yaml and a complete questions stage."""
    from selftrain.config import load_config
    from selftrain.pipeline import execute_stage
    from selftrain.runner import prepare
    from selftrain.store import RunStore

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", [f"store.root={root}", *overrides])
    store = RunStore(cfg.run_dir())
    with store.lock():
        prepare(cfg, store, rebuild_stale=False)
        execute_stage(cfg, store, 0, "questions")
    return store.run_dir


def manifest(run_dir: Path, folder: str) -> dict:
    return json.loads((run_dir / "iter-000" / folder / "_manifest.json").read_text())
