"""docs/configuration.md is generated from the config models (selftrain/config_docs.py): it must be current."""

from __future__ import annotations

from pathlib import Path

from selftrain.cli import main
from selftrain.config_docs import render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_page_is_current():
    assert PAGE.read_text() == render(), "docs/configuration.md is stale: run make docs"


def test_render_is_deterministic_and_covers_every_section():
    text = render()
    assert text == render()
    for heading in ("## `run`", "## `model.bootstrap.band`", "## `data.train.<i>`", "## `placement.<name>`"):
        assert heading in text
    assert "| `run.seed` | `int` | `0` |" in text


def test_cli_prints_the_page(capsys):
    assert main(["config", "--markdown"]) == 0
    assert capsys.readouterr().out == render()
