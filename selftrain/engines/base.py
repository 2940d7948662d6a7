"""The engine interface shared by `hf` (transformers) and `vllm`, and the engine registry."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from selftrain.registry import Registry

if TYPE_CHECKING:
    from selftrain.config import Config


@dataclass(frozen=True)
class SamplingSpec:
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (truncated)
    cumulative_logprob: float | None = None


# (shard index, rendered prompts, sampling parameters) for each shard still to do
ShardRequests = Iterable[tuple[int, list[str], SamplingSpec]]


def generate_shards_sequentially(
    engine: Engine, shards: ShardRequests
) -> Iterator[tuple[int, list[list[Completion]]]]:
    for index, prompts, spec in shards:
        yield index, engine.generate(prompts, spec)


class Engine(Protocol):
    """What a stage needs from an inference engine. Prompts are already-rendered text (chat template and BOS
    included); engines tokenize them without adding special tokens, so hf and vllm see the same ids."""

    tokenizer: object

    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        """`spec.n` completions per prompt. Greedy when temperature is 0. Deterministic for a given seed."""

    def generate_shards(self, shards: ShardRequests) -> Iterator[tuple[int, list[list[Completion]]]]:
        """Yield (shard index, completions) as each shard finishes. Engines that can keep several shards in
        flight (vllm) do, so shard boundaries do not drain the batch; results equal `generate` per shard."""

    def option_probs(self, prompts: list[str], options: tuple[str, ...]) -> list[list[float]]:
        """Per prompt, the next-token probability of the first token of each option (one forward pass)."""

    def completion_logprobs(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Sum of log-probabilities of each completion's tokens after its prompt."""

    def close(self) -> None: ...


ENGINES: Registry[type] = Registry("engine")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine_name(name: str) -> str:
    if name == "auto":
        return "vllm" if vllm_available() and "vllm" in ENGINES else "hf"
    return name


def load_engine(cfg: Config, adapter: str | None = None) -> Engine:
    """The configured engine over `cfg.model.path`, with an optional LoRA adapter folder as the policy."""
    import selftrain.engines.hf  # noqa: F401  (registers)

    name = resolve_engine_name(cfg.engine.name)
    if name == "vllm":
        import selftrain.engines.vllm_engine  # noqa: F401
    return ENGINES.get(name)(cfg, adapter)
