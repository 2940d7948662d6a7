"""Chaos bench: SIGKILL a whole run at random moments, rerun the same command, compare with an uninterrupted run.

    .venv/bin/python bench/chaos.py --trials 20 [--prefect-trials K] [--engine hf|vllm] [--seed S] [--no-accelerate]

A reference run of a small recipe (the tiny model, 2 iterations, training under `accelerate launch` unless
--no-accelerate) is timed; then each trial starts the same command, SIGKILLs its whole process tree at a moment
drawn uniformly over the reference duration (so every stage is hit, training included), runs the same command
again to completion, and compares every table (content) and every adapter (max difference <= 1e-5) with the
reference, looks for processes of the trial still alive and for files in the run folder that the reference run
does not have (temp files of a write cut short, a lock). --prefect-trials K runs K of the trials (spread evenly)
through Prefect, the temporary local server being part of the killed tree; their kill moment is drawn over a
Prefect reference run's duration. Ends with a table of where the kills landed and
`RESULT trials=N identical=K orphans=M strays=S`, then one such line for each of the two ways of running.
A trial that ends before its kill moment was an uninterrupted run: later moments are drawn over its duration
when it was shorter than the reference's (a reference timed while the machine was busier).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, ensure_tiny_model  # noqa: E402

TABLES = ["questions", "sample", "score", "pairs", "evaluate"]
TAG = "SELFTRAIN_CHAOS_TAG"  # in every process of a trial's tree: how orphans are found after the kill


def recipe(root: Path, model: Path, engine: str, accelerate: bool) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "tiny-cpu.yaml").read_text())
    cfg["run"] = {"name": "chaos", "iterations": 2, "seed": 0}
    cfg["model"] = {"path": str(model)}  # built already: no bootstrap section
    cfg["data"].update(questions_per_iteration=32, shard_size=8)
    cfg["data"]["eval"][0]["limit"] = 48
    cfg["training"].update(per_device_batch_size=4, save_steps=2, logging_steps=1)
    if accelerate:
        cfg["training"]["accelerate_config"] = str(ROOT / "configs" / "accelerate" / "cpu-1proc.yaml")
    cfg["engine"] = {"name": engine, "isolation": "auto" if engine == "vllm" else "inline"}
    cfg["store"] = {"root": str(root)}
    path = root / "recipe.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start(config: Path, tag: str, prefect: bool = False) -> subprocess.Popen:
    env = {**os.environ, TAG: tag, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.Popen(
        [sys.executable, "-m", "selftrain.cli", "run", str(config), *([] if prefect else ["--no-prefect"])],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def tagged(tag: str) -> list:
    """Live processes carrying this trial's tag (the run and everything it started, in any session)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(TAG) == tag and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def kill_tree(tag: str) -> None:
    """SIGKILL every process of the trial at once, as a machine failure would."""
    for p in tagged(tag):
        try:
            p.send_signal(signal.SIGKILL)
        except Exception:  # noqa: BLE001 - gone already
            pass


def landed(run_dir: Path) -> str:
    """Where the kill landed: the first stage without a manifest (`train+accelerate` while launched)."""
    from selftrain.methods import PREFERENCE_STAGES as STAGES
    from selftrain.store import RunStore

    store = RunStore(run_dir)
    if not store.config_path.exists():
        return "start-up"
    for it in range(2):
        for stage in STAGES:
            if store.manifest(it, stage) is None:
                return f"iter-{it}/{stage}"
    return "finished"


