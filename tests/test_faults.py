"""Faults a user meets, each a one-line error with exit code 2 and the store intact (subprocess tests where
that is the behaviour: the CLI boundary is what turns an exception into one line). Fast: no model is trained."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path

import pytest

from selftrain.store import MANIFEST

from .conftest import ROOT, cli, small_bootstrap, tiny_recipe, write_recipe


def _one_line(proc, message: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # (progress logs may precede it on stderr; the error itself is the last line, and the only one)
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("selftrain: error:")]
    assert errors == lines[-1:] and message in errors[0], proc.stderr[-2000:]


def test_model_path_that_is_a_file_is_refused_at_once(tmp_path):
    """Not a 4-minute pre-training into a file's name followed by NotADirectoryError."""
    model = tmp_path / "model.bin"
    model.write_bytes(b"not a model")
    recipe = tiny_recipe(tmp_path, model)
    recipe["model"]["bootstrap"] = {"steps": 5000}
    proc = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--no-prefect", timeout=120)
    _one_line(proc, f"model.path: {model} is a file, not a model folder")
    assert model.read_bytes() == b"not a model"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.bin")]


def test_model_folder_without_a_model_is_refused(tmp_path):
    from selftrain.config import BootstrapConfig, ConfigError
    from selftrain.tiny import ensure_model

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is a folder without a model in it"):
        ensure_model(str(tmp_path / "m"), BootstrapConfig(steps=1))


