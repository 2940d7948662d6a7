"""Faults a user meets, each a one-line error with exit code 2 and the store intact (subprocess tests where
that is the behaviour: the CLI boundary is what turns an exception into one line). Fast: no model is trained."""

from __future__ import annotations

import logging

import pytest

from .conftest import cli, tiny_recipe, write_recipe


def _one_line(proc, message: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]


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
    from selftrain.config import BootstrapConfig
    from selftrain.tiny import ensure_model

    with pytest.raises(FileNotFoundError, match="no model.bootstrap section"):
        ensure_model(str(tmp_path / "none"), None)
    assert not (tmp_path / "none").exists()
    boot = BootstrapConfig(steps=1, batch_size=2, hidden_size=16, num_layers=1, num_heads=2)
    with caplog.at_level(logging.INFO, logger="selftrain.tiny"):
        ensure_model(str(tmp_path / "built"), boot)
    assert (tmp_path / "built" / "config.json").exists()
    assert any("building the tiny model there" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"]  # no temp folder left
