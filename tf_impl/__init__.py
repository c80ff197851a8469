"""TensorFlow twin of :mod:`reference` (XLA-compiled training)."""