def test_missing_model_built_only_with_a_bootstrap_section_and_said(tmp_path, caplog):
    from selftrain.tiny import ensure_model

    with pytest.raises(FileNotFoundError, match="no model.bootstrap section"):
        ensure_model(str(tmp_path / "none"), None)
    assert not (tmp_path / "none").exists()
    boot = small_bootstrap(steps=1, batch_size=2, hidden_size=16, num_layers=1)
    with caplog.at_level(logging.INFO, logger="selftrain.tiny"):
        ensure_model(str(tmp_path / "built"), boot)
    assert (tmp_path / "built" / "config.json").exists()
    assert any("building the tiny model there" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"]  # no temp folder left


# --- one line, exit 2, for faults of the machine and of the files given ------------------------------------

NOT_UTF8 = "question: caf\xe9\n".encode("latin-1")


def _fake_model(tmp_path: Path) -> Path:
    """Enough for the checks before the first stage (questions never loads the model)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


def _recipe(tmp_path: Path, **sections) -> Path:
    recipe = tiny_recipe(tmp_path, _fake_model(tmp_path), **sections)
    return write_recipe(tmp_path / "r.yaml", recipe)


def test_non_utf8_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"run:\n  name: t\n# " + NOT_UTF8)
    _one_line(cli("run", str(recipe), "--no-prefect"), f"{recipe}: not UTF-8 text (byte 0xe9 at line 3")


def test_non_utf8_questions_file(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_bytes(b'{"question": "1+1", "answer": "2"}\n' + NOT_UTF8)
    recipe = _recipe(tmp_path, data={"train": [{"name": "file", "path": str(data)}]})
    _one_line(cli("run", str(recipe), "--no-prefect"), f"{data}: not UTF-8 text (byte 0xe9 at line 2")


def test_non_utf8_and_corrupt_grade_input(tmp_path):
    data = tmp_path / "g.jsonl"
    data.write_bytes(b'{"c": "#### 2", "r": "2"}\n' + NOT_UTF8)
    args = ["--completion-field", "c", "--reference-field", "r"]
    _one_line(cli("grade", "arithmetic", str(data), *args), f"{data}: not UTF-8 text")
    bad = tmp_path / "g.parquet"
    bad.write_bytes(b"PAR1 not really")
    _one_line(cli("grade", "arithmetic", str(bad), *args), f"{bad}: not a readable parquet file")


def test_status_into_a_closed_pipe(tmp_path):
    """`selftrain status RUN | head`: the reader is gone; no BrokenPipeError traceback, no error line."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(_recipe(tmp_path).read_text())
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the first write: deterministic, unlike a real `| head`
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "selftrain.cli", "status", str(run_dir)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 141, (proc.returncode, proc.stderr[-2000:])


def _cli_with_fault(fault: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI with `pyarrow.parquet.write_table` failing as the OS would (e.g. ENOSPC once the disk is full)."""
    import subprocess
    import sys

    code = (
        "import errno, os, sys, pyarrow.parquet as pq\n"
        "def fail(table, where, *a, **k):\n"
        f"    raise OSError(errno.{fault}, os.strerror(errno.{fault}), str(where))\n"
        "pq.write_table = fail\n"
        "from selftrain.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.mark.parametrize("fault, message", [("ENOSPC", "disk full at "), ("EROFS", "read-only file system")])
def test_write_fault_in_a_stage_is_one_line_and_resumable(tmp_path, fault, message):
    recipe = _recipe(tmp_path)
    run_dir = tmp_path / "runs" / "t"
    proc = _cli_with_fault(fault, "run", str(recipe), "--no-prefect")
    _one_line(proc, message)
    assert "run the same command again to resume" in proc.stderr
    questions = run_dir / "iter-000" / "questions"
    assert not (run_dir / ".lock").exists() and not list(questions.glob(".*tmp*"))
    # the disk has room again: the stage completes (run alone: the fake model stops a whole run at sample)
    proc = cli("-v", "status", str(run_dir))
    assert proc.returncode == 0 and "failed" in proc.stdout, proc.stdout
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "selftrain.stages", str(run_dir), "0", "questions"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0 and (questions / MANIFEST).exists(), done.stderr[-2000:]


def _mount_tmpfs(where: Path, size: str) -> None:
    import subprocess

    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the injected-fault tests cover the same path")


def _umount(where: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(where)], check=False)


def test_real_full_disk_and_read_only_folder(tmp_path):
    """On a real 1 MiB tmpfs: full, the run says so in one line and leaves no lock; read-only, the same."""
    import subprocess

    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        recipe = _recipe(tmp_path, store={"root": str(disk)})
        filler = disk / "filler"
        with open(filler, "wb") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        proc = cli("run", str(recipe), "--no-prefect")
        _one_line(proc, "No space left on device")
        assert not (disk / "runs" / "t" / ".lock").exists()
        filler.unlink()
        (disk / "runs" / "t").mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        proc = cli("run", str(recipe), "--no-prefect")
        _one_line(proc, "Read-only file system")
    finally:
        _umount(disk)


def test_train_reads_pairs_through_the_checked_reader(tmp_path):
    """A damaged pairs shard is a one-line StoreError naming it, not an ArrowInvalid from `datasets` (or, for a
    shard still parseable, silently training on changed data)."""
    from selftrain.config import Config
    from selftrain.schemas import PAIRS
    from selftrain.stages.common import StageInputs
    from selftrain.stages.train import prepare_train
    from selftrain.store import Manifest, RunStore, StageWriter, StoreError, write_manifest, write_shard

    store = RunStore(tmp_path / "run")
    d = store.stage_dir(0, "pairs")
    StageWriter(d, "fp")
    row = {"question_id": "q", "prompt": "p", "chosen": "c", "rejected": "r"}
    info = write_shard(d, 0, [{**row, "chosen_score": 1.0, "rejected_score": 0.0}], PAIRS)
    write_manifest(d, Manifest(stage="pairs", iteration=0, fingerprint="fp", output_id="o", shards=[info]))
    inputs = StageInputs(store, 0, "train", "fp2", {}, {})
    pairs, init = prepare_train(Config(), inputs)
    assert pairs.num_rows == 1 and init is None
    shard = d / info.name
    data = bytearray(shard.read_bytes())
    data[data.index(b"chosen") - 20] ^= 0xFF  # one flipped byte
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"corrupt shard .*pairs/part-00000.parquet"):
        prepare_train(Config(), inputs)


def test_init_prepares_a_run_folder_for_deployments(tmp_path):
    """`selftrain init` writes config.yaml (what the deployed flows read) and runs no stage; status then works."""
    recipe = _recipe(tmp_path, run={"name": "t", "iterations": 3})
    proc = cli("init", str(recipe), "--set", "sampling.n=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "t"
    assert f"--param run={run_dir} --param iterations=3" in proc.stdout
    from selftrain.recipes import load_config

    assert load_config(run_dir / "config.yaml").sampling.n == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # no stage run, no lock left
    status = cli("status", str(run_dir))
    assert status.returncode == 0 and "missing" in status.stdout, status.stderr[-2000:]
