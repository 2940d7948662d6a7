"""Loading a recipe for a run: the config's shape (selftrain.config) plus the registries that config must not
import. The method's defaults fill what the recipe left unset, and every part the recipe names (method, judge,
pair builder, data source, fetchable model) must be registered; a wrong name is a one-line error with the
closest registered name. Every caller that turns a recipe into a Config goes through `load_config` here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selftrain.config import Config, ConfigError, build_config
from selftrain.data.sources import SOURCES
from selftrain.judges import JUDGES
from selftrain.methods import METHODS
from selftrain.model_fetch import MODELS
from selftrain.pairs import PAIR_BUILDERS
from selftrain.registry import UnknownNameError

__all__ = ["ConfigError", "check_names", "load_config", "method_defaults"]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML recipe, and `key=value` overrides, with the method's
    defaults applied and every registered name checked."""
    return build_config(path, overrides, defaults=method_defaults, check=check_names)


def method_defaults(method: str) -> dict[str, Any]:
    """The defaults a method sets where the recipe chose no value ({dotted key: value})."""
    return METHODS.get(method).defaults


def check_names(cfg: Config) -> None:
    """Every registered part the recipe names exists (UnknownNameError suggests the closest name)."""
    METHODS.get(cfg.method)
    if cfg.model.fetch is not None:
        try:
            MODELS.get(cfg.model.fetch)
        except UnknownNameError as e:  # name the key: "unknown fetchable model" alone does not say where
            raise UnknownNameError(f"model.fetch: {e}") from None
    JUDGES.get(cfg.judge.name)
    PAIR_BUILDERS.get(cfg.pairs.builder)
    for source in (*cfg.data.train, *cfg.data.eval):
        SOURCES.get(source.name)
