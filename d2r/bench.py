"""Throughput benchmarks: `python -m d2r bench [--quick]` prints a table for the current device.

- collection alone: env-steps/s of MT10 and MT50 (random actions, sync vector env);
- one full multi-task SAC update per method at paper width, batch 128 per task;
- the D2R update against the same update with the network written plainly from the spec
  (dense weights over all candidate sources, one module at a time): ratio and the largest
  difference of losses and gradients on the same batch (must be < 1e-5);
- achieved FLOP/s of the D2R update against a plain MLP update of the same FLOPs (the
  practical arithmetic limit of this machine) and against an MT-SAC update of the same FLOPs
  (the same SAC update without routing), timed alternately in one process;
- end-to-end training: env steps/s, updates/s, wall time against max(collection, updates),
  peak memory, for a fixed short MT10 run.
Numbers are printed, never asserted: targets live in the issue notes, not in tests.
"""

from __future__ import annotations

import argparse
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
from d2r.agent import MultiTaskSAC
from d2r.nets.d2r import D2RNet
from d2r.replay import TaskReplayBuffer

METHODS = ("d2r", "mtsac", "mhsac", "moe", "softmod")


class PlainD2RNet(D2RNet):
    """The readable reference: every node mixes ALL its candidate sources with a dense weight
    vector that is w_j on the selected sources and 0 elsewhere, exactly as spec section 1 reads."""

    @staticmethod
    def _softmax(sel):
        return torch.softmax(sel, dim=-1)

    def _dense(self, n: int, route: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[B, n] dense per-source values for node n from the route's [B, k] selection."""
        k = self._k[n - 1]
        dense = values.new_zeros(route.shape[0], n)
        return dense.scatter(1, route[:, n - 1, :k], values[:, n - 1, :k])

    def _modules_plain(self, x0, route, w):
        ys = [F.relu(self.layers[0](x0))]
        for n in range(1, self.num_modules + 1):
            weights = self._dense(n, route, w)
            x_n = sum(weights[:, j : j + 1] * ys[j] for j in range(n))
            if n == self.num_modules:
                return x_n
            ys.append(F.relu(self.layers[n](x_n)) + x_n)

    def _modules_resrouting(self, x0, route, w, trusted):
        y0 = F.relu(self.layers[0](x0))
        ys, yhats = [y0], [y0.detach()]
        for n in range(1, self.num_modules + 1):
            weights, m = self._dense(n, route, w), self._dense(n, route, trusted.to(w.dtype))
            xt = sum(weights[:, j : j + 1] * (m[:, j : j + 1] * ys[j] + (1 - m[:, j : j + 1]) * yhats[j])
                     for j in range(n))
            if n == self.num_modules:
                return xt
            r = sum(weights[:, j : j + 1] * ys[j] for j in range(n))
            a = F.relu(self.layers[n](xt))
            ys.append(a + r)
            yhats.append(a.detach() + r)


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


def update_flops(agent: MultiTaskSAC, batch) -> int:
    state = copy.deepcopy(agent.state_dict()), agent.optimizer_state()
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    agent.load_state_dict(state[0])
    agent.load_optimizer_state(state[1])
    return counter.get_total_flops()


# ---- sections --------------------------------------------------------------------------------
def bench_collection(benchmark: str, steps: int) -> float:
    envs = mw.make_task_envs(list(mw.BENCHMARKS[benchmark]), seed=0)
    envs.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, envs.num_envs, mw.ACTION_DIM))
    start = time.perf_counter()
    for a in actions:
        envs.step(a)
    elapsed = time.perf_counter() - start
    envs.close()
    return steps * envs.num_envs / elapsed


def bench_update(params, method: str, num_tasks: int, reps: int, device) -> tuple[float, int]:
    agent = make_agent(params, method, num_tasks, device)
    buf = filled_buffer(agent, num_tasks, 256, device)
    batch = buf.sample(128)
    flops = update_flops(agent, batch)
    seconds = _timed(lambda: agent.update(buf.sample(128)), reps, device)
    return seconds, flops


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
    plain = copy.deepcopy(fast)
    for net in (plain.policy.net, plain.q1, plain.q2, plain.q1_target, plain.q2_target):
        net.__class__ = PlainD2RNet  # same parameters, the plain forward pass
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
        layers = [torch.nn.Linear(mw.STATE_DIM + mw.ACTION_DIM, width), torch.nn.ReLU()]
        for _ in range(depth - 1):
            layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(device)

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


