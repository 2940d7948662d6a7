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

__all__ = [
    "BandConfig",
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
    "StascConfig",
    "StoreConfig",
    "TeacherConfig",
    "TrainingConfig",
    "check_names",
    "dump_config",
    "flatten",
    "load_config",
    "parse_override",
]
