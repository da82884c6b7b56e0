"""Wording shared by the commands' messages."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``count`` with its noun, in the plural unless it is 1: '1 image', '64 images', '0 images' (regular nouns)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
