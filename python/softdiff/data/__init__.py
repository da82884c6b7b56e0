"""Data sets: the built-in procedural ``shapes`` and loaders for CIFAR-10, CelebA, image folders and arrays."""

from ..images import to_model_range
from .loaders import DataError, load_images
from .shapes import make_shapes

__all__ = ["DataError", "load_images", "make_shapes", "to_model_range"]
