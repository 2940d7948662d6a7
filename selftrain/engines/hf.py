"""The `hf` engine: transformers `generate` and batched forward passes. The CPU fallback, and the reference the
vLLM engine is tested against."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from selftrain.engines.base import (
    ENGINES,
    Completion,
    SamplingSpec,
    ShardRequests,
    encode_prompts,
    generate_shards_sequentially,
    option_requests,
)

if TYPE_CHECKING:
    from selftrain.config import Config

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_model_and_tokenizer(cfg: Config, adapter: str | None = None, merge: bool = True):  # noqa: ANN201
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.model.path
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = "auto" if cfg.model.dtype == "auto" else getattr(torch, _DTYPES[cfg.model.dtype])
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code
    )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if merge:  # generation speed: fold the adapter into the weights once
            model = model.merge_and_unload()
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def option_probs(
    model, tokenizer, prompts: list[str], options: tuple[str, ...], batch_size: int
) -> list[list[float]]:  # noqa: ANN001 - transformers types
    """P(option) per prompt by the CORE-PO token rule (`option_requests`), from a loaded model: the hf engine's
    judge reads, and the tiny bootstrap's judge warm-up measures its model the same way."""
    import torch

    requests = option_requests(tokenizer, prompts, options)
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    out: list[list[float]] = []
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        enc = tokenizer.pad({"input_ids": [r.context for r in batch]}, return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits[:, -1, :].float()
        probs = torch.softmax(logits, dim=-1)
        index = torch.tensor([r.option_ids for r in batch], device=probs.device)
        out.extend(probs.gather(1, index).tolist())
    return out


@ENGINES.register("hf")
class HFEngine:
    def __init__(self, cfg: Config, adapter: str | None = None):
        self.cfg = cfg
        self.model, self.tokenizer = load_model_and_tokenizer(cfg, adapter)
        self.device = next(self.model.parameters()).device
        self.batch_size = cfg.sampling.batch_size
        self._eos = {self.tokenizer.eos_token_id} | set(
            _as_list(getattr(self.model.generation_config, "eos_token_id", None))
        )

    def _encode(self, texts: list[str]):  # noqa: ANN202
        return self._pad(encode_prompts(self.tokenizer, texts))

    def _pad(self, ids: list[list[int]]):  # noqa: ANN202
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        import torch

        out: list[list[Completion]] = []
        greedy = spec.temperature == 0
        per = 1 if greedy else spec.n
        # Seeding per call (and calls are per shard) makes a redone shard identical to the original.
        torch.manual_seed(spec.seed)
        sampling = {} if greedy else {"temperature": spec.temperature, "top_p": spec.top_p, "top_k": 0}
        step = max(1, self.batch_size // per)
        for i in range(0, len(prompts), step):
            batch = prompts[i : i + step]
            enc = self._encode(batch)
            with torch.no_grad():
                gen = self.model.generate(
                    **enc,
                    do_sample=not greedy,
                    max_new_tokens=spec.max_tokens,
                    num_return_sequences=per,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
            new = gen[:, enc["input_ids"].shape[1] :].tolist()
            for j in range(len(batch)):
                comps = [self._completion(new[j * per + k]) for k in range(per)]
                out.append(comps * spec.n if greedy else comps)
        return out

    def generate_shards(self, shards: ShardRequests) -> Iterator[tuple[int, list[list[Completion]]]]:
        return generate_shards_sequentially(self, shards)

    def _completion(self, ids: list[int]) -> Completion:
        stop_at = next((i for i, t in enumerate(ids) if t in self._eos), None)
        if stop_at is not None:
            ids, finish = ids[:stop_at], "stop"
        else:
            ids = [t for t in ids if t != self.tokenizer.pad_token_id]
            finish = "length"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text, num_tokens=len(ids) + (finish == "stop"), finish_reason=finish)

    def option_probs(self, prompts: list[str], options: tuple[str, ...]) -> list[list[float]]:
        return option_probs(self.model, self.tokenizer, prompts, options, self.cfg.judge.batch_size)

    def completion_logprobs(self, prompts: list[str], completions: list[str]) -> list[float]:
        import torch

        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            p = encode_prompts(self.tokenizer, [prompt])[0]
            c = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p + c], device=self.device)
            with torch.no_grad():
                logp = torch.log_softmax(self.model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            token_lp = logp.gather(1, targets[:, None])[:, 0]
            out.append(float(token_lp[len(p) - 1 :].sum()))
        return out

    def close(self) -> None:
        del self.model


def _as_list(x: object) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set)) else [x]