def snapshot(run_dir: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    from selftrain.store import RunStore, read_stage

    store = RunStore(run_dir)
    tables, adapters = {}, {}
    for it in range(2):
        for stage in TABLES:
            tables[(it, stage)] = read_stage(store.stage_dir(it, stage)).to_pylist()
        adapters[it] = load_file(str(store.stage_dir(it, "train") / "adapter_model.safetensors"))
    return tables, adapters


def same(a: tuple[dict, dict], b: tuple[dict, dict]) -> list[str]:
    diffs = [f"iter-{it}/{st}" for (it, st) in a[0] if a[0][(it, st)] != b[0][(it, st)]]
    for it, ref in a[1].items():
        got = b[1][it]
        if ref.keys() != got.keys() or any(float((ref[k] - got[k]).abs().max()) > 1e-5 for k in ref):
            diffs.append(f"iter-{it}/adapter")
    return diffs


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def strays(run_dir: Path, reference: set[str]) -> list[str]:
    """Files a finished trial has that the uninterrupted reference run does not (left by the kill)."""
    return sorted(files(run_dir) - reference)


def run_to_end(config: Path, tag: str, prefect: bool = False) -> float:
    t0 = time.monotonic()
    proc = start(config, tag, prefect)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{err[-3000:]}")
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-accelerate", action="store_true", help="train in-process instead")
    parser.add_argument(
        "--prefect-trials", type=int, default=0, help="how many trials run through Prefect (default 0)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    model = ensure_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="selftrain-chaos-"))
    accelerate = not args.no_accelerate
    ref_config = recipe(work / "reference", model, args.engine, accelerate)
    duration = {False: run_to_end(ref_config, "reference")}
    ref_run = work / "reference" / "runs" / "chaos"
    reference, ref_files = snapshot(ref_run), files(ref_run)
    print(f"reference run: {duration[False]:.1f} s ({work})", flush=True)
    if args.prefect_trials:
        config = recipe(work / "reference-prefect", model, args.engine, accelerate)
        duration[True] = run_to_end(config, "reference-prefect", prefect=True)
        diffs = same(reference, snapshot(work / "reference-prefect" / "runs" / "chaos"))
        print(
            f"reference run through Prefect: {duration[True]:.1f} s; differs in {diffs or 'nothing'}",
            flush=True,
        )
    # K Prefect trials spread evenly over the N
    with_prefect = {round(i * args.trials / args.prefect_trials) for i in range(args.prefect_trials)}

    places: Counter[str] = Counter()
    counts = {mode: Counter() for mode in (False, True)}
    started = time.monotonic()
    for trial in range(args.trials):
        tag = f"trial-{trial}"
        prefect = trial in with_prefect
        root = work / tag
        config = recipe(root, model, args.engine, accelerate)
        at = rng.uniform(0, duration[prefect])
        t0 = time.monotonic()
        proc = start(config, tag, prefect)
        try:
            proc.wait(timeout=at)
            where = "ended before kill"  # this run was faster than the reference
            # a reference timed under heavier load wastes every later trial whose moment falls past the end:
            # draw the next ones over this whole (uninterrupted) run instead
            duration[prefect] = min(duration[prefect], time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            where = landed(root / "runs" / "chaos")
            kill_tree(tag)
            proc.wait()
        time.sleep(0.5)
        left = len(tagged(tag))  # processes that survived the kill (would hold memory, GPUs, the lock)
        run_to_end(config, tag, prefect)
        time.sleep(0.5)
        left += len(tagged(tag))  # and any the resumed run left behind
        diffs = same(reference, snapshot(root / "runs" / "chaos"))
        stray = strays(root / "runs" / "chaos", ref_files)
        counts[prefect].update(trials=1, identical=not diffs, orphans=left, strays=len(stray))
        places[where] += 1
        verdict = "identical" if not diffs else "DIFFERS: " + ", ".join(diffs)
        print(
            f"trial {trial:>3} ({'prefect' if prefect else 'plain'}): kill at {at:6.1f} s in {where:<18} -> "
            f"{verdict}; orphans {left}; stray files {len(stray)}{' ' + str(stray[:5]) if stray else ''}",
            flush=True,
        )

    print(f"\nkills landed ({args.trials} trials, {time.monotonic() - started:.0f} s):")
    for where, n in sorted(places.items()):
        print(f"  {where:<20} {n}")
    total = counts[False] + counts[True]

    def result(c: Counter) -> str:
        return f"trials={c['trials']} identical={c['identical']} orphans={c['orphans']} strays={c['strays']}"

    print(f"RESULT {result(total)}")
    for mode, name in ((False, "--no-prefect"), (True, "prefect")):
        if counts[mode]["trials"]:
            print(f"  {name:<12} {result(counts[mode])}")


if __name__ == "__main__":
    main()
