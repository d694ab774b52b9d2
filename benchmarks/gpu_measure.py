"""The GPU check's measurements made in its own process (benchmarks/gpu_check.py runs them, each
within a time slice): updates/s, the D2R update's profile, larger batches, env-steps/s and act(),
measured training epochs, an evaluation's cost. Run as a script, it is one of the processes that
share the GPU (`--shared-worker`).

Times are medians of at least three blocks of calls, each block timed with CUDA events on a GPU
(the device's time from the block's first launch to its last kernel, idle gaps included) and with
the wall clock on a CPU. Each function returns plain data for gpu_check.json; a unit that does
not fit its deadline is reported as skipped.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from d2r import benchmark as bench  # noqa: E402
from d2r import envs as mw  # noqa: E402

MT10_TASKS = 10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_times(fn, calls: int, blocks: int, device: torch.device) -> list[float]:
    """Seconds per call in each of `blocks` blocks of `calls` calls."""
    times = []
    for _ in range(blocks):
        sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000 / calls)
        else:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - start) / calls)
    return times


def median(times: list[float]) -> float:
    return float(np.median(times))


def fresh_memory(device: torch.device) -> None:
    gc.collect()  # an agent and its CUDA graph hold each other: free the last one before measuring
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def with_sac(params, **changes):
    return dataclasses.replace(params, sac=dataclasses.replace(params.sac, **changes))


def ready_agent(params, method: str, setting: str, batch_per_task: int, sizes, device):
    """An agent (cuda_graphs `setting`) and a filled replay buffer, warmed up past its graph capture."""
    agent = bench.make_agent(with_sac(params, cuda_graphs=setting), method, MT10_TASKS, device)
    buf = bench.filled_buffer(agent, MT10_TASKS, sizes.fill, device)
    for _ in range(sizes.warm):  # a graph: three eager warm-ups, the capture, a replay
        agent.update(buf.sample(batch_per_task))
    return agent, buf


def checked(agent, stats: dict | Exception) -> None:
    if isinstance(stats, Exception):  # a seed of a stacked group (d2r.sac.stacked)
        raise RuntimeError(f"non-finite update ({stats})")
    fault = agent.pop_fault()
    if fault is not None or not all(bool(torch.isfinite(v)) for v in stats.values()):
        raise RuntimeError(f"non-finite update ({fault})")


def update_timing(params, method: str, setting: str, batch_per_task: int, sizes, device) -> dict:
    fresh_memory(device)
    agent, buf = ready_agent(params, method, setting, batch_per_task, sizes, device)
    out = {}
    times = block_times(lambda: out.update(stats=agent.update(buf.sample(batch_per_task))), sizes.calls,
                        sizes.blocks, device)
    checked(agent, out["stats"])
    return {"ms": 1000 * median(times), "updates_per_s": 1 / median(times), "blocks_ms": [1000 * t for t in times],
            "peak_gb": peak_gb(device), "mode": agent.update_mode}


# ---- steps ---------------------------------------------------------------------------------------
def update_rates(params, sizes, device, methods, deadline) -> dict:
    """Each method's update at the MT10 batch, eager (cuda_graphs off) and as a CUDA graph (on)."""
    rows = {}
    for method in methods:
        for mode, setting in (("eager", "off"), ("graph", "on")):
            key = f"{method} {mode}"
            if deadline.passed():
                rows[key] = {"skipped": "out of time"}
                continue
            try:
                rows[key] = update_timing(params, method, setting, sizes.batch_per_task, sizes, device)
                print(f"{key:16s} {rows[key]['ms']:8.2f} ms  {rows[key]['updates_per_s']:8.1f} updates/s  "
                      f"peak {rows[key]['peak_gb']:.2f} GB ({rows[key]['mode']})", flush=True)
            except Exception as err:  # this unit only: the next still runs
                rows[key] = {"error": f"{type(err).__name__}: {err}"}
                print(f"{key}: FAILED {rows[key]['error']}", flush=True)
    return {"batch": MT10_TASKS * sizes.batch_per_task, "rows": rows}


