"""An engine that loads on first use, with the prompt builder of its tokenizer: what every stage that runs the
model holds."""

from __future__ import annotations

import functools
import logging
import time

from selftrain.config import Config
from selftrain.engines import load_engine
from selftrain.prompts import PromptBuilder

log = logging.getLogger(__name__)


class LazyEngine:
    """Loads the engine on first use, so a fully resumed stage never pays for a model load."""

    def __init__(self, cfg: Config, adapter: str | None):
        self.cfg, self.adapter = cfg, adapter

    load_s = 0.0  # time spent starting engines, reported in stage stats

    @functools.cached_property
    def engine(self):  # noqa: ANN201
        log.info("loading engine for %s (adapter: %s)", self.cfg.model.path, self.adapter or "none")
        start = time.perf_counter()
        engine = load_engine(self.cfg, self.adapter)
        self.load_s += time.perf_counter() - start
        return engine

    @functools.cached_property
    def builder(self) -> PromptBuilder:
        p = self.cfg.prompt
        return PromptBuilder(self.engine.tokenizer, p.template, p.system, p.one_shot)

    def close(self) -> None:
        """Free the model; a later use loads it again."""
        if "engine" in self.__dict__:
            self.engine.close()
        self.__dict__.pop("engine", None)
        self.__dict__.pop("builder", None)
