"""Dictionary variants. Importing this package registers every built-in architecture.

Registry names (``build(name, ...)``, ``--architecture``): relu, relu_dn, topk, batchtopk,
multi_topk, abstopk, matryoshka, jumprelu, gated, p_anneal, feature_choice, mutual_choice,
top_afa, mp, archetypal, variational, polysae, kronsae, mdl. See docs/dictionaries.md for
each variant's paper.
Multi-source dictionaries (crosscoder, mlsae) are registered here too, so every checkpoint
loads after ``import sparselens``.
"""

from sparselens.dictionaries.abstopk import AbsTopKSAE
from sparselens.dictionaries.archetypal import ArchetypalConfig, ArchetypalSAE
from sparselens.dictionaries.base import (
    REGISTRY,
    Dictionary,
    DictionaryConfig,
    LossOutput,
    StepContext,
    build,
    register,
)
from sparselens.dictionaries.batchtopk import BatchTopKConfig, BatchTopKSAE
from sparselens.dictionaries.choice import ChoiceConfig, FeatureChoiceSAE, MutualChoiceSAE
from sparselens.dictionaries.crosscoder import Crosscoder
from sparselens.dictionaries.gated import GatedSAE
from sparselens.dictionaries.jumprelu import JumpReLUConfig, JumpReLUSAE
from sparselens.dictionaries.kron import KronConfig, KronSAE
from sparselens.dictionaries.matryoshka import MatryoshkaConfig, MatryoshkaSAE
from sparselens.dictionaries.mdl import MDLSAE, MDLConfig
from sparselens.dictionaries.mp import MatchingPursuitSAE, MPConfig
from sparselens.dictionaries.multi_topk import MultiTopKConfig, MultiTopKSAE
from sparselens.dictionaries.multilayer import MultiLayerSAE
from sparselens.dictionaries.p_anneal import PAnnealConfig, PAnnealSAE
from sparselens.dictionaries.penalized import PenaltyConfig
from sparselens.dictionaries.poly import PolyConfig, PolySAE
from sparselens.dictionaries.relu import ReluConfig, ReluDNConfig, ReluDNSAE, ReluSAE
from sparselens.dictionaries.top_afa import TopAFAConfig, TopAFASAE
from sparselens.dictionaries.topk import AuxKConfig, TopKConfig, TopKSAE
from sparselens.dictionaries.variational import VariationalConfig, VariationalSAE

__all__ = [
    "REGISTRY",
    "AbsTopKSAE",
    "ArchetypalConfig",
    "ArchetypalSAE",
    "AuxKConfig",
    "BatchTopKConfig",
    "BatchTopKSAE",
    "ChoiceConfig",
    "Crosscoder",
    "Dictionary",
    "DictionaryConfig",
    "FeatureChoiceSAE",
    "GatedSAE",
    "JumpReLUConfig",
    "JumpReLUSAE",
    "KronConfig",
    "KronSAE",
    "LossOutput",
    "MDLConfig",
    "MDLSAE",
    "MPConfig",
    "MatchingPursuitSAE",
    "MatryoshkaConfig",
    "MatryoshkaSAE",
    "MultiLayerSAE",
    "MultiTopKConfig",
    "MultiTopKSAE",
    "MutualChoiceSAE",
    "PAnnealConfig",
    "PAnnealSAE",
    "PenaltyConfig",
    "PolyConfig",
    "PolySAE",
    "ReluConfig",
    "ReluDNConfig",
    "ReluDNSAE",
    "ReluSAE",
    "StepContext",
    "TopAFAConfig",
    "TopAFASAE",
    "TopKConfig",
    "TopKSAE",
    "VariationalConfig",
    "VariationalSAE",
    "build",
    "register",
]
