"""Throughput benchmarks, the measuring functions (the job `python -m d2r bench [--quick]`, which
prints them for the current device, is d2r/jobs/bench.py):

- collection alone: env-steps/s of MT10 and MT50 (random actions) with the sync and the async
  vector env (env.vector_strategy), stepped in turn;
- one full multi-task SAC update per method at paper width, batch 128 per task;
- the D2R update against the same update with the network written plainly from the spec
  (d2r.nets.reference: dense weights over all candidate sources, one module at a time): ratio
  and the largest difference of losses and gradients on the same batch (must be < 1e-5);
- achieved FLOP/s of the D2R update against a plain MLP update of the same FLOPs (the
  practical arithmetic limit of this machine) and against an MT-SAC update of the same FLOPs
  (the same SAC update without routing), timed alternately in one process;
- end-to-end training: env steps/s, updates/s, wall time against max(collection, updates),
  peak memory, for a fixed short MT10 run (collection in sequence; overlapped, sync and async).
Numbers are printed, never asserted: targets live in the issue notes, not in tests.
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.flop_counter import FlopCounterMode

from d2r import envs as mw
from d2r.nets.mlp import mlp
from d2r.nets.reference import PlainD2RNet
from d2r.sac.agent import MultiTaskSAC
from d2r.sac.replay import TaskReplayBuffer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, reps: int, device: torch.device) -> float:
    """Median seconds per call (one warm-up call first): robust to a busy neighbour on a shared
    machine, which the mean is not."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def make_agent(params, method: str, num_tasks: int, device, method_config=None) -> MultiTaskSAC:
    torch.manual_seed(0)
    config = params.methods[method] if method_config is None else method_config
    return MultiTaskSAC(config, params.sac, mw.STATE_DIM, mw.ACTION_DIM, num_tasks, device)


def filled_buffer(agent: MultiTaskSAC, num_tasks: int, steps: int, device) -> TaskReplayBuffer:
    net = agent.policy.net
    buf = TaskReplayBuffer(num_tasks, steps, mw.STATE_DIM, mw.ACTION_DIM,
                           net.route_shape, seed=0, device=device)
    task = torch.arange(num_tasks, device=device)
    for _ in range(steps):
        s = torch.randn(num_tasks, mw.STATE_DIM, device=device)
        a, route = agent.act(s, task)
        buf.add(s, a, torch.rand(num_tasks, device=device), torch.randn_like(s),
                torch.zeros(num_tasks, dtype=torch.bool, device=device), route)
    return buf


def use_plain_networks(agent: MultiTaskSAC) -> MultiTaskSAC:
    """`agent` with each of its D2R networks replaced, in place, by the plain reference built on
    the same parameters (its optimisers, targets and state_dict keys unchanged)."""
    agent.policy.net = PlainD2RNet(agent.policy.net)
    for name in ("q1", "q2", "q1_target", "q2_target"):
        setattr(agent, name, PlainD2RNet(getattr(agent, name)))
    return agent


def update_flops(agent: MultiTaskSAC, batch) -> int:
    state = copy.deepcopy(agent.state_dict()), agent.optimizer_state()
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    agent.load_state_dict(state[0])
    agent.load_optimizer_state(state[1])
    return counter.get_total_flops()


# ---- sections --------------------------------------------------------------------------------
def bench_collection(benchmark: str, steps: int, rounds: int,
                     strategies: tuple[str, ...] = mw.VECTOR_STRATEGIES) -> dict[str, float]:
    """Env-steps/s of each vector strategy on `benchmark` (random actions): the vector envs of all
    strategies are built first, then stepped in turn, `rounds` blocks of `steps` steps each (the
    median block): on a shared machine each sees the same load."""
    tasks = list(mw.BENCHMARKS[benchmark])
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, len(tasks), mw.ACTION_DIM))
    all_envs = {}
    try:
        for strategy in strategies:
            all_envs[strategy] = mw.make_task_envs(tasks, seed=0, vector_strategy=strategy)
            all_envs[strategy].reset()

        def block(envs):
            for a in actions:
                envs.step(a)

        times = timed_alternately([lambda e=e: block(e) for e in all_envs.values()], rounds, torch.device("cpu"))
    finally:
        for envs in all_envs.values():
            envs.close()
    return {strategy: steps * len(tasks) / float(np.median(t)) for strategy, t in zip(all_envs, times)}


