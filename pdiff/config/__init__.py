"""Configuration: the typed schemas behind configs/, the checks Hydra cannot do, and override handling.

A leaf of the import graph: it imports nothing of pdiff but pdiff.errors, so every layer may import it.
"""

from .overrides import WHOLE_NODE_KEYS, whole_node_overrides
from .schema import (
    NUMPY_SEED_MAX,
    SEED_MAX,
    BaselinesConfig,
    BootstrapConfig,
    CadenceConfig,
    ClusterConfig,
    CollectConfig,
    Config,
    DataConfig,
    DataName,
    DeviceName,
    EvaluateConfig,
    FamilyConfig,
    FamilyName,
    GenerateConfig,
    GeneratorConfig,
    HeldOutSplit,
    LoggerConfig,
    LoggerName,
    Mnist1dConfig,
    Normalization,
    OptimConfig,
    ParamConfig,
    PathsConfig,
    Precision,
    SamplerName,
    SGDConfig,
    Stage,
    TaskConfig,
    TrainerConfig,
    TrainerName,
    WandbMode,
)
from .validate import (
    refuse_unknown_keys,
    require,
    to_container,
    validate,
    validate_generate,
    validate_slurm_request,
    validate_trainer,
)

__all__ = [
    "NUMPY_SEED_MAX", "SEED_MAX", "WHOLE_NODE_KEYS",
    "BaselinesConfig", "BootstrapConfig", "CadenceConfig", "ClusterConfig", "CollectConfig",
    "Config", "DataConfig", "DataName", "DeviceName", "EvaluateConfig", "FamilyConfig", "FamilyName",
    "GenerateConfig", "GeneratorConfig", "HeldOutSplit",
    "LoggerConfig", "LoggerName", "Mnist1dConfig", "Normalization", "OptimConfig", "ParamConfig", "PathsConfig",
    "Precision", "SGDConfig", "SamplerName", "Stage", "TaskConfig", "TrainerConfig", "TrainerName", "WandbMode",
    "refuse_unknown_keys", "require", "to_container", "validate", "validate_generate", "validate_slurm_request",
    "validate_trainer",
    "whole_node_overrides",
]
