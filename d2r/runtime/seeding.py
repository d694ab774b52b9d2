"""Seeds and random states of a run: the global generators, and the env streams.

A run's envs draw from independent streams of its seed (d2r.envs seeds each task env from
``(seed, task, stream)``); the stream numbers are named here, once.
"""

from __future__ import annotations

import random

import numpy as np
import torch

TRAIN_STREAM = 0        # training collection
EVAL_STREAM = 1         # periodic evaluation during training
FINAL_EVAL_STREAM = 2   # the evaluate job
RENDER_STREAM = 3       # the render job's videos


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _numpy_state() -> dict:
    """numpy's global state as plain data (checkpoints hold no numpy objects: weights_only loading)."""
    state = np.random.get_state(legacy=False)
    state["state"] = {"key": state["state"]["key"].tolist(), "pos": int(state["state"]["pos"])}
    return state


def global_rng_state(device: torch.device | str = "cpu") -> dict:
    """python's, numpy's and torch's global generators, and on a GPU `device` its CUDA generator
    (the one the run's updates draw from; the other GPUs' are not the run's)."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _tuples(value):
    """Tuples from random.getstate() come back from torch.load as lists; random.setstate needs tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def restore_global_rng_state(state: dict, device: torch.device | str = "cpu") -> None:
    """Restore what `global_rng_state` returned (also after a round trip through a checkpoint).

    torch takes generator states as CPU byte tensors only, whatever device they were loaded onto.
    The CUDA state goes to the run's GPU `device`, which after a requeue may have another index
    than the GPU that wrote it."""
    random.setstate(_tuples(state["python"]))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
                            "pos": numpy_state["state"]["pos"]}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"].cpu())
    if torch.device(device).type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


class RandomStreams:
    """One run's own global random streams (python's, numpy's, torch's CPU generator and, on a GPU
    `device`, its CUDA generator) while other runs in the same process draw from theirs: made
    right after the run seeded and built itself, it holds the streams as they are then; `with
    streams:` puts them in place and, on leaving, takes them back as the run left them. A group
    of seeds in one process (d2r.sac.group) wraps all that each seed does in its own streams, so
    each draws exactly what it draws alone."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.state = global_rng_state(self.device)

    def __enter__(self) -> RandomStreams:
        restore_global_rng_state(self.state, self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.state = global_rng_state(self.device)

    @property
    def _torch_key(self) -> str:
        """The generator the run's tensors on its device draw from."""
        return "cuda" if self.device.type == "cuda" else "torch"

    def generator(self) -> torch.Generator:
        """A generator in the state of this run's torch stream on its device (a seed-stacked update
        draws from it: d2r.sac.stacked); give it back with `take_back` when done."""
        generator = torch.Generator(self.device)
        generator.set_state(self.state[self._torch_key].cpu())
        return generator

    def take_back(self, generator: torch.Generator) -> None:
        """This run's torch stream continues where `generator` (from `generator()`) left off."""
        self.state[self._torch_key] = generator.get_state()


class SeedGenerators(tuple):
    """One torch.Generator per seed of a seed-stacked batch (d2r.nets.stacking: S seeds' samples,
    seed-major): a random draw for the batch takes each seed's rows from that seed's generator,
    so each seed draws what it draws alone. Pass it where a `generator` is taken (`uniform_` and
    `randn` below); anything with these two methods may stand in for it (d2r.sac.stacked.NoiseTape)."""

    def uniform_(self, tensor: torch.Tensor) -> torch.Tensor:
        for rows, generator in zip(tensor.chunk(len(self)), self, strict=True):
            rows.uniform_(generator=generator)
        return tensor

    def randn(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        out = torch.empty(shape, device=device, dtype=dtype)
        for rows, generator in zip(out.chunk(len(self)), self, strict=True):
            rows.normal_(generator=generator)  # what torch.randn does
        return out


def _per_seed(generator) -> bool:
    return generator is not None and not isinstance(generator, torch.Generator)


def uniform_(tensor: torch.Tensor, generator) -> torch.Tensor:
    """tensor.uniform_(generator=generator), or per seed's rows with SeedGenerators."""
    return generator.uniform_(tensor) if _per_seed(generator) else tensor.uniform_(generator=generator)


def randn(shape: torch.Size, generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """torch.randn(shape, generator=generator, ...), or per seed's rows with SeedGenerators."""
    if _per_seed(generator):
        return generator.randn(shape, device, dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
