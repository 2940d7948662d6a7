"""Inference engines (hf, vllm) behind one protocol (selftrain.engines.base.Engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selftrain.engines.base import ENGINES, resolve_engine_name

if TYPE_CHECKING:
    from selftrain.config import Config
    from selftrain.engines.base import Engine


def load_engine(cfg: Config, adapter: str | None = None) -> Engine:
    """The configured engine over `cfg.model.path`, with an optional LoRA adapter folder as the policy."""
    import selftrain.engines.hf  # noqa: F401  (registers)

    name = resolve_engine_name(cfg.engine.name)
    if name == "vllm":
        import selftrain.engines.vllm_engine  # noqa: F401
    return ENGINES.get(name)(cfg, adapter)
