"""Helpers shared by the benchmarks: a tiny model (or a real one, --model), a prepared run folder, child processes
with peak RSS."""

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


def ensure_tiny_model() -> Path:
    """The demo's tiny model if built (make demo), else a quickly pre-trained one in a temp folder."""
    from selftrain.config import BootstrapConfig
    from selftrain.recipes import load_config
    from selftrain.tiny import ensure_model

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    path = ROOT / cfg.model.path
    if (path / "config.json").exists():
        return path
    quick = Path(tempfile.gettempdir()) / "selftrain-bench-tiny"
    ensure_model(str(quick), BootstrapConfig(steps=150, batch_size=32, num_heads=2))
    return quick


TINY_RECIPE = ROOT / "configs" / "tiny-cpu.yaml"
# a real chat model runs on this recipe's settings: core_po template with prompt.one_shot, arithmetic_words
# add1,mul1, bf16 weights and training, the vLLM engine arguments (max_model_len, KV cache, chunked prefill auto)
CHAT_RECIPE = ROOT / "configs" / "smollm2-core-po.yaml"


def bench_model(path: str | None) -> tuple[Path, Path]:
    """(model folder, recipe its runs start from) for a bench's --model: the tiny model on tiny-cpu.yaml when
    None (what the benches always ran), else that folder on smollm2-core-po.yaml's settings when its tokenizer
    has a chat template, or on tiny-cpu.yaml's (the `plain` template) when it has none."""
    if path is None:
        return ensure_tiny_model(), TINY_RECIPE
    model = Path(path).resolve()
    if not (model / "config.json").exists():
        raise SystemExit(f"--model {path}: no config.json there (a Hugging Face model folder is needed)")
    from transformers import AutoTokenizer

    chat = bool(getattr(AutoTokenizer.from_pretrained(str(model)), "chat_template", None))
    return model, CHAT_RECIPE if chat else TINY_RECIPE


def model_overrides(model: Path, recipe: Path) -> list[str]:
    """The config overrides that point `recipe` at `model` (no bootstrap, no fetch)."""
    out = [f"model.path={model}", "model.bootstrap=null"]
    if recipe != TINY_RECIPE:
        out.append("model.fetch=null")
    return out


def run_child(module: str, *args: str, env: dict | None = None) -> tuple[float, int, str]:
    """Run `python -m module args` in a fresh process; (wall seconds, peak RSS of its whole process tree in
    MiB, stdout). The tree is polled every 0.1 s, since vLLM's engine core is a separate process."""
    import threading

    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    peak = [0]

    def poll() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    watcher.join()
    if proc.returncode != 0:
        sys.stderr.write(err[-4000:])
        raise SystemExit(f"{module} failed with exit code {proc.returncode}")
    return wall, peak[0] // (1 << 20), out


def dispatch(marker: str, child, main) -> None:  # noqa: ANN001
    """`python -m bench.X MARKER args` runs the child role (a baseline or worker process), else `main`."""
    if len(sys.argv) > 1 and sys.argv[1] == marker:
        sys.argv = sys.argv[1:]
        child()
    else:
        main()


def emit(result: dict) -> None:
    """A child's result line; engines print their own chatter to stdout too."""
    print("BENCH_JSON " + json.dumps(result), flush=True)


def parse(stdout: str) -> dict:
    return json.loads(
        next(line for line in reversed(stdout.splitlines()) if line.startswith("BENCH_JSON "))[11:]
    )


def prepare_run(root: Path, overrides: list[str], recipe: Path = TINY_RECIPE) -> Path:
    """A run folder with config.yaml (`recipe` with `overrides`) and a complete questions stage."""
    from selftrain.pipeline import execute_stage
    from selftrain.recipes import load_config
    from selftrain.runner import prepare
    from selftrain.store import RunStore

    cfg = load_config(recipe, [f"store.root={root}", *overrides])
    store = RunStore(cfg.run_dir())
    with store.lock():
        prepare(cfg, store, rebuild_stale=False)
        execute_stage(cfg, store, 0, "questions")
    return store.run_dir


def manifest(run_dir: Path, folder: str) -> dict:
    from selftrain.store import MANIFEST, marker

    return json.loads(marker(run_dir / "iter-000" / folder, MANIFEST).read_text())


def sample_stage_ab(
    prefix: str, variants: dict[str, list[str]], questions: int, recipe: Path, extra: list[str]
) -> dict[str, dict]:
    """The sample stage of `recipe` on the same `questions`, once per variant (its --set overrides), each in a
    fresh process, one after the other: name -> {"stats": the manifest's stats, "completions": {(question_id,
    sample_index): text}}. Prints one line per variant."""
    import tempfile

    from selftrain.store import read_stage

    root = Path(tempfile.mkdtemp(prefix=f"selftrain-bench-{prefix}-"))
    runs: dict[str, dict] = {}
    for name, overrides in variants.items():
        run_dir = prepare_run(
            root,
            [f"run.name={name}", f"data.questions_per_iteration={questions}", *overrides, *extra],
            recipe,
        )
        wall, peak, _ = run_child("selftrain.stages", str(run_dir), "0", "sample")
        stats = manifest(run_dir, "sample")["stats"]
        rows = read_stage(run_dir / "iter-000" / "sample").to_pylist()
        runs[name] = {
            "stats": stats,
            "completions": {(r["question_id"], r["sample_index"]): r["completion"] for r in rows},
        }
        print(
            f"{name}: {stats['samples']} samples, {stats['mean_tokens']} tokens on average, "
            f"sampling {stats['sampling_s']:.1f} s, engine start {stats['engine_load_s']:.1f} s, "
            f"stage wall {wall:.1f} s, peak RSS {peak} MiB",
            flush=True,
        )
    return runs


def same_completions(a: dict, b: dict) -> str:
    """'k/n': how many of b's completions a has byte for byte."""
    return f"{sum(a.get(key) == text for key, text in b.items())}/{len(b)}"