def bench_update(params, method: str, num_tasks: int, reps: int, device) -> tuple[float, int]:
    agent = make_agent(params, method, num_tasks, device)
    buf = filled_buffer(agent, num_tasks, 256, device)
    batch = buf.sample(128)
    flops = update_flops(agent, batch)
    seconds = _timed(lambda: agent.update(buf.sample(128)), reps, device)
    return seconds, flops


def bench_seed_group(params, method: str, num_tasks: int, seeds: int, reps: int, device,
                     stacked: bool = False) -> float:
    """Seconds per round of a group of `seeds` agents (d2r.sac.group): one update of each seed,
    sequential or stacked (seed_group_round), as a group's training runs them (the median round;
    one warm-up round first). Each seed's update rate is 1 / this."""
    from d2r.runtime.seeding import RandomStreams

    members = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        config = params.methods[method]
        agent = MultiTaskSAC(config, params.sac, mw.STATE_DIM, mw.ACTION_DIM, num_tasks, device)
        members.append((agent, filled_buffer(agent, num_tasks, 256, device), RandomStreams(device)))

    return _timed(seed_group_round(members, 128, stacked), reps, device)


def seed_group_round(members: list, batch_per_task: int, stacked: bool = False):
    """One round of a group's updates as its training runs them (d2r.sac.group), of (agent, replay
    buffer, RandomStreams) members: sequential, each agent updates in turn between its own random
    streams; stacked, one update of their stacked weights (d2r.sac.stacked), each drawing from its
    own stream. Returns that round as a function, which returns each agent's statistics."""
    from d2r.sac.stacked import StackedSAC

    def round_of_updates() -> dict:
        stats = {}
        for agent, buf, streams in members:
            with streams:
                stats[agent] = agent.update(buf.sample(batch_per_task))
        return stats

    if not stacked:
        return round_of_updates
    stack = StackedSAC([agent for agent, _, _ in members])

    def stacked_round() -> dict:
        outcomes = stack.update_in_streams([buf.sample(batch_per_task) for _, buf, _ in members],
                                           [streams for _, _, streams in members])
        return {agent: outcome for (agent, _, _), outcome in zip(members, outcomes)}

    return stacked_round


def group_act(params, method: str, num_tasks: int, seeds: int, device, together: bool):
    """One vector step's actions for a group of `seeds` seeds (d2r.sac.collect), read back as
    collection does: one act() per seed, or one for all (their policies stacked, each seed's noise
    from its own generator). Returns that step as a function."""
    from d2r.runtime.seeding import SeedGenerators
    from d2r.sac.agent import behaviour_action
    from d2r.sac.collect import stack_policies

    agents = [make_agent(params, method, num_tasks, device) for _ in range(seeds)]
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(seeds)]
    state = torch.randn(num_tasks, mw.STATE_DIM, device=device)
    task = torch.arange(num_tasks, device=device)
    if not together:
        return lambda: [behaviour_action(a.policy, a.temperature, state, task, g)[0].cpu()
                        for a, g in zip(agents, generators)]
    policy, temperature = stack_policies([a.policy for a in agents], [a.temperature for a in agents])
    states, tasks = state.repeat(seeds, 1), task.repeat(seeds)
    return lambda: behaviour_action(policy, temperature, states, tasks, SeedGenerators(generators))[0].cpu()


@contextmanager
def _capture_grads(store: list):
    """Record every optimizer step's gradients (before the step), in order."""
    def hook(optimizer, args, kwargs):
        store.append([p.grad.detach().clone() if p.grad is not None else None
                      for group in optimizer.param_groups for p in group["params"]])
    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def bench_plain_vs_fast(params, num_tasks: int, reps: int, device) -> dict:
    fast = make_agent(params, "d2r", num_tasks, device)
    plain = use_plain_networks(copy.deepcopy(fast))
    buf = filled_buffer(fast, num_tasks, 256, device)
    batch = buf.sample(128)
    results = []
    for agent in (fast, plain):
        torch.manual_seed(1)
        with _capture_grads([]) as grads:
            stats = agent.update(batch)
        results.append((stats, grads))
    (s_fast, g_fast), (s_plain, g_plain) = results
    loss_diff = max(abs(float(s_fast[k]) - float(s_plain[k])) for k in s_fast)
    grad_diff = max(float((a - b).abs().max()) for step_f, step_p in zip(g_fast, g_plain)
                    for a, b in zip(step_f, step_p) if a is not None)
    t_fast = _timed(lambda: fast.update(buf.sample(128)), reps, device)
    t_plain = _timed(lambda: plain.update(buf.sample(128)), reps, device)
    return {"fast_s": t_fast, "plain_s": t_plain, "loss_diff": loss_diff, "grad_diff": grad_diff}


