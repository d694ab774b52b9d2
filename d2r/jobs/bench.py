"""`python -m d2r bench [--quick] [--sections ...]`: the throughput benchmarks of d2r/benchmark.py,
printed for the current device. Numbers are printed, never asserted."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from d2r import benchmark as B
from d2r.nets import NETS

METHODS = tuple(NETS)   # by default the method of params.yaml named after each network kind
SECTIONS = ("collection", "update", "seed-groups", "plain", "efficiency", "end-to-end")
GROUP_SIZES = (1, 2, 5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file (method and SAC settings)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: under 5 minutes on 2 CPU cores")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to time")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args) -> int:
    from d2r.config import load_params
    from d2r.runtime.devices import resolve_device

    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"error: unknown bench section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    device = resolve_device(args.device)
    reps = 3 if args.quick else 10
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")

    if "collection" in sections:
        print("\n== collection alone (random actions): env.vector_strategy sync (every task in this process) "
              "vs async (one worker process per task), timed in turn ==")
        for bench, steps in (("MT10", 50), ("MT50", 10)):
            rates = B.bench_collection(bench, steps, rounds=reps)
            print(f"{bench}: " + ", ".join(f"{s} {r:6.0f} env-steps/s" for s, r in rates.items())
                  + f" (async / sync x{rates['async'] / rates['sync']:.2f}; median of {reps} blocks of {steps} steps)")

    if "update" in sections:
        print("\n== one multi-task SAC update, paper width, 128 per task ==")
        print(f"{'method':10s} {'tasks':>5s} {'batch':>6s} {'updates/s':>10s} {'ms/update':>10s} {'GFLOP/update':>13s} {'GFLOP/s':>8s}")
        for bench, num_tasks in (("MT10", 10), ("MT50", 50)):
            for method in args.methods.split(","):
                seconds, flops = B.bench_update(params, method, num_tasks,
                                                1 if (args.quick and bench == "MT50") else reps, device)
                print(f"{method:10s} {num_tasks:5d} {128 * num_tasks:6d} {1 / seconds:10.2f} {1000 * seconds:10.1f} "
                      f"{flops / 1e9:13.2f} {flops / seconds / 1e9:8.1f}")

    if "seed-groups" in sections:
        seed_groups(params, device, reps, method=args.methods.split(",")[0])

    if "plain" in sections:
        print("\n== D2R update: fast network vs the plain one-module-at-a-time reference (MT10) ==")
        cmp = B.bench_plain_vs_fast(params, 10, reps, device)
        print(f"fast {1000 * cmp['fast_s']:.1f} ms, plain {1000 * cmp['plain_s']:.1f} ms, "
              f"speed-up x{cmp['plain_s'] / cmp['fast_s']:.2f}; max |loss diff| {cmp['loss_diff']:.2e}, "
              f"max |grad diff| {cmp['grad_diff']:.2e} "
              f"({'OK' if max(cmp['loss_diff'], cmp['grad_diff']) < 1e-5 else 'MISMATCH'})")

    if "efficiency" in sections:
        efficiency(params, device, 15 if args.quick else 30)

    if "end-to-end" in sections:
        end_to_end(params, device, 3 if args.quick else 6, 20 if args.quick else 100)
    return 0


def seed_groups(params, device, reps: int, method: str = "d2r", num_tasks: int = 10,
                sizes: tuple[int, ...] = GROUP_SIZES) -> None:
    print(f"\n== a group of S seeds trained together (train --seed repeated): the S agents' {method} updates, "
          f"sequential and stacked (group_update), MT{num_tasks} paper width, 128 per task ==")
    print(f"{'S':>3s} {'group_update':>13s} {'updates/s per seed':>19s} {'updates/s, all seeds':>21s} "
          f"{'ms per round of S':>18s}")
    for seeds in sizes:
        for stacked in (False, True) if seeds > 1 else (False,):
            seconds = B.bench_seed_group(params, method, num_tasks, seeds, reps, device, stacked)
            print(f"{seeds:3d} {'stacked' if stacked else 'sequential':>13s} {1 / seconds:19.2f} "
                  f"{seeds / seconds:21.2f} {1000 * seconds:18.1f}")
    print(f"act() per vector step of the group (collection, {num_tasks} tasks per seed), ms: one by one | together")
    for seeds in sizes[1:]:
        one_by_one, together = (B._timed(B.group_act(params, method, num_tasks, seeds, device, stacked),
                                         max(reps, 20), device) for stacked in (False, True))
        print(f"{seeds:3d} {1000 * one_by_one:13.2f} | {1000 * together:.2f}")


def efficiency(params, device, rounds: int) -> None:
    print("\n== arithmetic efficiency: D2R update vs a plain MLP step and an MT-SAC update of the same FLOPs "
          "(MT10), timed alternately ==")
    agent = B.make_agent(params, "d2r", 10, device)
    buf = B.filled_buffer(agent, 10, 256, device)
    flops = B.update_flops(agent, buf.sample(128))
    mlp_step, mlp_flops = B.mlp_same_flops_step(flops, 1280, device)
    mtsac, mtsac_buf, mtsac_flops = B.mtsac_same_flops(params, flops, 10, device)
    d2r_s, mlp_s, mtsac_s = B.timed_alternately(
        [lambda: agent.update(buf.sample(128)), mlp_step, lambda: mtsac.update(mtsac_buf.sample(128))],
        rounds, device)
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


def end_to_end(params, device, epochs: int, updates: int) -> None:
    print("\n== end to end: short MT10 D2R run (collection in sequence / overlapped with updates; "
          "sync / async vector env) ==")
    runs = {}
    for overlap, strategy in ((False, "sync"), (True, "sync"), (True, "async")):
        e2e = runs[overlap, strategy] = B.bench_end_to_end(params, epochs, updates, device, overlap, strategy)
        print(f"{'overlapped' if overlap else 'sequential':10s} {strategy:5s}: wall {e2e['wall_s']:.1f} s, "
              f"{e2e['env_steps_per_s']:.0f} env-steps/s, {e2e['updates_per_s']:.2f} updates/s; "
              f"collection {e2e['collect_s']:.1f} s, updates {e2e['update_s']:.1f} s, "
              f"wall / max(collection, updates) = {e2e['wall_over_max']:.2f}; "
              f"peak RSS {e2e['peak_rss_gb']:.2f} GB, peak CUDA {e2e['peak_cuda_gb']:.2f} GB")
    # The paper's MT10 epoch: one episode per task (as measured here) and 200 updates.
    e2e = runs[True, "sync"]
    collect_epoch = e2e["collect_s"] / e2e["epochs"]
    per_update = e2e["update_s"] / e2e["updates"]
    sequential = 7500 * (collect_epoch + 200 * per_update)
    overlapped = 7500 * max(collect_epoch, 200 * per_update)
    print(f"projection for the paper's MT10 budget (7500 epochs, 1.5M updates): {sequential / 3600:.1f} h "
          f"sequential, {overlapped / 3600:.1f} h if collection fully overlapped updates")