def _kernel_profile(agent, buf, batch_per_task: int, updates: int, device) -> tuple[dict, str]:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(updates):
            agent.update(buf.sample(batch_per_task))
        sync(device)
    events = prof.events()
    on_device = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = [e for e in on_device if not e.name.startswith(("Memcpy", "Memset"))]
    intervals = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    busy, end = 0.0, float("-inf")
    for a, b in intervals:  # the union: kernels of several streams may overlap
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    names = [e.name for e in events if e.device_type == DeviceType.CPU]
    result = {
        "kernels_per_update": len(kernels) / updates,
        "copies_per_update": (len(on_device) - len(kernels)) / updates,
        "gpu_busy_ms": busy / 1000 / updates,
        "mean_kernel_us": busy / len(kernels) if kernels else None,
        "launches_per_update": sum(n in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel")
                                   for n in names) / updates,
        "graph_launches_per_update": sum(n == "cudaGraphLaunch" for n in names) / updates,
        "host_syncs_per_update": sum(n in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
                                     for n in names) / updates,
        "aten_ops_per_update": sum(_outer_op(e) for e in events) / updates,
    }
    sort = "self_device_time_total" if kernels else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=25)
    except Exception:  # older names of the sort key
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if kernels else sort, row_limit=25)
    return result, table


def _outer_op(event) -> bool:
    """An aten op called from Python, not from within another op."""
    parent = event.cpu_parent
    return event.name.startswith("aten::") and not (parent is not None and parent.name.startswith("aten::"))


def d2r_profile(params, sizes, device, profile_path: Path, deadline) -> dict:
    """D2R's update eager and as a graph: kernels per update, GPU-busy time against the measured
    time per update (busy/wall: how much of the update the GPU works), host synchronisations."""
    rows, tables = {}, []
    for mode, setting in (("eager", "off"), ("graph", "on")):
        if deadline.passed():
            rows[mode] = {"skipped": "out of time"}
            continue
        try:
            fresh_memory(device)
            agent, buf = ready_agent(params, "d2r", setting, sizes.batch_per_task, sizes, device)
            times = block_times(lambda: agent.update(buf.sample(sizes.batch_per_task)), sizes.calls, sizes.blocks,
                                device)
            row, table = _kernel_profile(agent, buf, sizes.batch_per_task, sizes.profile_updates, device)
            row["ms"] = 1000 * median(times)
            if row["gpu_busy_ms"]:
                row["busy_fraction"] = row["gpu_busy_ms"] / row["ms"]
            rows[mode] = row
            tables.append(f"== D2R update, {mode} (cuda_graphs {setting}), {sizes.profile_updates} updates, "
                          f"batch {MT10_TASKS * sizes.batch_per_task} ==\n{table}\n")
            print(f"D2R {mode}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float)),
                  flush=True)
        except Exception as err:
            rows[mode] = {"error": f"{type(err).__name__}: {err}"}
            print(f"D2R {mode} profile: FAILED {rows[mode]['error']}", flush=True)
        profile_path.write_text("\n".join(tables))
    return {"rows": rows}


def d2r_large_batch(params, sizes, device, deadline) -> dict:
    """The D2R graph update at the MT10 batch and at `sizes.large_factor` times it (several seeds'
    batches in one update would cost this)."""
    rows = {}
    for factor in (1, sizes.large_factor):
        if deadline.passed():
            rows[f"x{factor}"] = {"skipped": "out of time"}
            continue
        try:
            rows[f"x{factor}"] = update_timing(params, "d2r", "on", factor * sizes.batch_per_task, sizes, device)
            print(f"D2R graph, batch x{factor}: {rows[f'x{factor}']['ms']:.2f} ms", flush=True)
        except Exception as err:
            rows[f"x{factor}"] = {"error": f"{type(err).__name__}: {err}"}
    return {"batch": MT10_TASKS * sizes.batch_per_task, "rows": rows}


