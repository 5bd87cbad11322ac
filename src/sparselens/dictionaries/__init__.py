"""Dictionary variants. Importing this package registers every built-in architecture."""

from sparselens.dictionaries.base import (
    REGISTRY,
    Dictionary,
    DictionaryConfig,
    LossOutput,
    StepContext,
    build,
    register,
)
from sparselens.dictionaries.topk import TopKConfig, TopKSAE

__all__ = [
    "REGISTRY",
    "Dictionary",
    "DictionaryConfig",
    "LossOutput",
    "StepContext",
    "TopKConfig",
    "TopKSAE",
    "build",
    "register",
]
