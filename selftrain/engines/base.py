"""The engine interface shared by `hf` (transformers) and `vllm`, and the engine registry."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from selftrain.registry import Registry

if TYPE_CHECKING:
    pass


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


def encode_prompts(tokenizer: object, texts: list[str]) -> list[list[int]]:
    """Rendered prompts -> ids, the one way both engines (and TRL, for DPO) do it: the tokenizer's own special
    tokens on, so exactly one BOS (see selftrain.prompts)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]  # type: ignore[operator]


@dataclass(frozen=True)
class OptionRequest:
    """One P(option) read: the context ids and, per option, the token the option's text turns into there."""

    context: list[int]
    option_ids: list[int]


def option_requests(tokenizer: object, prompts: list[str], options: tuple[str, ...]) -> list[OptionRequest]:
    """The CORE-PO token rule: P(X) is the probability of the token where tokenize(prompt + X) first differs
    between the options. With Llama-3 a prefill ending in "is: " merges with the letter into " A", so the
    scored token is " A" after "…is:", not "A" after a lone space token; a char-level tokenizer gives "A"
    after " ". Tokenizer-independent, and it is what the original's last-token-of-prompt+X reads."""
    per_option = [encode_prompts(tokenizer, [p + o for p in prompts]) for o in options]
    out = []
    for i, prompt in enumerate(prompts):
        seqs = [ids[i] for ids in per_option]
        common = 0
        while all(common < len(s) for s in seqs) and len({s[common] for s in seqs}) == 1:
            common += 1
        if any(len(s) <= common for s in seqs):
            raise ValueError(
                f"judge.options {options} tokenize identically after the prompt {prompt[-40:]!r}"
            )
        out.append(OptionRequest(context=seqs[0][:common], option_ids=[s[common] for s in seqs]))
    return out


class Engine(Protocol):
    """What a stage needs from an inference engine. Prompts are rendered text (chat template included, BOS
    only where the tokenizer does not add it); engines encode them with `encode_prompts`, so hf and vllm see
    the same ids, and those are the ids DPO trains on."""

    tokenizer: object

    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        """`spec.n` completions per prompt. Greedy when temperature is 0. Deterministic for a given seed."""

    def generate_shards(self, shards: ShardRequests) -> Iterator[tuple[int, list[list[Completion]]]]:
        """Yield (shard index, completions) as each shard finishes. Engines that can keep several shards in
        flight (vllm) do, so shard boundaries do not drain the batch; results equal `generate` per shard."""

    def option_probs(self, prompts: list[str], options: tuple[str, ...]) -> list[list[float]]:
        """Per prompt, the probability of each option's token at the point where prompt+option first differs
        between the options (`option_requests`; one forward pass per prompt)."""

    def completion_logprobs(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Sum of log-probabilities of each completion's tokens after its prompt."""

    def close(self) -> None: ...


ENGINES: Registry[type] = Registry("engine")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine_name(name: str) -> str:
    if name == "auto":
        # importability alone decides: the registry only holds vllm once its module was imported, which
        # happens after this resolution (checking the registry here made `auto` never pick vLLM)
        return "vllm" if vllm_available() else "hf"
    return name
