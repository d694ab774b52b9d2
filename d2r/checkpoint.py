"""Crash-safe checkpoints: atomic writes, a SHA-256 per file, the last two kept.

Files are `ckpt-<epoch>.pt` (tensors and plain data, loaded with torch.load(weights_only=True)
so that a checkpoint from elsewhere cannot run code) and a JSON sidecar `ckpt-<epoch>.json`
holding its checksum. Loading takes the newest checkpoint whose checksum matches and warns,
naming the file, about any it had to skip.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from d2r.io import atomic_write_bytes, atomic_write_json, read_json

KEEP = 2


class CheckpointError(RuntimeError):
    pass


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(directory: str | Path, epoch: int, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = directory / f"ckpt-{epoch:07d}.pt"
    atomic_write_bytes(path, data)
    # The sidecar is written last: a checkpoint counts only once its checksum exists.
    atomic_write_json(path.with_suffix(".json"), {"epoch": epoch, "sha256": _sha256(data), "bytes": len(data)})
    for old in sorted(directory.glob("ckpt-*.pt"))[:-KEEP]:
        old.with_suffix(".json").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Load one checkpoint without executing code from it (weights_only)."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data "
            f"(a checkpoint that would run code when unpickled): {str(err).splitlines()[0]}"
        ) from None


def load_latest_checkpoint(directory: str | Path, map_location="cpu") -> dict[str, Any] | None:
    """The newest intact checkpoint in `directory`, or None when there is none."""
    directory = Path(directory)
    for path in sorted(directory.glob("ckpt-*.pt"), reverse=True):
        sidecar = path.with_suffix(".json")
        try:
            expected = read_json(sidecar)["sha256"]
        except (OSError, ValueError, KeyError):
            warnings.warn(f"checkpoint {path} has no readable checksum file {sidecar.name}; skipping it")
            continue
        data = path.read_bytes()
        if _sha256(data) != expected:
            warnings.warn(f"checkpoint {path} is truncated or corrupted (checksum mismatch); using an older one")
            continue
        return load_checkpoint_file(path, map_location)
    return None
