"""Numerics: float formats, error-free transforms, the softmax family and its variant
registry, cross-entropy, gradients and the high-precision reference. Imports numpy
(and ml_dtypes) only: never click or rich."""
