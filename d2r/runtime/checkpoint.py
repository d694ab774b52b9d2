"""Crash-safe checkpoints: atomic writes, a SHA-256 per file, the last two kept.

Files are `ckpt-<epoch>.pt` (tensors and plain data, loaded with torch.load(weights_only=True)
so that a checkpoint from elsewhere cannot run code) and a JSON sidecar `ckpt-<epoch>.json`
holding its checksum, written after the checkpoint: a checkpoint counts only once its sidecar
exists. A run stopped by a signal in the middle of an epoch writes `ckpt-<epoch>.<step>.pt`:
<epoch> epochs done and <step> units (the episode, then each update) of the next. Loading takes
the newest checkpoint whose checksum matches and warns, naming the file, about any it had to skip
(no sidecar: a crash between the two writes; checksum mismatch: a truncated or corrupted file).
Temporary files of interrupted writes (`.ckpt-*.tmp`) are never read, and are removed by the
next save.

A file whose checksum matches but which holds anything other than tensors and plain data (a
pickle that would import a function or build an object when loaded) is refused with
CheckpointError, never executed and never silently skipped.
"""

from __future__ import annotations

import copy
import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from d2r.runtime.io import CheckpointError, atomic_write_bytes, atomic_write_json, read_json

KEEP = 2
_NAME = re.compile(r"ckpt-(\d+)(?:\.(\d+))?\.pt")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _position(path: Path) -> tuple[int, int]:
    """(epochs done, 0) for an epoch's checkpoint, (epochs done, 1 + step) within the next epoch."""
    epoch, step = _NAME.fullmatch(path.name).groups()
    return int(epoch), 0 if step is None else 1 + int(step)


def checkpoint_files(directory: str | Path) -> list[Path]:
    """Checkpoint files of `directory`, oldest first (temporary files excluded)."""
    directory = Path(directory)
    return sorted((p for p in directory.glob("ckpt-*.pt") if _NAME.fullmatch(p.name)), key=_position)


def _own_storages(obj: Any) -> Any:
    """`obj` with each tensor that views part of a larger storage as a copy of its own: torch.save
    writes a tensor's whole storage (the filled part of a replay buffer on a CPU; one seed's slice of
    a seed-stacked group's weights, d2r.sac.stacked)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.untyped_storage().nbytes() > obj.numel() * obj.element_size() else obj
    if isinstance(obj, dict):
        values = {key: _own_storages(value) for key, value in obj.items()}
        if all(values[key] is obj[key] for key in obj):
            return obj
        copied = copy.copy(obj)  # its type and attributes kept (a state_dict's _metadata)
        copied.update(values)
        return copied
    if isinstance(obj, (list, tuple)):
        values = [_own_storages(value) for value in obj]
        return obj if all(a is b for a, b in zip(values, obj)) else type(obj)(values)
    return obj


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(_own_storages(obj), buffer)
    return buffer.getvalue()


def save_model(path: str | Path, state_dict: dict[str, Any]) -> None:
    """Final weights (model.pt), written atomically; read back with load_checkpoint_file."""
    atomic_write_bytes(path, _torch_bytes(state_dict))


def save_checkpoint(directory: str | Path, epoch: int, state: dict[str, Any], step: int | None = None) -> Path:
    """Checkpoint after `epoch` epochs (and `step` units of the next one, for a stop mid-epoch)."""
    directory = Path(directory)
    data = _torch_bytes(state)
    path = directory / (f"ckpt-{epoch:07d}.pt" if step is None else f"ckpt-{epoch:07d}.{step:06d}.pt")
    atomic_write_bytes(path, data)
    # The sidecar is written last: a checkpoint counts only once its checksum exists.
    atomic_write_json(path.with_suffix(".json"),
                      {"epoch": epoch, "step": step, "sha256": _sha256(data), "bytes": len(data)})
    # Keep the newest KEEP complete checkpoints (those with a sidecar); drop older ones, incomplete
    # ones older than this, and leftovers of interrupted writes (one writer per run directory: a
    # temporary file here is stale).
    files = checkpoint_files(directory)
    keep = [p for p in files if p.with_suffix(".json").exists()][-KEEP:]
    for old in files:
        if old not in keep and _position(old) < _position(path):
            old.with_suffix(".json").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    for stale in directory.glob(".ckpt-*.tmp"):
        stale.unlink(missing_ok=True)
    return path


def _refusal_reason(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused (not its advice to disable it)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "nsupported" in line:
            return line
    return lines[-1] if lines else type(err).__name__


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Load one checkpoint or model file without executing code from it (weights_only).

    Raises CheckpointError, naming the file, for a file that would run code or build arbitrary
    objects when unpickled, and for one that is not a readable PyTorch file.
    """
    return _load(Path(path), Path(path), map_location)


def _load(source, path: Path, map_location) -> dict[str, Any]:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data "
            f"(a file that would run code when unpickled; nothing from it was executed): "
            f"{_refusal_reason(err)}"
        ) from None
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, not a torch file, ...
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a checkpoint): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def load_latest_checkpoint(directory: str | Path, map_location="cpu") -> dict[str, Any] | None:
    """The newest intact checkpoint in `directory`, or None when there is none.

    Checkpoints without a readable sidecar or whose SHA-256 differs from it are skipped with a
    warning naming the file. One whose checksum matches but which cannot be loaded safely raises
    CheckpointError (it is the file that was written, or a forged one: not a crash to recover from).
    """
    directory = Path(directory)
    for path in reversed(checkpoint_files(directory)):
        sidecar = path.with_suffix(".json")
        try:
            expected = read_json(sidecar)["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            warnings.warn(f"checkpoint {path} has no readable checksum file {sidecar.name}; skipping it "
                          "and using an older one")
            continue
        data = path.read_bytes()
        if _sha256(data) != expected:
            warnings.warn(f"checkpoint {path} is truncated or corrupted (checksum mismatch); using an older one")
            continue
        return _load(io.BytesIO(data), path, map_location)  # exactly the bytes that were checked
    return None
