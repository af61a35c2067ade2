"""Configuration: the typed schemas behind configs/ and the checks Hydra cannot do (the command
line is read in pdiff.config.command_line, imported by its own name).

A leaf of the import graph: it imports nothing of pdiff but pdiff.errors, so every layer may import
it.
"""

from .evaluate_schema import (
    BaselinesConfig,
    BootstrapConfig,
    EvalSplit,
    EvaluateConfig,
    FrontierSearch,
)
from .generator_checks import validate_generate
from .generator_schema import (
    CadenceConfig,
    GenerateConfig,
    GeneratorConfig,
    Normalization,
    OptimConfig,
    SamplerName,
    TrainerConfig,
    TrainerName,
)
from .require import require
from .schema import (
    SEED_MAX,
    ClusterConfig,
    Config,
    DeviceName,
    LoggerConfig,
    LoggerName,
    PathsConfig,
    Stage,
    WandbMode,
)
from .task_schema import (
    NUMPY_SEED_MAX,
    CollectConfig,
    DataConfig,
    DataName,
    FamilyConfig,
    FamilyName,
    HeldOutSplit,
    Mnist1dConfig,
    ParamConfig,
    Precision,
    SGDConfig,
    TaskConfig,
)
from .trainer_checks import validate_slurm_request, validate_trainer
from .validate import refuse_unknown_keys, to_container, validate

__all__ = [
    "NUMPY_SEED_MAX",
    "SEED_MAX",
    "BaselinesConfig",
    "EvalSplit",
    "FrontierSearch",
    "BootstrapConfig",
    "CadenceConfig",
    "ClusterConfig",
    "CollectConfig",
    "Config",
    "DataConfig",
    "DataName",
    "DeviceName",
    "EvaluateConfig",
    "FamilyConfig",
    "FamilyName",
    "GenerateConfig",
    "GeneratorConfig",
    "HeldOutSplit",
    "LoggerConfig",
    "LoggerName",
    "Mnist1dConfig",
    "Normalization",
    "OptimConfig",
    "ParamConfig",
    "PathsConfig",
    "Precision",
    "SGDConfig",
    "SamplerName",
    "Stage",
    "TaskConfig",
    "TrainerConfig",
    "TrainerName",
    "WandbMode",
    "refuse_unknown_keys",
    "require",
    "to_container",
    "validate",
    "validate_generate",
    "validate_slurm_request",
    "validate_trainer",
]
