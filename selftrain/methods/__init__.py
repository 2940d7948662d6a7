"""Methods, one package each (its registration, config section, stage code and helpers); the contract and the
registry are in base.py. Importing this package registers every method."""

# each package registers its methods (imported for that)
from selftrain.methods import core_po, self_rewarding, stasc, gsi, w2s  # noqa: F401, I001
from selftrain.methods.base import (
    METHODS,
    PREFERENCE_STAGES,
    Method,
    method_of,
    preference_method,
    register,
)

__all__ = ["METHODS", "PREFERENCE_STAGES", "Method", "method_of", "preference_method", "register"]
