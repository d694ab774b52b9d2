"""Which device a job gets: the one resolver, and the spreading of runs over a machine's GPUs
(tested here with a faked GPU count: the slots are lock files, no GPU is touched)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from d2r.config import ParamsError
from d2r.runtime.devices import claim_device, claim_gpu, resolve_device


def test_runs_spread_over_the_gpus_then_share_them(tmp_path):
    held = [claim_gpu(4, tmp_path) for _ in range(6)]
    assert [gpu for gpu, _ in held] == [0, 1, 2, 3, 0, 1]      # one per GPU first, then a second each
    held[2][1].close()                                          # the run on GPU 2 ends
    again = claim_gpu(4, tmp_path)
    assert again[0] == 2                                        # its GPU is the first free one
    for _, lock in held + [again]:
        lock.close()
    assert claim_gpu(4, tmp_path)[0] == 0


def test_a_killed_run_frees_its_gpu(tmp_path):
    code = ("import sys, time; from d2r.runtime.devices import claim_gpu; "
            f"gpu, lock = claim_gpu(2, {str(tmp_path)!r}); print(gpu, flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "0"
        mine = claim_gpu(2, tmp_path)
        assert mine[0] == 1                                     # GPU 0 is the child's
        mine[1].close()
    finally:
        child.kill()
        child.wait()
    assert claim_gpu(2, tmp_path)[0] == 0                       # killed: its lock is gone with it


def test_claim_gpu_needs_a_gpu(tmp_path):
    with pytest.raises(ValueError, match="no GPU"):
        claim_gpu(0, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")
def test_one_resolver_on_a_cpu_machine():
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    assert claim_device("auto") == (torch.device("cpu"), None)  # nothing to claim without CUDA
    with pytest.raises(ParamsError, match=r"device: cuda is requested but torch.cuda.is_available\(\) is False"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_claimed_gpu_is_the_current_device(tmp_path, monkeypatch):
    monkeypatch.setenv("D2R_GPU_LOCKS", str(tmp_path))
    device, lock = claim_device("auto")
    try:
        assert device.type == "cuda" and device.index == torch.cuda.current_device() < torch.cuda.device_count()
    finally:
        lock.close()