def seed_groups(params, sizes, device, deadline) -> dict:
    """A group of S D2R agents as the `train` job updates them (d2r.sac.group), S in
    sizes.group_sizes: `sequential`, one graph update of each seed in turn, each in its own random
    streams; `stacked` (S > 1), one graph update of the seeds' stacked weights (d2r.sac.stacked).
    Per-seed and total updates/s: which is faster sets d2r.sac.group.AUTO_STACKED["cuda"]."""
    from d2r.runtime.seeding import RandomStreams

    rows = {}
    for size in sizes.group_sizes:
        for mode in ("sequential", "stacked") if size > 1 else ("sequential",):
            name = f"S={size} {mode}"
            if deadline.passed():
                rows[name] = {"skipped": "out of time"}
                continue
            try:
                fresh_memory(device)
                members = []
                for seed in range(size):
                    torch.manual_seed(seed)
                    agent, buf = ready_agent(params, "d2r", "on", sizes.batch_per_task, sizes, device)
                    members.append((agent, buf, RandomStreams(device)))
                round_of_updates = bench.seed_group_round(members, sizes.batch_per_task, mode == "stacked")
                for _ in range(sizes.warm if mode == "stacked" else 0):  # the stack's graph: warm-ups, capture
                    round_of_updates()
                out = {}
                times = block_times(lambda: out.update(round_of_updates()), sizes.calls, sizes.blocks, device)
                for agent, stats in out.items():
                    checked(agent, stats)
                rows[name] = {"round_ms": 1000 * median(times), "per_seed_updates_per_s": 1 / median(times),
                              "updates_per_s": size / median(times), "peak_gb": peak_gb(device)}
                print(f"seed group {name}: {rows[name]['per_seed_updates_per_s']:.1f} updates/s per seed", flush=True)
            except Exception as err:  # this unit only: the next still runs
                rows[name] = {"error": f"{type(err).__name__}: {err}"}
    return {"rows": rows}


def collection_rates(params, sizes, device, deadline) -> dict:
    """Env-steps/s with random actions (MT10, MT50; sync and async vector envs), and the cost of
    the D2R policy's act() per vector step, its action read back as collection does."""
    out = {"cpu_cores": _cores()}
    for benchmark in ("MT10", "MT50"):
        if deadline.passed():
            out[benchmark] = {"skipped": "out of time"}
            continue
        try:
            out[benchmark] = bench.bench_collection(benchmark, sizes.env_steps, rounds=3)
            print(f"{benchmark}: " + ", ".join(f"{k} {v:.0f} env-steps/s" for k, v in out[benchmark].items()),
                  flush=True)
        except Exception as err:
            out[benchmark] = {"error": f"{type(err).__name__}: {err}"}
    for benchmark in ("MT10", "MT50"):
        key = f"act {benchmark}"
        if deadline.passed():
            out[key] = {"skipped": "out of time"}
            continue
        try:
            tasks = len(mw.BENCHMARKS[benchmark])
            agent = bench.make_agent(params, "d2r", tasks, device)
            state = torch.randn(tasks, mw.STATE_DIM, device=device)
            task = torch.arange(tasks, device=device)
            times = block_times(lambda: agent.act(state, task)[0].cpu(), sizes.act_calls, 3, device)
            out[key] = {"ms": 1000 * median(times)}
            print(f"{key}: {out[key]['ms']:.3f} ms per vector step", flush=True)
        except Exception as err:
            out[key] = {"error": f"{type(err).__name__}: {err}"}
    seeds = max(sizes.group_sizes)
    for mode in ("one by one", "together"):  # a seed group's collection step (d2r.sac.collect)
        key = f"act MT10 S={seeds} {mode}"
        if deadline.passed():
            out[key] = {"skipped": "out of time"}
            continue
        try:
            step = bench.group_act(params, "d2r", MT10_TASKS, seeds, device, mode == "together")
            out[key] = {"ms": 1000 * median(block_times(step, sizes.act_calls, 3, device))}
            print(f"{key}: {out[key]['ms']:.3f} ms per vector step", flush=True)
        except Exception as err:
            out[key] = {"error": f"{type(err).__name__}: {err}"}
    return out


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def training_epochs(params, sizes, device, deadline) -> dict:
    """Measured MT10 D2R training epochs inside the trainer (graphs on, updates_per_epoch updates of
    batch 128 per task), overlapped collection off and on, sync and async envs: the median of the
    epochs after the first with updates (that one holds the warm-up and the graph capture)."""
    from d2r.sac.training import Trainer

    rows = {}
    for strategy in ("sync", "async"):  # the paper's setting first
        for overlap in (False, True):
            key = f"overlap {'on' if overlap else 'off'}, {strategy}"
            if deadline.passed():
                rows[key] = {"skipped": "out of time"}
                continue
            run = params.run("smoke", "d2r", 0)  # MT10, every task
            budget = dataclasses.replace(run.experiment.budget, epochs=2 + sizes.epoch_blocks, warmup_epochs=1,
                                         min_replay=0, updates_per_epoch=sizes.updates_per_epoch,
                                         batch_per_task=sizes.batch_per_task, eval_every=10**6, checkpoint_every=10**6)
            run = dataclasses.replace(
                run, device=str(device), sac=dataclasses.replace(run.sac, overlap_collection=overlap, cuda_graphs="on"),
                env=dataclasses.replace(run.env, vector_strategy=strategy, max_episode_steps=sizes.episode_steps),
                experiment=dataclasses.replace(run.experiment, budget=budget))
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    trainer = Trainer(run, Path(tmp), progress=False, device=device)
                    trainer.periodic_evaluation = lambda env_steps: {"mean_success": float("nan")}  # timed apart
                    try:
                        trainer.train()
                    finally:
                        trainer.close()  # (again after a finished run: closing twice is harmless)
                    walls = [r["wall_time"] for r in trainer.train_log.records]
                epochs = list(np.diff([0.0, *walls]))[2:]  # after the collection-only and the capture epoch
                rows[key] = {"epoch_s": median(epochs), "epochs_s": epochs}
                print(f"{key}: {rows[key]['epoch_s']:.2f} s per epoch ({sizes.updates_per_epoch} updates, "
                      f"{sizes.episode_steps}-step episodes)", flush=True)
            except Exception as err:
                rows[key] = {"error": f"{type(err).__name__}: {err}"}
                print(f"{key}: FAILED {rows[key]['error']}", flush=True)
    return {"updates_per_epoch": sizes.updates_per_epoch, "episode_steps": sizes.episode_steps, "rows": rows}