def mlp_same_flops_step(target_flops: int, batch: int, device):
    """A plain MLP regression step (forward, backward, fused Adam) sized to `target_flops`.

    Returns (step function, its FLOPs)."""
    depth = 8

    def build(width):
        return mlp([mw.STATE_DIM + mw.ACTION_DIM, *[width] * depth, 1], activate_last=False).to(device)

    x = torch.randn(batch, mw.STATE_DIM + mw.ACTION_DIM, device=device)
    y = torch.randn(batch, 1, device=device)
    width = 256
    for _ in range(3):  # FLOPs grow with width^2: rescale twice to land on the target
        net = build(width)
        with FlopCounterMode(display=False) as counter:
            F.mse_loss(net(x), y).backward()
        width = max(8, int(width * (target_flops / counter.get_total_flops()) ** 0.5))
    net = build(width)
    optim = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)  # as the agent's
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(net(x), y).backward()

    def step():
        optim.zero_grad(set_to_none=True)
        F.mse_loss(net(x), y).backward()
        optim.step()

    return step, counter.get_total_flops()


def mtsac_same_flops(params, target_flops: int, num_tasks: int, device):
    """MT-SAC (the baselines' plain multi-task MLP) with its hidden widths scaled so that one
    update has about `target_flops`: the same SAC update as D2R's, without routing.

    Returns (agent, replay buffer, FLOPs per update)."""
    method = params.methods["mtsac"]
    hidden = list(method.net_args["hidden"])

    def build(scale):
        config = dataclasses.replace(method, net_args={**method.net_args,
                                                       "hidden": [max(8, int(h * scale)) for h in hidden]})
        agent = make_agent(params, "mtsac", num_tasks, device, config)
        buf = filled_buffer(agent, num_tasks, 256, device)
        return agent, buf, update_flops(agent, buf.sample(128))

    scale = 1.0
    for _ in range(2):  # FLOPs grow with width^2: rescale twice to land on the target
        scale *= (target_flops / build(scale)[2]) ** 0.5
    return build(scale)


def timed_alternately(fns, reps: int, device) -> list[np.ndarray]:
    """Seconds of each call of each function ([reps] per function), calling them in turn (one
    warm-up round): every function sees the same host load, which drifts on a shared machine."""
    times = [[] for _ in fns]
    for rep in range(reps + 1):
        for fn, store in zip(fns, times):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if rep:
                store.append(time.perf_counter() - start)
    return [np.array(t) for t in times]


def bench_end_to_end(params, epochs: int, updates: int, device, overlap: bool, vector_strategy: str = "sync") -> dict:
    from d2r.sac.training import Trainer

    run = params.run("smoke", "d2r", 0)
    budget = dataclasses.replace(run.experiment.budget, epochs=epochs, warmup_epochs=1, min_replay=0,
                                 updates_per_epoch=updates, batch_per_task=128, eval_every=10**6,
                                 checkpoint_every=10**6)
    run = dataclasses.replace(run, device=str(device), sac=dataclasses.replace(run.sac, overlap_collection=overlap),
                              env=dataclasses.replace(run.env, vector_strategy=vector_strategy),
                              experiment=dataclasses.replace(run.experiment, budget=budget))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, Path(tmp), progress=False)
        spent = {"collect": 0.0, "update": 0.0}

        def timed(name, fn):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    _sync(device)
                    spent[name] += time.perf_counter() - start
            return wrapper

        trainer.collector._episode = timed("collect", trainer.collector._episode)
        trainer.buffer.sample = timed("update", trainer.buffer.sample)  # an update: its batch, then the step
        trainer.agent.update = timed("update", trainer.agent.update)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    env_steps = epochs * run.env.max_episode_steps * len(run.experiment.tasks)
    return {"wall_s": wall, "epochs": epochs, "updates": (epochs - 1) * updates, "env_steps_per_s": env_steps / wall, "updates_per_s": (epochs - 1) * updates / wall,
            **{f"{k}_s": v for k, v in spent.items()},
            "wall_over_max": wall / max(spent.values()),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_cuda_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0}
