"""Which device a job runs on: the one place that answers it.

`gpu_present()` is a cheap guess without importing torch (the Snakefile's resources and the
render job's backend choice use it); `resolve_device` is what every torch job calls, and
`claim_device` what the train and evaluate jobs call: on a machine with several GPUs it spreads
the runs over them.

Several runs per machine. Snakemake counts `gpu` slots (`--resources gpu=S`: at most S jobs
holding a GPU at once) but does not say which GPU a job should use. Each job therefore claims a
slot itself: an exclusive lock (flock) on one file per (slot, GPU) in a lock directory, tried
slot 0 of every GPU first, then slot 1, ...; so N GPUs and S = N runs give one run per GPU, and
S = M x N runs give M runs per GPU. A lock lives as long as the job's process, also when it is
killed, so a crashed run never holds a GPU.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from d2r.config import ParamsError


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU that this process may use (torch not imported)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def resolve_device(requested: str):
    """params.yaml `device` -> torch.device: `auto` is cuda when torch sees a GPU, else cpu;
    `cuda` without a GPU is a ParamsError (one line, exit 2)."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"device: {requested} is requested but torch.cuda.is_available() is False on this "
                          "machine (set device: auto or cpu in params.yaml)")
    return torch.device(requested)


def device_record(requested: str) -> dict[str, Any]:
    """What environment.json says of the device."""
    import torch

    device = resolve_device(requested)
    return {
        "requested": requested,
        "resolved": device.type,
        "cuda_available": bool(torch.cuda.is_available()),
        "torch_cuda": torch.version.cuda,
        "gpu_name": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }


def gpu_lock_dir() -> Path:
    """Where the runs of this machine and user claim GPUs (D2R_GPU_LOCKS overrides it)."""
    return Path(os.environ.get("D2R_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"d2r-gpu-slots-{os.getuid()}")


def claim_gpu(num_gpus: int, lock_dir: Path | None = None) -> tuple[int, IO]:
    """The GPU index of the first free (slot, GPU), slot-major, and its held lock file: keep the
    file open as long as the GPU is used (closing it or exiting frees the slot)."""
    if num_gpus < 1:
        raise ValueError(f"no GPU to claim (num_gpus={num_gpus})")
    lock_dir = gpu_lock_dir() if lock_dir is None else Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        for gpu in range(num_gpus):
            handle = open(lock_dir / f"slot{slot}-gpu{gpu}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return gpu, handle
        slot += 1


def claim_device(requested: str):
    """resolve_device, and on CUDA without an index a claimed GPU of this machine (made the current
    device, so that streams and graphs live on it). Returns (device, held lock or None)."""
    import torch

    device = resolve_device(requested)
    if device.type != "cuda" or device.index is not None:
        return device, None
    gpu, lock = claim_gpu(torch.cuda.device_count())
    torch.cuda.set_device(gpu)
    return torch.device("cuda", gpu), lock
