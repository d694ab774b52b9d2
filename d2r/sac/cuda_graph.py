"""The agent's update as one CUDA graph, captured once and replayed (the pattern of LeanRL and of
PyTorch's whole-network capture, torch.cuda.graphs).

The update it wraps (MultiTaskSAC._update with deferred checks) reads nothing back to the host,
has static shapes (a fixed batch: batch_per_task samples of each task) and steps capturable
optimisers, so its kernels can be recorded once and launched again as one graph:

- the first `warmup` calls run it eagerly on a side stream: they are real updates, and they
  create what is made lazily (the optimisers' moments, cuBLAS workspaces, autograd's streams);
- the next call copies its batch into static input tensors and captures one update into the
  graph; nothing runs during a capture, so the graph is then replayed once for that call;
- every later call copies its batch into the same static inputs (copy_, outside the graph) and
  replays. The replay writes the parameters, optimiser moments, targets, temperatures and the
  device-side checks in place, and the statistics into its static outputs (returned as copies).

The replay buffer samples outside the graph (its generator is numpy's, on the host). Random
draws inside the update (routes, actions) come from torch's default CUDA generator, which a
capture registers: each replay draws new numbers, the numbers an eager update would draw from the
same generator state.

Whatever the graph reads must stay where it was at the capture: parameters may be loaded in
place (load_state_dict copies), but replacing the optimisers' state (load_optimizer_state) drops
the graph, and the next update warms up and captures again.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import torch

from d2r.sac.replay import Batch


class GraphedUpdate:
    def __init__(self, update: Callable[[Batch], dict[str, torch.Tensor]], warmup: int = 3):
        self.update, self.warmup = update, warmup
        self.eager_calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: Batch | None = None                 # the static batch the graph reads
        self.outputs: dict[str, torch.Tensor] | None = None  # the statistics it writes

    @property
    def warming_up(self) -> bool:
        """The next call runs eagerly (before the capture)."""
        return self.graph is None and self.eager_calls < self.warmup

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.warming_up:
            self.eager_calls += 1
            return self._eager(batch)
        if self.graph is None:
            self._capture(batch)
        else:
            self._load(batch)
        self.graph.replay()
        return {name: value.clone() for name, value in self.outputs.items()}

    def _eager(self, batch: Batch) -> dict[str, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), warnings.catch_warnings():
            # capturable optimisers stepped outside a capture warn once; here that is the point
            warnings.filterwarnings("ignore", message=".*capturable=True.*", category=UserWarning)
            stats = self.update(batch)
        torch.cuda.current_stream().wait_stream(side)
        return stats

    def _capture(self, batch: Batch) -> None:
        self.inputs = dataclasses.replace(batch, **{f.name: _clone(getattr(batch, f.name))
                                                    for f in dataclasses.fields(batch)})
        graph = torch.cuda.CUDAGraph()
        # thread_local: an overlapped collection thread may launch its own work meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.outputs = self.update(self.inputs)
        self.graph = graph

    def _load(self, batch: Batch) -> None:
        for f in dataclasses.fields(batch):
            static, new = getattr(self.inputs, f.name), getattr(batch, f.name)
            if (static is None) != (new is None) or (static is not None and static.shape != new.shape):
                raise ValueError(f"the CUDA-graph update was captured for batches of another shape: "
                                 f"{f.name} {None if static is None else tuple(static.shape)}, "
                                 f"got {None if new is None else tuple(new.shape)}")
            if static is not None:
                static.copy_(new)


def _clone(value):
    return value.clone() if isinstance(value, torch.Tensor) else value
