"""Data sets: the built-in procedural ``shapes`` and loaders for CIFAR-10, CelebA, image folders and arrays."""

from .loaders import DataError, load_images, to_model_range
from .shapes import make_shapes

__all__ = ["DataError", "load_images", "make_shapes", "to_model_range"]
