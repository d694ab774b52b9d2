"""What a GPU run does differently, checked on the CPU: resuming a CUDA run (its checkpoint read
onto the CPU, every random state restored, the CUDA generator's into the GPU the resumed run
uses), a checkpoint from the other kind of device refused in one line, and optimiser settings
that follow the resuming run's update mode. tests/test_cuda.py checks the rest on a GPU."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import filled_buffer, make_agent, tiny_params

from d2r import envs as mw
from d2r.config import load_params
from d2r.runtime.checkpoint import load_latest_checkpoint, save_checkpoint
from d2r.runtime.io import CheckpointError
from d2r.runtime.seeding import _numpy_state, _tuples
from d2r.sac.training import Trainer


@pytest.fixture
def fake_gpus(monkeypatch):
    """The default CUDA generator state of GPUs 0 and 1, kept here (this machine has none); setting
    one checks its argument as torch does: a CPU byte tensor, else TypeError."""
    states = {0: torch.zeros(16, dtype=torch.uint8), 1: torch.ones(16, dtype=torch.uint8)}

    def get_rng_state(device="cuda"):
        return states[torch.device(device).index or 0].clone()

    def set_rng_state(new_state, device="cuda"):
        if not (new_state.device.type == "cpu" and new_state.dtype == torch.uint8):
            raise TypeError("RNG state must be a torch.ByteTensor")
        states[torch.device(device).index or 0] = new_state.clone()

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    return states


def trainer(tmp_path, device: torch.device | None = None) -> Trainer:
    """A tiny run's trainer; with `device`, it says it is on that GPU (its tensors stay on the CPU)."""
    run = load_params(tiny_params(tmp_path, epochs=2)).run("tiny", "d2r", 0)
    t = Trainer(run, tmp_path / "run", progress=False)
    if device is not None:
        t.device = device
    return t


def test_resumed_gpu_run_reads_its_checkpoint_onto_the_cpu_and_restores_every_random_state(tmp_path, fake_gpus):
    writer = trainer(tmp_path, torch.device("cuda", 1))
    fake_gpus[1] = torch.arange(16, dtype=torch.uint8)  # where the run's draws left GPU 1's generator
    writer.train()
    saved = load_latest_checkpoint(writer.checkpoint_dir)
    fake_gpus.update({0: torch.zeros(16, dtype=torch.uint8), 1: torch.ones(16, dtype=torch.uint8)})

    resumed = trainer(tmp_path, torch.device("cuda", 0))  # requeued: it claimed another GPU
    assert not torch.equal(torch.get_rng_state(), saved["rng"]["torch"])  # (seeded afresh until resumed)
    try:
        assert resumed.resume()
        assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
        assert _numpy_state() == saved["rng"]["numpy"]
        assert random.getstate() == _tuples(saved["rng"]["python"])
        assert torch.equal(fake_gpus[0], torch.arange(16, dtype=torch.uint8))  # GPU 1's stream, on GPU 0
        assert torch.equal(fake_gpus[1], torch.ones(16, dtype=torch.uint8))    # not the run's GPU: untouched
        assert torch.equal(resumed.collector.generator.get_state(), saved["collector_rng"])
        assert resumed.buffer.rng.bit_generator.state == saved["replay"]["rng"]
        assert mw.get_rng_state(resumed.envs) == saved["env_rng"]["train"]
        assert mw.get_rng_state(resumed.eval_envs) == saved["env_rng"]["eval"]
    finally:
        resumed.close()


def test_a_checkpoint_resumes_only_on_the_kind_of_device_that_wrote_it(tmp_path):
    trainer(tmp_path).train()
    directory = tmp_path / "run" / "checkpoints"
    state = load_latest_checkpoint(directory)
    # as a run on a GPU writes it: its collector's generator state is a CUDA one (seed and offset)
    state.update(device="cuda", collector_rng=torch.zeros(16, dtype=torch.uint8))
    save_checkpoint(directory, state["epoch"], state)
    resumed = trainer(tmp_path)
    try:
        with pytest.raises(CheckpointError, match=r"written by a run on cuda and this run is on cpu.*device: cuda"):
            resumed.resume()
        assert resumed.epoch == 0  # nothing restored
    finally:
        resumed.close()


@pytest.mark.parametrize("mode", ["off", "graph"])
def test_loaded_optimiser_state_keeps_this_runs_capturable_setting(mode):
    """A checkpoint of a run whose `cuda_graphs: auto` resolved the other way: a graph-mode run needs
    capturable optimisers (its capture fails without), the others are left plain."""
    agent = make_agent()
    agent.update(filled_buffer(agent).sample(4))  # the optimisers' moments exist
    state = agent.optimizer_state()
    for part in state.values():
        for group in part["param_groups"]:
            group["capturable"] = mode != "graph"
    agent.update_mode = mode  # (a graph needs CUDA; only the loading is checked here)
    agent.load_optimizer_state(state)
    for optim in (agent.policy_optim, agent.q_optim, agent.alpha_optim):
        assert [g["capturable"] for g in optim.param_groups] == [mode == "graph"] * len(optim.param_groups)
