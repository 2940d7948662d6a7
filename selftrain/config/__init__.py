"""Typed configuration: one pydantic model per concern (sections, training), composed into `Config` (recipe),
loaded from defaults, a YAML recipe and `--set` overrides (load)."""

from selftrain.config.base import ConfigError, Section
from selftrain.config.gsi import GsiConfig, TeacherConfig
from selftrain.config.load import check_names, dump_config, flatten, load_config, parse_override
from selftrain.config.recipe import Config
from selftrain.config.sections import (
    BandConfig,
    BootstrapConfig,
    DataConfig,
    JudgeConfig,
    JudgeWarmupConfig,
    ModelConfig,
    PairsConfig,
    PromptConfig,
    RunConfig,
    SamplingConfig,
    SourceConfig,
)
from selftrain.config.self_instruct import SelfInstructConfig
from selftrain.config.stasc import SftConfig, StascConfig
from selftrain.config.training import (
    EngineConfig,
    EvaluationConfig,
    LoraConfig,
    StoreConfig,
    TrainingConfig,
)
from selftrain.config.w2s import Stage2Config, W2sConfig

__all__ = [
    "BandConfig",
    "JudgeWarmupConfig",
    "BootstrapConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "EvaluationConfig",
    "GsiConfig",
    "JudgeConfig",
    "LoraConfig",
    "ModelConfig",
    "PairsConfig",
    "PromptConfig",
    "RunConfig",
    "SamplingConfig",
    "Section",
    "SelfInstructConfig",
    "SftConfig",
    "SourceConfig",
    "Stage2Config",
    "StascConfig",
    "StoreConfig",
    "TeacherConfig",
    "TrainingConfig",
    "W2sConfig",
    "check_names",
    "dump_config",
    "flatten",
    "load_config",
    "parse_override",
]
