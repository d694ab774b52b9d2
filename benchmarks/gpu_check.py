"""The GPU check of issue 19, in one command: `bash benchmarks/gpu_check.sh` on a GPU machine (it
installs the packages such a machine lacks from wheels/, then runs this).

Steps, each bounded in time; one that fails or runs out of time is reported in the table and the
next one still runs:
1. the CUDA tests (tests/test_cuda.py: every method's update on CUDA against the CPU's, no host
   synchronisation in the capturable update, the CUDA-graph update against the eager one);
2. updates/s of each method at MT10 size (paper networks, 128 transitions per task), eager
   (cuda_graphs off) and as a CUDA graph (on), with each one's peak GPU memory;
3. env-steps/s of MT10 collection with random actions, sync and async vector envs;
4. a short MT10 D2R training inside the trainer with cuda_graphs on (d2r.bench.bench_end_to_end):
   seconds of collection per epoch and per update, projected to the paper's MT10 budget
   (7500 epochs of one episode per task and 200 updates);
5. the training job on CUDA (cuda_graphs on, MT10) killed with SIGKILL after its second
   checkpoint and run again: it must resume and finish; its weights against an uninterrupted run;
6. `python -m d2r bench --quick` on the device, in the time left;
then one table (also written as JSON, with every step's log, under --out).

--cpu: a dry run of the same on a CPU with small sizes (the CUDA tests skip; cuda_graphs on runs
the capturable update eagerly; the bench is left out unless --bench), to check the script itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from d2r import bench  # noqa: E402
from d2r import envs as mw  # noqa: E402
from d2r.config import load_params  # noqa: E402

METHODS = ("d2r", "mtsac", "mhsac", "moe", "softmod")


@dataclasses.dataclass
class Sizes:
    batch_per_task: int   # update benchmark and training
    warm: int             # updates before timing (a CUDA graph: 3 eager warm-ups, then the capture)
    reps: int             # timed updates
    env_steps: int        # random-action steps per vector env
    e2e_epochs: int       # trainer run of step 4 (first epoch: warm-up, no updates)
    e2e_updates: int
    train_updates: int    # training job of step 5: updates per epoch
    small_nets: bool      # step 5 with small networks (the CPU dry run)


GPU_SIZES = Sizes(batch_per_task=128, warm=5, reps=30, env_steps=400, e2e_epochs=4, e2e_updates=100,
                  train_updates=50, small_nets=False)
CPU_SIZES = Sizes(batch_per_task=16, warm=2, reps=3, env_steps=50, e2e_epochs=2, e2e_updates=3,
                  train_updates=3, small_nets=True)


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def step(results: dict, name: str, fn, *args, **kwargs):
    """Run one step; record its result or its error, and its seconds."""
    start = time.perf_counter()
    print(f"\n== {name} ==", flush=True)
    try:
        results[name] = {"ok": True, **fn(*args, **kwargs)}
    except Exception as err:  # reported in the table; the next step still runs
        results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(f"FAILED: {results[name]['error']}", flush=True)
    results[name]["seconds"] = round(time.perf_counter() - start, 1)
    return results[name]


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """A subprocess with its output in `log` (and its tail printed); TimeoutExpired past `timeout`."""
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                              timeout=max(timeout, 1), env=env)
    tail = log.read_text().strip().splitlines()[-15:]
    print("\n".join(tail), flush=True)
    return proc


def with_cuda_graphs(params, setting: str):
    return dataclasses.replace(params, sac=dataclasses.replace(params.sac, cuda_graphs=setting))


def peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def reset_peak(device) -> None:
    gc.collect()  # an agent and its CUDA graph hold each other: free the last method's before measuring
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---- steps -------------------------------------------------------------------------------------
def cuda_tests(out: Path, deadline: Deadline) -> dict:
    proc = run_logged([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                      out / "cuda_tests.log", timeout=min(300, deadline.left()))
    summary = proc_summary(out / "cuda_tests.log")
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"pytest exit status {proc.returncode}: {summary}")
    return {"summary": summary}


def proc_summary(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else "(no output)"


def update_rates(params, sizes: Sizes, device, methods) -> dict:
    tasks = 10
    rows = {}
    for method in methods:
        row = {}
        for mode, setting in (("eager", "off"), ("graph", "on")):
            reset_peak(device)
            agent = bench.make_agent(with_cuda_graphs(params, setting), method, tasks, device)
            buf = bench.filled_buffer(agent, tasks, 256, device)
            for _ in range(sizes.warm):
                agent.update(buf.sample(sizes.batch_per_task))
            bench._sync(device)
            start = time.perf_counter()
            for _ in range(sizes.reps):
                stats = agent.update(buf.sample(sizes.batch_per_task))
            bench._sync(device)
            seconds = time.perf_counter() - start
            fault = agent.pop_fault()
            if fault is not None or not all(torch.isfinite(v) for v in stats.values()):
                raise RuntimeError(f"{method} {mode}: non-finite update ({fault})")
            row[mode] = sizes.reps / seconds
            row[f"{mode}_peak_gb"] = peak_gb(device)
            row[f"{mode}_mode"] = agent.update_mode
            del agent, buf
        rows[method] = row
        print(f"{method:8s} eager {row['eager']:8.1f} updates/s ({row['eager_mode']}), "
              f"graphs {row['graph']:8.1f} updates/s ({row['graph_mode']}), x{row['graph'] / row['eager']:.2f}; "
              f"peak {row['eager_peak_gb']:.2f} / {row['graph_peak_gb']:.2f} GB", flush=True)
    return {"tasks": tasks, "batch": tasks * sizes.batch_per_task, "methods": rows}


def env_rates(sizes: Sizes) -> dict:
    rates = {}
    for strategy in ("sync", "async"):
        envs = mw.make_task_envs(list(mw.BENCHMARKS["MT10"]), seed=0, vector_strategy=strategy)
        envs.reset()
        actions = np.random.default_rng(0).uniform(-1, 1, size=(sizes.env_steps, envs.num_envs, mw.ACTION_DIM))
        start = time.perf_counter()
        for a in actions:
            envs.step(a)
        rates[strategy] = sizes.env_steps * envs.num_envs / (time.perf_counter() - start)
        envs.close()
        print(f"MT10 {strategy:5s}: {rates[strategy]:8.0f} env-steps/s", flush=True)
    return rates


def projection(params, sizes: Sizes, device, eager_update_s: float | None) -> dict:
    e2e = bench.bench_end_to_end(with_cuda_graphs(params, "on"), sizes.e2e_epochs, sizes.e2e_updates, device,
                                 overlap=False)
    collect_epoch = e2e["collect_s"] / e2e["epochs"]
    per_update = e2e["update_s"] / e2e["updates"]
    hours = {"graphs_sequential_h": 7500 * (collect_epoch + 200 * per_update) / 3600,
             "graphs_overlapped_h": 7500 * max(collect_epoch, 200 * per_update) / 3600}
    if eager_update_s is not None:
        hours["eager_sequential_h"] = 7500 * (collect_epoch + 200 * eager_update_s) / 3600
    print(f"collection {collect_epoch:.2f} s per MT10 epoch, {1000 * per_update:.2f} ms per update in training; "
          + ", ".join(f"{k} {v:.1f}" for k, v in hours.items()), flush=True)
    return {"collect_epoch_s": collect_epoch, "update_s": per_update, "peak_cuda_gb": e2e["peak_cuda_gb"], **hours}


def training_params(tmp: Path, device, sizes: Sizes) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["device"] = device.type
    raw["train"]["cuda_graphs"] = "on"
    if sizes.small_nets:
        raw["nets"]["d2r"].update(encoder=[32, 32], num_modules=4, width=16, router_hidden=[16])
    raw["presets"]["gpucheck"] = dict(epochs=4, warmup_epochs=1, min_replay=0, updates_per_epoch=sizes.train_updates,
                                      batch_per_task=sizes.batch_per_task, replay_size=100000, eval_every=4,
                                      eval_episodes=1, checkpoint_every=1)
    raw["experiments"] = {"gpucheck": dict(benchmark="MT10", tasks="all", goal_mode="fixed", methods=["d2r"],
                                           seeds=[0], preset="gpucheck", final_eval_episodes=1)}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def kill_and_resume(out: Path, device, sizes: Sizes, deadline: Deadline) -> dict:
    """The runs in a temporary folder, their logs in `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        return _kill_and_resume(Path(tmp), out, device, sizes, deadline)


def _kill_and_resume(tmp: Path, out: Path, device, sizes: Sizes, deadline: Deadline) -> dict:
    params = training_params(tmp, device, sizes)

    def cmd(run: Path) -> list[str]:
        return [sys.executable, "-m", "d2r", "train", "--params", str(params), "--experiment", "gpucheck",
                "--method", "d2r", "--seed", "0", "--out", str(run), "--no-progress"]

    full, resumed = tmp / "uninterrupted", tmp / "killed"
    proc = run_logged(cmd(full), out / "uninterrupted.log", timeout=min(240, deadline.left()))
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed (exit {proc.returncode}; {out / 'uninterrupted.log'})")
    with open(out / "killed.log", "w") as log:
        first = subprocess.Popen(cmd(resumed), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        marker = resumed / "checkpoints" / "ckpt-0000002.json"
        start = time.monotonic()
        while not marker.exists():
            if first.poll() is not None:
                raise RuntimeError(f"the run to kill ended first (exit {first.returncode})")
            if time.monotonic() - start > min(240, deadline.left()):
                first.kill()
                raise TimeoutError("no second checkpoint in time")
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    proc = run_logged(cmd(resumed), out / "resumed.log", timeout=min(240, deadline.left()))
    text = (out / "resumed.log").read_text()
    if proc.returncode != 0 or "resuming from epoch" not in text:
        raise RuntimeError(f"the killed run did not resume and finish (exit {proc.returncode}; {out / 'resumed.log'})")
    resumed_from = next(line for line in text.splitlines() if "resuming from epoch" in line)
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    equal = all(torch.equal(a[k], b[k]) for k in a)
    print(f"{resumed_from}; final weights equal to the uninterrupted run's: {equal} (max |diff| {diff:.2e})",
          flush=True)
    return {"resumed": resumed_from.strip(), "equal": equal, "max_abs_diff": diff}


def d2r_bench(out: Path, device, deadline: Deadline) -> dict:
    budget = deadline.left() - 15
    if budget < 60:
        raise TimeoutError(f"only {budget:.0f} s left")
    try:
        proc = run_logged([sys.executable, "-m", "d2r", "bench", "--quick", "--device", device.type],
                          out / "bench.log", timeout=budget)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"stopped after {budget:.0f} s (partial output in {out / 'bench.log'})") from None
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode} ({out / 'bench.log'})")
    lines = (out / "bench.log").read_text().splitlines()
    return {"last_line": lines[-1] if lines else ""}


# ---- the table ---------------------------------------------------------------------------------
def table(results: dict, header: str) -> str:
    rows: list[tuple[str, str]] = []

    def failed(name):
        r = results.get(name)
        if r is None:
            return "not run"
        return None if r["ok"] else f"FAILED ({r['seconds']} s): {r['error']}"

    tests = results.get("CUDA tests")
    rows.append(("CUDA tests", failed("CUDA tests") or f"{tests['summary']} ({tests['seconds']} s)"))
    rates = results.get("updates/s")
    if rates and rates["ok"]:
        rows.append((f"updates/s, MT10 batch {rates['batch']}", "eager (off) | CUDA graph (on) | speed-up | "
                                                                "peak GPU GB eager / graph"))
        for method, r in rates["methods"].items():
            rows.append((f"  {method}", f"{r['eager']:8.1f} | {r['graph']:8.1f} | x{r['graph'] / r['eager']:5.2f} | "
                                        f"{r['eager_peak_gb']:.2f} / {r['graph_peak_gb']:.2f}"
                                        + ("" if r["graph_mode"] == "graph" else f"  (on ran {r['graph_mode']})")))
    else:
        rows.append(("updates/s", failed("updates/s")))
    env = results.get("env-steps/s")
    rows.append(("env-steps/s, MT10 random actions",
                 failed("env-steps/s") or f"sync {env['sync']:.0f} | async {env['async']:.0f}"))
    proj = results.get("MT10 paper projection")
    rows.append(("MT10 paper projection (7500 epochs)", failed("MT10 paper projection") or (
        f"CUDA graphs: {proj['graphs_sequential_h']:.1f} h sequential, {proj['graphs_overlapped_h']:.1f} h overlapped"
        + (f"; eager: {proj['eager_sequential_h']:.1f} h sequential" if "eager_sequential_h" in proj else "")
        + f" ({proj['collect_epoch_s']:.2f} s collection per epoch, {1000 * proj['update_s']:.2f} ms per update)")))
    kr = results.get("kill and resume")
    rows.append(("MT10 training killed and resumed", failed("kill and resume") or (
        f"{kr['resumed']}; weights equal to the uninterrupted run's: {'yes' if kr['equal'] else 'no'} "
        f"(max |diff| {kr['max_abs_diff']:.1e})")))
    b = results.get("d2r bench --quick")
    rows.append(("python -m d2r bench --quick", failed("d2r bench --quick") or f"ok ({b['seconds']} s): {b['last_line']}"))
    peaks = [r[k] for r in (rates or {}).get("methods", {}).values() for k in ("eager_peak_gb", "graph_peak_gb")]
    if proj and proj.get("ok"):
        peaks.append(proj["peak_cuda_gb"])
    rows.append(("peak GPU memory", f"{max(peaks):.2f} GB (max of the steps above)" if peaks else "-"))
    width = max(len(name) for name, _ in rows)
    lines = [header, "-" * len(header)] + [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU with small sizes")
    parser.add_argument("--bench", action="store_true", help="with --cpu: run `d2r bench --quick` too")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole check (default 540)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks/runs/gpu_check"),
                        help="folder for the logs and gpu_check.json (default: $OUT, else benchmarks/runs/gpu_check)")
    args = parser.parse_args(argv)
    deadline = Deadline(args.budget)
    if not args.cpu and not torch.cuda.is_available():
        print("error: torch sees no CUDA device (use --cpu for a dry run)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    sizes = CPU_SIZES if args.cpu else GPU_SIZES
    args.out.mkdir(parents=True, exist_ok=True)
    params = load_params(ROOT / "params.yaml")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads (dry run)"
    header = f"GPU check: {name}; torch {torch.__version__}; Python {platform.python_version()}"
    print(header, flush=True)

    results: dict = {}
    step(results, "CUDA tests", cuda_tests, args.out, deadline)
    rates = step(results, "updates/s", update_rates, params, sizes, device, args.methods.split(","))
    step(results, "env-steps/s", env_rates, sizes)
    eager = 1 / rates["methods"]["d2r"]["eager"] if rates["ok"] and "d2r" in rates["methods"] else None
    step(results, "MT10 paper projection", projection, params, sizes, device, eager)
    step(results, "kill and resume", kill_and_resume, args.out, device, sizes, deadline)
    if args.bench or not args.cpu:
        step(results, "d2r bench --quick", d2r_bench, args.out, device, deadline)
    text = table(results, header)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "gpu_check.txt").write_text(text + "\n")
    print("\n" + text, flush=True)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
