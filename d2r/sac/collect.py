"""Data collection: one episode per task with a snapshot of the policy and its own random stream.

The collector acts with a copy of the policy (and routing temperatures) taken when an episode
starts, and draws route and action noise only from its own generator. So an episode's data
depends on that snapshot, the generator and the envs' own streams, nothing else, and
collection can run in a background thread while the learner updates (`start` / `join`) with
results identical from run to run. Overlapped, the episode of epoch e is collected by the
policy as it was before epoch e's updates, and those updates see the data of epochs < e: the
behaviour policy is at most one epoch (updates_per_epoch updates) old.

On a GPU the episode runs on its own CUDA stream: every step reads its action back to the host,
and on the learner's stream that read would wait for every update queued there.

A group of seeds (d2r.sac.group) may collect its seeds' episodes together (`collect_together`):
one act() per step for all seeds' tasks, their policy snapshots stacked (d2r.nets.stacking), each
seed's noise from its own collector's generator; each seed's episode is then its own to float
rounding.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from d2r.nets.stacking import stack_nets
from d2r.runtime.seeding import SeedGenerators
from d2r.sac.agent import TanhGaussianPolicy, behaviour_action
from d2r.sac.rollout import run_episode, run_episodes


@dataclass
class Episode:
    success: np.ndarray                              # [T] success at any step
    transitions: list[tuple] = field(default_factory=list)  # (state, action, reward, next_state, done, route)


class Collector:
    def __init__(self, agent, envs, device: torch.device, seed: int, cut_on_truncation: bool):
        self.agent, self.envs, self.device = agent, envs, device
        self.cut_on_truncation = cut_on_truncation
        self.policy = copy.deepcopy(agent.policy).requires_grad_(False)
        self.temperature = agent.temperature.clone()
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._thread: threading.Thread | None = None
        self._result: Episode | BaseException | None = None

    def _snapshot(self) -> None:
        self.policy.load_state_dict(self.agent.policy.state_dict())
        self.temperature.copy_(self.agent.temperature)
        if self.stream is not None:  # the episode starts after these copies, and after the learner's
            # reads of the last episode's tensors (their memory is the episode stream's to reuse)
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def _handover(self) -> None:
        """The learner's stream waits for the episode's tensors (then it may read and free them)."""
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def _act(self, state, task):
        return behaviour_action(self.policy, self.temperature, state, task, self.generator)

    def _keeper(self, transitions: list):
        """on_step for run_episode: each transition into `transitions` as the replay buffer takes it."""
        def keep(state, action, reward, next_state, terminated, truncated, route):
            done = terminated | (truncated & self.cut_on_truncation)
            transitions.append((state, action, torch.as_tensor(reward, dtype=torch.float32, device=self.device),
                                next_state, torch.as_tensor(done, device=self.device), route))
        return keep

    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _episode(self) -> Episode:
        transitions = []
        with self._on_stream():
            success = run_episode(self.envs, self._act, self.device, on_step=self._keeper(transitions)).success
        return Episode(success, transitions)

    def run(self) -> Episode:
        """Collect one episode now, with the current policy."""
        self._snapshot()
        episode = self._episode()
        self._handover()
        return episode

    def start(self) -> None:
        """Collect one episode in a background thread with the current policy; `join` returns it."""
        self._snapshot()

        def target():
            try:
                self._result = self._episode()
            except BaseException as err:  # re-raised in the learner's thread by join()
                self._result = err

        self._thread = threading.Thread(target=target, name="d2r-collector", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """An episode started with `start` and not yet joined."""
        return self._thread is not None

    def join(self) -> Episode:
        self._thread.join()
        self._handover()
        self._thread, result, self._result = None, self._result, None
        if isinstance(result, BaseException):
            raise result
        return result


def collect_together(collectors: list[Collector]) -> list[Episode]:
    """One episode of each collector (the seeds of a group, their policies of one kind and size:
    d2r.nets.stacking) at once: one act() per step for all their tasks, with their policies'
    snapshots stacked and each one's noise from its own generator; each one's envs stepped with its
    actions. Returns each collector's Episode, as its `run` would to float rounding."""
    episodes = _episodes_together(collectors, *_stacked_snapshot(collectors))
    for collector in collectors:
        collector._handover()
    return episodes


def start_together(collectors: list[Collector]) -> None:
    """collect_together in a background thread, as each collector's `start` (each one's `join`
    returns its episode)."""
    policy, temperature = _stacked_snapshot(collectors)

    def target():
        try:
            outcomes = _episodes_together(collectors, policy, temperature)
        except BaseException as err:  # re-raised by every collector's join()
            outcomes = [err] * len(collectors)
        for collector, outcome in zip(collectors, outcomes):
            collector._result = outcome

    thread = threading.Thread(target=target, name="d2r-collector-group", daemon=True)
    for collector in collectors:
        collector._thread = thread
    thread.start()


def _stacked_snapshot(collectors: list[Collector]) -> tuple[TanhGaussianPolicy, torch.Tensor]:
    """Every collector's snapshot of the current policy, stacked: (policy, temperatures [S, T]). On
    a GPU the first collector's stream, where the episodes run, waits for all of it."""
    for collector in collectors:
        collector._snapshot()
    first = collectors[0]
    policy, temperature = stack_policies([c.policy for c in collectors], [c.temperature for c in collectors])
    if first.stream is not None:
        first.stream.wait_stream(torch.cuda.current_stream(first.device))
    return policy, temperature


def stack_policies(policies: list[TanhGaussianPolicy],
                   temperatures: list[torch.Tensor]) -> tuple[TanhGaussianPolicy, torch.Tensor]:
    """The seeds' policies as one (their networks stacked, d2r.nets.stacking) and their routing
    temperatures [S, T]: what one act() for all seeds' tasks acts with."""
    return (TanhGaussianPolicy(stack_nets([p.net for p in policies]), policies[0].action_dim),
            torch.stack(temperatures))


def _episodes_together(collectors: list[Collector], policy: TanhGaussianPolicy,
                       temperature: torch.Tensor) -> list[Episode]:
    first = collectors[0]
    generators = SeedGenerators(c.generator for c in collectors)

    def act(state, task):
        return behaviour_action(policy, temperature, state, task, generators)

    transitions = [[] for _ in collectors]
    with first._on_stream():
        results = run_episodes([c.envs for c in collectors], act, first.device,
                               [c._keeper(kept) for c, kept in zip(collectors, transitions)])
    for collector in collectors[1:]:
        if collector.stream is not None:  # each one's handover then waits for the episode's work
            collector.stream.wait_stream(first.stream)
    return [Episode(result.success, kept) for result, kept in zip(results, transitions)]
