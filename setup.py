"""Build script. Metadata lives in pyproject.toml; this file is where the optional CUDA extension of
softdiff_kernels (csrc/) is added once it exists."""

from setuptools import setup

setup()
