"""The feature API: a model with dictionaries attached, text in, sparse features out, and
interventions on the way through (docs/lens.md)."""

from sparselens.lens.attached import Attached
from sparselens.lens.codes import SparseCodes
from sparselens.lens.edits import (
    AblateLatents,
    AddLatent,
    AddVector,
    ClampLatent,
    Edit,
    SetActivation,
    Splice,
    ZeroAblate,
)
from sparselens.lens.lens import Encoding, Generation, Leaves, Lens, LensOutput
from sparselens.lens.tokens import Tokens

__all__ = ["AblateLatents", "AddLatent", "AddVector", "Attached", "ClampLatent", "Edit",
           "Encoding", "Generation", "Leaves", "Lens", "LensOutput", "SetActivation",
           "SparseCodes", "Splice", "Tokens", "ZeroAblate"]
