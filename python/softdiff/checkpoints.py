"""Checkpoints that survive being killed at any moment.

Each is written to a temporary file, flushed and fsynced, then renamed over its final name (atomic on POSIX)
and the folder fsynced, so a checkpoint file is either complete or absent. :func:`load_latest` returns the
newest checkpoint that loads, saying which newer ones were unreadable and why. :func:`read_checkpoint` is the one
check, for training and for every ``--ckpt``, that a file is a checkpoint softdiff wrote.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch

from .wording import plural

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"ckpt-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := _NAME.match(name))]
    return sorted(found)


def save_checkpoint(state: dict, folder: Path, step: int, *, keep: int) -> Path:
    """Write ``state`` atomically as ckpt-<step>.pt and delete all but the newest ``keep`` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    # Prune among checkpoints up to this one: never the file just written, nor newer (unreadable) ones that the
    # run resumed past, which load_latest leaves in place for the user to inspect.
    up_to_now = [old for old_step, old in list_checkpoints(folder) if old_step <= step]
    for old in up_to_now[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def remove_partial_writes(folder: Path) -> None:
    """Delete temporary files a run killed while saving left behind (never a complete checkpoint)."""
    folder = Path(folder)
    if folder.is_dir():
        for temporary in folder.glob(".ckpt-*.pt.tmp-*"):
            temporary.unlink(missing_ok=True)


TRUST_VARIABLE = "SOFTDIFF_TRUST_CHECKPOINTS"


class UnsafeCheckpoint(ValueError):
    """A checkpoint holds Python objects that a weights-only load refuses to build."""


class NotACheckpoint(ValueError):
    """A file that is not a checkpoint softdiff wrote: not a torch file, or a torch file holding something else."""


# What every checkpoint softdiff writes holds (and what sampling from one reads).
CHECKPOINT_KEYS = ("step", "config", "process", "model", "ema")


def _not_a_torch_file(path: Path) -> str | None:
    """Why ``path`` cannot be a file ``torch.save`` wrote (a zip archive), or None if it may be one."""
    with open(path, "rb") as file:
        start = file.read(16)
    if not start:
        return "not a torch file: it is empty"
    if zipfile.is_zipfile(path):
        return None
    if start.startswith(b"PK"):
        return "a damaged torch file: its zip archive is cut short or corrupt"
    return f"not a torch file: it begins {start!r}"


def _describe(state) -> str:
    """What a loaded torch file holds, for a message: its type, and a dict's first keys."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}"
    keys = ", ".join(repr(key) for key in list(state)[:5]) + (", ..." if len(state) > 5 else "")
    return f"a dict of {plural(len(state), 'key')} ({keys})" if state else "an empty dict"


def read_checkpoint(path: Path, *, map_location="cpu") -> dict:
    """A checkpoint's state dict, read with ``weights_only=True``: softdiff writes only tensors and plain values, so
    a file that needs more (arbitrary code on unpickling) is refused unless SOFTDIFF_TRUST_CHECKPOINTS=1
    (:class:`UnsafeCheckpoint`). A file that is not a torch file, or holds something other than a softdiff
    checkpoint, raises :class:`NotACheckpoint` saying what it is."""
    problem = _not_a_torch_file(Path(path))
    if problem is not None:
        raise NotACheckpoint(problem)
    trusted = os.environ.get(TRUST_VARIABLE) == "1"
    try:
        state = torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(
            f"it holds Python objects that a weights-only load refuses (written by softdiff before 2026-11-28, or "
            f"not by softdiff); if you trust the file, {TRUST_VARIABLE}=1 loads it in full"
        ) from error
    except RuntimeError as error:  # a zip archive torch.save did not write
        raise NotACheckpoint(f"not a torch file: {type(error).__name__}: {error}") from error
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise NotACheckpoint(f"it holds {_describe(state)}, not a checkpoint's {', '.join(missing)}")
    return state


def load_latest(folder: Path, *, map_location="cpu") -> tuple[dict, Path] | None:
    """The newest checkpoint in ``folder`` that loads, or None if there is none; unreadable newer ones are
    reported on stderr and left in place (nothing is deleted)."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            state = read_checkpoint(path, map_location=map_location)
            if state["step"] != step:
                raise ValueError("its contents do not match its name")
            return state, path
        except Exception as error:
            print(f"softdiff: checkpoint {path} is unreadable ({type(error).__name__}: {error}); "
                  "trying the previous one", file=sys.stderr)  # fmt: skip
    return None
