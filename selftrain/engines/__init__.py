"""Inference engines (hf, vllm) behind one protocol (selftrain.engines.base.Engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selftrain.cpufeatures import warn_half_precision_on_cpu
from selftrain.engines import hf, vllm_engine  # noqa: F401  (each registers itself in ENGINES)
from selftrain.engines.base import ENGINES, resolve_engine_name

if TYPE_CHECKING:
    from selftrain.config import Config
    from selftrain.engines.base import Engine


def load_engine(cfg: Config, adapter: str | None = None) -> Engine:
    """The configured engine over `cfg.model.path`, with an optional LoRA adapter folder as the policy."""
    if not _on_gpu():
        warn_half_precision_on_cpu("model.dtype", cfg.model.dtype)
    return ENGINES.get(resolve_engine_name(cfg.engine.name))(cfg, adapter)


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