def bench_end_to_end(params, epochs: int, updates: int, device, overlap: bool) -> dict:
    from d2r.train import Trainer

    run = params.run("smoke", "d2r", 0)
    budget = dataclasses.replace(run.experiment.budget, epochs=epochs, warmup_epochs=1, min_replay=0,
                                 updates_per_epoch=updates, batch_per_task=128, eval_every=10**6,
                                 checkpoint_every=10**6)
    run = dataclasses.replace(run, device=str(device), sac=dataclasses.replace(run.sac, overlap_collection=overlap),
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
        trainer.train_steps = timed("update", trainer.train_steps)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    env_steps = epochs * run.env.max_episode_steps * len(run.experiment.tasks)
    return {"wall_s": wall, "epochs": epochs, "updates": (epochs - 1) * updates, "env_steps_per_s": env_steps / wall, "updates_per_s": (epochs - 1) * updates / wall,
            **{f"{k}_s": v for k, v in spent.items()},
            "wall_over_max": wall / max(spent.values()),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_cuda_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0}


# ---- job ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file (method and SAC settings)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: under 5 minutes on 2 CPU cores")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args) -> int:
    from d2r.config import load_params
    from d2r.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    device = resolve_device(args.device)
    reps = 3 if args.quick else 10
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")

    print("\n== collection alone (random actions, sync vector env) ==")
    for bench, steps in (("MT10", 200 if args.quick else 1000), ("MT50", 40 if args.quick else 200)):
        print(f"{bench}: {bench_collection(bench, steps):8.0f} env-steps/s")

    print("\n== one multi-task SAC update, paper width, 128 per task ==")
    print(f"{'method':10s} {'tasks':>5s} {'batch':>6s} {'updates/s':>10s} {'ms/update':>10s} {'GFLOP/update':>13s} {'GFLOP/s':>8s}")
    for bench, num_tasks in (("MT10", 10), ("MT50", 50)):
        for method in args.methods.split(","):
            seconds, flops = bench_update(params, method, num_tasks, 1 if (args.quick and bench == "MT50") else reps,
                                          device)
            print(f"{method:10s} {num_tasks:5d} {128 * num_tasks:6d} {1 / seconds:10.2f} {1000 * seconds:10.1f} "
                  f"{flops / 1e9:13.2f} {flops / seconds / 1e9:8.1f}")

    print("\n== D2R update: fast network vs the plain one-module-at-a-time reference (MT10) ==")
    cmp = bench_plain_vs_fast(params, 10, reps, device)
    print(f"fast {1000 * cmp['fast_s']:.1f} ms, plain {1000 * cmp['plain_s']:.1f} ms, "
          f"speed-up x{cmp['plain_s'] / cmp['fast_s']:.2f}; max |loss diff| {cmp['loss_diff']:.2e}, "
          f"max |grad diff| {cmp['grad_diff']:.2e} ({'OK' if max(cmp['loss_diff'], cmp['grad_diff']) < 1e-5 else 'MISMATCH'})")

    print("\n== arithmetic efficiency: D2R update vs a plain MLP step and an MT-SAC update of the same FLOPs "
          "(MT10), timed alternately ==")
    agent = make_agent(params, "d2r", 10, device)
    buf = filled_buffer(agent, 10, 256, device)
    flops = update_flops(agent, buf.sample(128))
    mlp_step, mlp_flops = mlp_same_flops_step(flops, 1280, device)
    mtsac, mtsac_buf, mtsac_flops = mtsac_same_flops(params, flops, 10, device)
    d2r_s, mlp_s, mtsac_s = timed_alternately(
        [lambda: agent.update(buf.sample(128)), mlp_step, lambda: mtsac.update(mtsac_buf.sample(128))],
        15 if args.quick else 30, device)
    d2r_rate, mlp_rate, mtsac_rate = (f / np.median(t) for f, t in
                                      ((flops, d2r_s), (mlp_flops, mlp_s), (mtsac_flops, mtsac_s)))

    def round_quartiles(other_flops, other_s):  # D2R's FLOP/s over the other's, round by round
        q1, q3 = np.percentile(100 * flops * other_s / (other_flops * d2r_s), [25, 75])
        return f"per round: quartiles {q1:.0f}-{q3:.0f}%"

    print(f"D2R update {d2r_rate / 1e9:.1f} GFLOP/s ({flops / 1e9:.2f} GFLOP); MLP step {mlp_rate / 1e9:.1f} GFLOP/s "
          f"({mlp_flops / 1e9:.2f} GFLOP): D2R at {100 * d2r_rate / mlp_rate:.0f}% of the MLP "
          f"({round_quartiles(mlp_flops, mlp_s)}); MT-SAC update {mtsac_rate / 1e9:.1f} GFLOP/s "
          f"({mtsac_flops / 1e9:.2f} GFLOP): D2R at {100 * d2r_rate / mtsac_rate:.0f}% of the same SAC update "
          f"without routing ({round_quartiles(mtsac_flops, mtsac_s)})")

    print("\n== end to end: short MT10 D2R run (collection in sequence / overlapped with updates) ==")
    for overlap in (False, True):
        e2e = bench_end_to_end(params, 3 if args.quick else 6, 20 if args.quick else 100, device, overlap)
        print(f"{'overlapped' if overlap else 'sequential':10s}: wall {e2e['wall_s']:.1f} s, "
              f"{e2e['env_steps_per_s']:.0f} env-steps/s, {e2e['updates_per_s']:.2f} updates/s; "
              f"collection {e2e['collect_s']:.1f} s, updates {e2e['update_s']:.1f} s, "
              f"wall / max(collection, updates) = {e2e['wall_over_max']:.2f}; "
              f"peak RSS {e2e['peak_rss_gb']:.2f} GB, peak CUDA {e2e['peak_cuda_gb']:.2f} GB")
    # The paper's MT10 epoch: one episode per task (as measured here) and 200 updates.
    collect_epoch = e2e["collect_s"] / e2e["epochs"]
    per_update = e2e["update_s"] / e2e["updates"]
    sequential = 7500 * (collect_epoch + 200 * per_update)
    overlapped = 7500 * max(collect_epoch, 200 * per_update)
    print(f"projection for the paper's MT10 budget (7500 epochs, 1.5M updates): {sequential / 3600:.1f} h "
          f"sequential, {overlapped / 3600:.1f} h if collection fully overlapped updates")
    return 0
