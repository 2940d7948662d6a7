"""STaSC end to end on a tiny model: the method's six stages, SIGKILL then resume, and rerunning one stage,
as the CORE-PO chain is tested (test_e2e_recovery.py). Marked slow (seconds per run on 2 cores)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from selftrain.fileio import sha256_file
from selftrain.store import RunStore

from .conftest import ROOT, cli, resume_matches, run_fixture, status_columns, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow

STAGES = ["questions", "initial", "correct", "filter", "sft", "evaluate_correction"]
TABLES = ["questions", "initial", "correct", "filter"]


def stasc_recipe(root: Path, model: Path) -> dict:
    recipe = tiny_recipe(root, model, run={"name": "s", "iterations": 2, "seed": 0})
    del recipe["judge"]  # no judge in STaSC: the gold-based reward decides
    sampling = {"n": 2, "temperature": 0.8, "top_p": 0.95, "max_tokens": 24, "batch_size": 24}
    # in_acc and right -> right kept: enough SFT examples on a barely trained model for 4 steps each iteration
    recipe["stasc"] = {
        "initial": sampling,
        "correction": sampling,
        "reward": "in_acc",
        "only_better_correction": False,
    }
    return {"method": "stasc", **recipe}


stasc_run = run_fixture(stasc_recipe)


def test_stasc_run_writes_its_stages_and_correction_metrics(stasc_run):
    run_dir = stasc_run[0]
    store = RunStore(run_dir)
    for it in (0, 1):
        assert [st for st in STAGES if store.manifest(it, st) is not None] == STAGES
        assert not (store.iter_dir(it) / "sample").exists()  # only the method's stages
    assert store.manifest(0, "sft").stats["trained"] and store.manifest(0, "filter").rows > 0
    corrections = store.manifest(0, "correct").rows
    assert corrections == 8 * 2 * 2  # questions x initial answers x corrections
    moves = store.manifest(0, "filter").stats
    assert (
        sum(moves[k] for k in ("wrong_to_right", "right_to_wrong", "right_to_right", "wrong_to_wrong"))
        == corrections
    )
    metrics = store.manifest(0, "evaluate_correction").stats["metrics"]
    cell = metrics["policy"]["synthetic_arithmetic"]
    assert set(metrics) == {"base", "policy"} and cell["n"] == 12
    assert {"accuracy", "initial_accuracy", "wrong_to_right", "right_to_wrong"} <= set(cell)
    # iteration 1 corrects with the policy iteration 0 fine-tuned, and continues it (sft.train_from previous)
    assert store.manifest(1, "correct").upstream.keys() >= {"iter-000/sft"}
    assert "iter-000/sft" in store.manifest(1, "sft").upstream
    assert status_columns(run_dir) == STAGES


@pytest.mark.parametrize("kill_at", ["correct:shard:0", "train:step:2"])
def test_stasc_sigkill_then_resume_equals_uninterrupted(kill_at, stasc_run, tmp_path, tiny_model):
    """`train:step:N` kills any trainer stage at step N: here the sft stage."""
    recipe = stasc_recipe(tmp_path / "killed", tiny_model)
    resume_matches(recipe, tmp_path, kill_at, "sft", stasc_run[0], TABLES)


def test_stasc_rerun_one_stage_redoes_what_reads_it(stasc_run, tmp_path):
    run_dir = tmp_path / "runs" / "s"
    shutil.copytree(stasc_run[0], run_dir)
    store = RunStore(run_dir)
    before = {st: [sha256_file(p) for p in sorted(store.stage_dir(1, st).glob("part-*"))] for st in TABLES}
    ids = {(it, st): store.manifest(it, st).output_id for it in (0, 1) for st in STAGES}
    proc = cli("rerun", str(run_dir), "--iteration", "1", "--stage", "filter", "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {st: [sha256_file(p) for p in sorted(store.stage_dir(1, st).glob("part-*"))] for st in TABLES}
    assert after == before  # the filter is deterministic: same rows
    redone = {st for st in STAGES if store.manifest(1, st).output_id != ids[(1, st)]}
    assert redone == {"filter", "sft", "evaluate_correction"}, redone
    assert all(store.manifest(0, st).output_id == ids[(0, st)] for st in STAGES)  # iteration 0 untouched
    assert list(store.iter_dir(1).glob("filter.stale-*")) and list(store.iter_dir(1).glob("sft.stale-*"))
    proc = cli("rerun", str(run_dir), "--iteration", "1", "--stage", "score", "--no-prefect")
    assert proc.returncode == 2 and "method stasc has no score stage" in proc.stderr, proc.stderr[-2000:]


def test_stasc_sft_under_accelerate_launch(tmp_path, tiny_model):
    """The sft stage goes through `accelerate launch` as the train stage does (selftrain.training.launch)."""
    recipe = stasc_recipe(tmp_path, tiny_model)
    recipe["run"]["iterations"] = 1
    recipe["training"]["accelerate_config"] = str(ROOT / "configs" / "accelerate" / "cpu-1proc.yaml")
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerate.commands.launch" in proc.stderr and "selftrain.training.launch" in proc.stderr
    stats = RunStore(tmp_path / "runs" / "s").manifest(0, "sft").stats
    assert stats["processes"] == 1 and stats["trained"], stats