def evaluation_cost(params, sizes, device, deadline) -> dict:
    """One greedy evaluation episode per MT10 task (sync envs, D2R at paper width): the median of
    three; a periodic evaluation of the paper is eval_episodes (32) of them."""
    from d2r.sac.evaluation import evaluate_agent

    tasks = list(mw.BENCHMARKS["MT10"])
    agent = bench.make_agent(params, "d2r", len(tasks), device)
    envs = mw.make_task_envs(tasks, seed=0, vector_strategy="sync", stream=1, max_episode_steps=sizes.episode_steps)
    try:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            evaluate_agent(agent, envs, tasks, episodes=1)
            times.append(time.perf_counter() - start)
    finally:
        envs.close()
    per_episode = median(times)
    episodes = params.experiment("mt10").budget.eval_episodes
    print(f"evaluation: {per_episode:.2f} s per episode of every task; {episodes} episodes: "
          f"{episodes * per_episode:.1f} s", flush=True)
    return {"episode_s": per_episode, "episodes_s": times, "eval_episodes": episodes,
            "evaluation_s": episodes * per_episode, "episode_steps": sizes.episode_steps}


# ---- one of the processes sharing the GPU --------------------------------------------------------
def shared_worker(argv: list[str]) -> int:
    """Builds a D2R graph agent, prints `ready`, waits for a line on stdin, then times updates for
    `seconds` (blocks of `calls`, at least three) and prints one JSON line."""
    import argparse

    from d2r.config import load_params

    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-per-task", type=int, default=128)
    parser.add_argument("--fill", type=int, default=256)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)
    sizes = types.SimpleNamespace(fill=args.fill, warm=5)
    agent, buf = ready_agent(load_params(args.params), "d2r", "on", args.batch_per_task, sizes, device)
    sync(device)
    print("ready", flush=True)
    sys.stdin.readline()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < args.seconds:
        times += block_times(lambda: agent.update(buf.sample(args.batch_per_task)), args.calls, 1, device)
    result = {"ms": 1000 * median(times), "updates_per_s": 1 / median(times), "blocks": len(times)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--shared-worker"]:
        sys.exit(shared_worker(sys.argv[2:]))
    sys.exit("usage: gpu_measure.py --shared-worker [...] (the check itself: benchmarks/gpu_check.sh)")
