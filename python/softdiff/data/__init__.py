"""Data sets. ``make_shapes``: the built-in procedural set (the default for the demo and CI)."""

from .shapes import make_shapes

__all__ = ["make_shapes"]
