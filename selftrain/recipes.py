"""Loading a recipe for a run: the config's shape (selftrain.config) plus the registries that config must not
import. The method's defaults fill what the recipe left unset, and every part the recipe names (method, judge,
pair builder, data source, fetchable model) must be registered; a wrong name is a one-line error with the
closest registered name. A `model.path` that is a .gguf file becomes the folder it is converted into. Every
caller that turns a recipe into a Config goes through `load_config` here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selftrain.config import Config, ConfigError, build_config
from selftrain.data.sources import SOURCES
from selftrain.errors import DataError, FetchError, StoreError
from selftrain.judges import JUDGES
from selftrain.methods import METHODS
from selftrain.model_fetch import GGUF_SUFFIX, MODELS, gguf_folder
from selftrain.pairs import PAIR_BUILDERS
from selftrain.registry import UnknownNameError

__all__ = ["USER_ERRORS", "ConfigError", "check_names", "gguf_as_folder", "load_config", "method_defaults"]

# What a user must act on (a bad config, dataset or name, a locked or stale store, a model that cannot be
# fetched, a missing file): one line, no traceback, never retried (the CLI, a stage's own process).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    StoreError,
    UnknownNameError,
    FetchError,
    FileNotFoundError,
)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML recipe, and `key=value` overrides, with the method's
    defaults applied and every registered name checked."""
    return gguf_as_folder(build_config(path, overrides, defaults=method_defaults, check=check_names))


def gguf_as_folder(cfg: Config) -> Config:
    """`model.path: FILE.gguf` -> the HF folder named by the file's content (artifacts/models/gguf-<sha256
    prefix>), with `model.fetch` = the file, so the run converts it once before the first stage
    (selftrain.runner.prepare). Every stage, the engines and the fingerprints then see a plain model folder,
    and a different file under the same name is a different model."""
    if not cfg.model.path.endswith(GGUF_SUFFIX):
        return cfg
    gguf = Path(cfg.model.path).expanduser()
    if not gguf.is_file():
        raise ConfigError(f"model.path: no GGUF file at {cfg.model.path}")
    cfg.model.fetch = str(gguf.resolve())
    cfg.model.path = str(gguf_folder(gguf))
    return cfg


def method_defaults(method: str) -> dict[str, Any]:
    """The defaults a method sets where the recipe chose no value ({dotted key: value})."""
    return METHODS.get(method).defaults


def check_names(cfg: Config) -> None:
    """Every registered part the recipe names exists (UnknownNameError suggests the closest name)."""
    METHODS.get(cfg.method)
    if cfg.model.fetch is not None and cfg.model.fetch.endswith(GGUF_SUFFIX):
        if (
            not Path(cfg.model.path).expanduser().exists()
            and not Path(cfg.model.fetch).expanduser().is_file()
        ):
            raise ConfigError(
                f"model.fetch: no GGUF file at {cfg.model.fetch} (and no model at {cfg.model.path})"
            )
    elif cfg.model.fetch is not None:
        try:
            MODELS.get(cfg.model.fetch)
        except UnknownNameError as e:  # name the key: "unknown fetchable model" alone does not say where
            raise UnknownNameError(f"model.fetch: {e}") from None
    JUDGES.get(cfg.judge.name)
    PAIR_BUILDERS.get(cfg.pairs.builder)
    for source in (*cfg.data.train, *cfg.data.eval):
        SOURCES.get(source.name)
