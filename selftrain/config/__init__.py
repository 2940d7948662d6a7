"""Typed configuration: one pydantic model per concern (sections, training), composed into `Config` (recipe),
loaded from defaults, a YAML recipe and `--set` overrides (load)."""

from selftrain.config.base import ConfigError, Section
from selftrain.config.load import build_config, dump_config, flatten, parse_override
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
from selftrain.config.training import (
    EngineConfig,
    EvaluationConfig,
    LoraConfig,
    SftConfig,
    StoreConfig,
    TrainingConfig,
)
from selftrain.methods.gsi.config import GsiConfig, TeacherConfig
from selftrain.methods.self_rewarding.config import SelfInstructConfig
from selftrain.methods.stasc.config import StascConfig
from selftrain.methods.w2s.config import Stage2Config, W2sConfig

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
    "build_config",
    "dump_config",
    "flatten",
    "parse_override",
]
