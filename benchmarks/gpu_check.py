"""The GPU check in one command: `bash benchmarks/gpu_check.sh` on a GPU machine (it installs the
packages such a machine lacks from wheels/, then runs this). It fits a device lease: --budget
seconds (default 360) for everything.

Steps, the most valuable first. Each gets a slice of the time left in proportion to its share
(time a step leaves over goes to the later ones); a step that fails, or runs past its slice (an
alarm stops it), is reported and the next one runs; within a step each method or configuration
is guarded on its own; what no longer fits is skipped with a note. The table and the JSON are
rewritten after every step, so a kill loses only the step under way.
 1. the learning runs start in the background: easy3, D2R and MT-SAC, seeds 0 and 1, graphs on
    (paused, SIGSTOP, while a later step times something);
 2. the CUDA tests (tests/test_cuda.py);
 3. the training job on the device (MT10 D2R, graphs on) killed (SIGKILL) and stopped mid-epoch
    (SIGTERM, as Slurm does) after its second checkpoint and resumed, against two uninterrupted runs;
 4. updates/s of each method at the MT10 batch (paper networks, 128 x 10), eager (cuda_graphs off)
    and as a CUDA graph (on), with peak GPU memory;
 5. the D2R update profiled (torch.profiler), eager and graph: kernels per update, GPU-busy time
    against the time per update, launches and host synchronisations (kernel table: profile_d2r.txt);
 6. measured MT10 D2R training epochs (graphs on, 200 updates per epoch), overlapped collection
    off and on, sync and async envs;
 7. one periodic evaluation's cost; with 6, the paper's MT10 budget projected (in the table);
 8. the D2R graph update at 5 times the MT10 batch;
 9. seed groups (d2r.sac.group) of S = 1 and 5 D2R agents (1 and 2 in the dry run), graph updates
    in turn (sequential) and one update of the stacked weights (stacked): per-seed updates/s;
10. three processes sharing the GPU, each timing D2R graph updates;
11. env-steps/s of MT10 and MT50, sync and async vector envs, and act() per vector step;
12. the learning runs until the budget's end: stopped, their evaluation logs collected.
Times: medians of at least three blocks, CUDA events on a GPU (gpu_measure.py).

Files in --out (default $OUT, else benchmarks/runs/gpu_check), five: gpu_check.txt (the table,
printed last), gpu_check.json (every number), gpu_check.log (the output of the processes it
started), profile_d2r.txt, learning.jsonl (the learning runs' evaluations).

--cpu: a dry run of the same on a CPU with small sizes (the CUDA tests skip; cuda_graphs on runs
the capturable update eagerly), to check the script itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_measure as measure  # noqa: E402
import gpu_runs as runs  # noqa: E402

from d2r.config import load_params  # noqa: E402
from d2r.nets import NETS  # noqa: E402

METHODS = tuple(NETS)   # the method of params.yaml named after each network kind
PAPER_EPOCHS, PAPER_EVALUATIONS = 7500, 7500 // 50  # MT10: epochs, periodic evaluations (every 50)


@dataclasses.dataclass(frozen=True)
class Sizes:
    batch_per_task: int     # the MT10 batch: 128 per task (paper)
    fill: int               # replay steps per task before timing
    warm: int               # updates before timing (a graph: three eager warm-ups, the capture, a replay)
    calls: int              # updates per timed block
    blocks: int             # timed blocks (the median is reported; at least 3)
    profile_updates: int
    large_factor: int
    group_sizes: tuple      # seeds per group in the seed-group step
    shared_seconds: float   # each sharing process times updates this long
    env_steps: int          # vector-env steps per timed block
    act_calls: int
    updates_per_epoch: int  # the measured training epochs'
    epoch_blocks: int       # measured epochs (after a collection-only and a capture epoch)
    episode_steps: int
    kill_updates: int       # updates per epoch of the killed and resumed runs
    small_nets: bool        # the training jobs' networks small (dry run)
    learning_epochs: int | None  # None: the easy preset's


GPU_SIZES = Sizes(batch_per_task=128, fill=256, warm=5, calls=10, blocks=3, profile_updates=3, large_factor=5,
                  group_sizes=(1, 5), shared_seconds=6.0, env_steps=60, act_calls=50, updates_per_epoch=200, epoch_blocks=3,
                  episode_steps=200, kill_updates=200, small_nets=False, learning_epochs=None)
CPU_SIZES = Sizes(batch_per_task=16, fill=32, warm=5, calls=2, blocks=3, profile_updates=2, large_factor=5,
                  group_sizes=(1, 2), shared_seconds=2.0, env_steps=20, act_calls=5, updates_per_epoch=3, epoch_blocks=3,
                  episode_steps=30, kill_updates=3, small_nets=True, learning_epochs=3)


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0


class OutOfSlice(Exception):
    """Raised by the alarm in a step that ran well past its slice."""


def _alarm(signum, frame):
    raise OutOfSlice("ran past its time slice and was stopped")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Check:
    """The steps' results, the files written after each, and the time slices."""

    RESERVE = 10.0  # seconds kept for the table at the end

    def __init__(self, out: Path, budget: float, header: str):
        self.out, self.header, self.budget = out, header, budget
        self.end = Deadline(budget - self.RESERVE)
        self.start = time.monotonic()
        self.results: dict = {"header": header, "budget_s": budget, "steps": {}}
        (out / "gpu_check.log").write_text(f"{header}\n")

    def run(self, name: str, share: float, later_shares: float, fn) -> dict:
        """`fn(deadline)` within its slice: share / (share + later_shares) of the time left."""
        left = self.end.left()
        slice_s = left * share / (share + later_shares) if share else left
        print(f"\n== {name} ({slice_s:.0f} s of {left:.0f} s left) ==", flush=True)
        began = time.monotonic()
        if share and slice_s < 3:
            entry = {"ok": False, "skipped": f"{left:.0f} s left: no time for it"}
        else:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(int(slice_s + max(10.0, 0.2 * slice_s)) if share else 0)
            try:
                entry = {"ok": True, **(fn(Deadline(slice_s)) or {})}
            except Exception as err:  # reported; the next step still runs
                entry = {"ok": False, "error": f"{type(err).__name__}: {err}"}
                print(f"FAILED: {entry['error']}", flush=True)
            finally:
                signal.alarm(0)
        entry.update(seconds=round(time.monotonic() - began, 1), slice_s=round(slice_s, 1))
        self.results["steps"][name] = entry
        self.write()
        return entry

    def keep_logs(self, title: str, logs: list[Path], tail: int = 40) -> None:
        """The last lines of each process's log, into gpu_check.log."""
        with open(self.out / "gpu_check.log", "a") as log:
            for path in logs:
                lines = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
                log.write(f"\n== {title}: {path.name} (last {min(tail, len(lines))} of {len(lines)} lines) ==\n")
                log.write("\n".join(lines[-tail:]) + "\n")

    def write(self) -> None:
        self.results["wall_s"] = round(time.monotonic() - self.start, 1)
        write_atomic(self.out / "gpu_check.json", json.dumps(self.results, indent=1, default=str))
        write_atomic(self.out / "gpu_check.txt", table(self.results) + "\n")


# ---- the table ---------------------------------------------------------------------------------
def _fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def _unit(row: dict) -> str | None:
    """A unit's error or skip note, else None."""
    if "error" in row:
        return f"FAILED: {row['error']}"
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    return None


def table(results: dict) -> str:
    steps = results["steps"]
    lines: list[tuple[str, str]] = []

    def add(name: str, text: str) -> None:
        lines.append((name, text))

    def step(name: str):
        r = steps.get(name)
        if r is None:
            add(name, "not run")
        elif not r["ok"]:
            add(name, f"{'FAILED: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']} ({r['seconds']} s)")
        else:
            return r
        return None

    step("learning runs start")  # (a row only when it failed)
    if r := step("CUDA tests"):
        add("CUDA tests", f"{r['summary']} ({r['seconds']} s)")
    if r := step("updates/s"):
        add(f"updates/s, MT10 batch {r['batch']}", "eager ms (updates/s) | graph ms (updates/s) | speed-up | "
                                                    "peak GB eager / graph")
        for method in METHODS:
            e, g = r["rows"].get(f"{method} eager", {}), r["rows"].get(f"{method} graph", {})
            if not e and not g:
                continue
            cell = [_unit(x) or f"{x['ms']:7.2f} ({x['updates_per_s']:6.1f})" for x in (e, g)]
            both = "ms" in e and "ms" in g
            add(f"  {method}", f"{cell[0]} | {cell[1]} | {'x' + _fmt(e['ms'] / g['ms']) if both else '-'} | "
                               f"{_fmt(e.get('peak_gb'))} / {_fmt(g.get('peak_gb'))}"
                + ("" if g.get("mode", "graph") == "graph" else f" (on ran {g['mode']})"))
    if r := step("D2R profile"):
        for mode, row in r["rows"].items():
            add(f"D2R update profile, {mode}", _unit(row) or (
                f"{row['kernels_per_update']:.0f} kernels + {row['copies_per_update']:.0f} copies per update, "
                f"GPU busy {_fmt(row['gpu_busy_ms'])} of {row['ms']:.2f} ms ({_fmt(row.get('busy_fraction'), '.0%')}), "
                f"mean kernel {_fmt(row['mean_kernel_us'], '.1f')} us, {row['launches_per_update']:.0f} launches, "
                f"{row['graph_launches_per_update']:.0f} graph launches, "
                f"{row['host_syncs_per_update']:.0f} host syncs, "
                f"{row['aten_ops_per_update']:.0f} aten ops"))
    if r := step("D2R large batch"):
        rows = r["rows"]
        cells = [f"{k} ({k[1:]} x {r['batch']}): " + (_unit(v) or f"{v['ms']:.2f} ms, peak {v['peak_gb']:.2f} GB")
                 for k, v in rows.items()]
        ratio = [v["ms"] for v in rows.values() if "ms" in v]
        add("D2R graph update, larger batch", "; ".join(cells) + (f"; time x{ratio[1] / ratio[0]:.2f}"
                                                                   if len(ratio) == 2 else ""))
    if r := step("seed groups"):
        add("D2R seed group (sequential: a graph per seed, in turn; stacked: one graph)", "; ".join(
            f"{k}: " + (_unit(v) or f"{v['per_seed_updates_per_s']:.1f} updates/s per seed, "
                                    f"{v['updates_per_s']:.1f} together") for k, v in r["rows"].items()))
    if r := step("shared GPU"):
        alone = steps.get("updates/s", {}).get("rows", {}).get("d2r graph", {}).get("updates_per_s")
        add(f"{len(r['processes'])} processes on the GPU", "D2R graph updates/s each: "
            + ", ".join(f"{p['updates_per_s']:.1f}" for p in r["processes"])
            + f"; together {r['sum_updates_per_s']:.1f}" + (f" (one process alone: {alone:.1f}, "
                                                           f"x{r['sum_updates_per_s'] / alone:.2f})" if alone else ""))
    if r := step("collection"):
        for bench in ("MT10", "MT50"):
            x = r.get(bench, {})
            add(f"env-steps/s {bench} ({r['cpu_cores']} cores)",
                _unit(x) or " | ".join(f"{k} {v:.0f}" for k, v in x.items()))
        add("act() per vector step (D2R)", " | ".join(
            f"{b} " + (_unit(r.get(f'act {b}', {})) or f"{r[f'act {b}']['ms']:.2f} ms") for b in ("MT10", "MT50")))
        group = [k for k in r if k.startswith("act MT10 S=")]
        if group:
            add("act() per vector step, a seed group (MT10)", " | ".join(
                f"{k[9:]} " + (_unit(r[k]) or f"{r[k]['ms']:.2f} ms") for k in group))
    epochs = step("training epochs")
    if epochs:
        for key, row in epochs["rows"].items():
            add(f"MT10 epoch, {key}", _unit(row) or (f"{row['epoch_s']:.2f} s ({epochs['updates_per_epoch']} updates, "
                                                     f"{epochs['episode_steps']}-step episodes; epochs "
                                                     + ", ".join(f"{t:.2f}" for t in row["epochs_s"]) + ")"))
    evaluation = step("evaluation")
    if evaluation:
        add("periodic evaluation (MT10, sync)",
            f"{evaluation['episode_s']:.2f} s per episode of every task; "
            f"{evaluation['eval_episodes']} episodes: {evaluation['evaluation_s']:.1f} s")
    if epochs and evaluation:
        measured = {k: v["epoch_s"] for k, v in epochs["rows"].items() if "epoch_s" in v}
        if measured:
            hours = {k: (PAPER_EPOCHS * s + PAPER_EVALUATIONS * evaluation["evaluation_s"]) / 3600
                     for k, s in measured.items()}
            best = min(hours, key=hours.get)
            add("paper MT10 budget projected", f"{hours[best]:.1f} h per run with {best} "
                f"({PAPER_EPOCHS} epochs + {PAPER_EVALUATIONS} evaluations); "
                + ", ".join(f"{k}: {h:.1f} h" for k, h in hours.items() if k != best))
    if r := step("kill and resume"):
        for name, how in (("killed", "SIGKILLed after epoch 2"), ("stopped", "stopped by SIGTERM")):
            x = r[name]
            add(f"training {how}, resumed", f"weights {x['verdict']} (max |diff| {x['max_diff']:.1e}); {x['resumed']}"
                + (f" ({r['stop_line']})" if name == "stopped" else ""))
        add("  two uninterrupted runs", f"max |diff| {r['run_to_run_max_diff']:.1e}")
    if r := step("learning runs"):
        for name, x in r["runs"].items():
            evals = ", ".join(f"{e}: {s:.2f}" for e, s in x["mean_success"]) or "none yet"
            add(f"easy3 {name}", f"{x['epochs']} epochs, {x['updates']} updates in {_fmt(x['wall_s'], '.0f')} s "
                                 "(paused while timing); "
                                 f"mean success at epoch {evals}")
    peaks = [x.get("peak_gb", 0) for s in ("updates/s", "D2R large batch", "seed groups")
             for x in steps.get(s, {}).get("rows", {}).values()]
    if peaks:
        add("peak GPU memory", f"{max(peaks):.2f} GB (the update steps)")
    width = max(len(name) for name, _ in lines) if lines else 0
    head = f"{results['header']}; {results.get('wall_s', 0):.0f} s of a {results['budget_s']:.0f} s budget"
    return "\n".join([head, "-" * len(head)] + [f"{name:<{width}}  {text}" for name, text in lines])


# ---- the check -----------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU with small sizes")
    parser.add_argument("--budget", type=float, default=360, help="seconds for the whole check (default 360)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks/runs/gpu_check"),
                        help="folder for its files (default: $OUT, else benchmarks/runs/gpu_check)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: torch sees no CUDA device (use --cpu for a dry run)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    sizes = CPU_SIZES if args.cpu else GPU_SIZES
    args.out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}"
    else:
        name = f"CPU dry run, {torch.get_num_threads()} threads"
    header = (f"GPU check: {name}; torch {torch.__version__}; Python {platform.python_version()}; "
              f"{len(os.sched_getaffinity(0))} cores")
    print(header, flush=True)
    check = Check(args.out, args.budget, header)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # a kill from outside: end the children too
    methods = args.methods.split(",")
    out = args.out

    with tempfile.TemporaryDirectory(prefix="d2r-gpucheck-") as tmp:
        tmp = Path(tmp)
        for sub in ("tests", "shared", "kill", "learning"):
            (tmp / sub).mkdir()
        # the measurements' parameters (the update modes and the device are set per measurement)
        params_file = runs.write_params(tmp / "params.yaml", device, sizes) if args.cpu else ROOT / "params.yaml"
        params = load_params(params_file)
        learning: list[runs.LearningRuns] = []

        def start_learning(deadline):
            learning.append(runs.LearningRuns(tmp / "learning", device, sizes))
            return {"runs": [f"{m} seed{s}" for m, s in runs.LearningRuns.RUNS]}

        # (name, share of the time left, times something: the learning runs pause, what it runs)
        plan = [
            ("learning runs start", 0, False, start_learning),
            ("CUDA tests", 40, False, lambda d: runs.cuda_tests(tmp / "tests" / "pytest.log", d)),
            ("kill and resume", 70, False, lambda d: runs.kill_and_resume(tmp / "kill", device, sizes, d)),
            ("updates/s", 45, True, lambda d: measure.update_rates(params, sizes, device, methods, d)),
            ("D2R profile", 20, True, lambda d: measure.d2r_profile(params, sizes, device, out / "profile_d2r.txt", d)),
            ("training epochs", 55, True, lambda d: measure.training_epochs(params, sizes, device, d)),
            ("evaluation", 10, True, lambda d: measure.evaluation_cost(params, sizes, device, d)),
            ("D2R large batch", 12, True, lambda d: measure.d2r_large_batch(params, sizes, device, d)),
            ("seed groups", 12, True, lambda d: measure.seed_groups(params, sizes, device, d)),
            ("shared GPU", 30, True, lambda d: runs.shared_gpu(
                params_file, device, sizes, [tmp / "shared" / f"worker{i}.log" for i in range(3)], d)),
            ("collection", 40, True, lambda d: measure.collection_rates(params, sizes, device, d)),
            ("learning runs", 30, False, lambda d: learning[0].collect(d, out / "learning.jsonl") if learning else
             {"runs": {}}),
        ]
        logs = {"CUDA tests": "tests", "shared GPU": "shared", "kill and resume": "kill", "learning runs": "learning"}
        try:
            for i, (name, share, timing, fn) in enumerate(plan):
                if learning:
                    learning[0].pause(timing)
                check.run(name, share, sum(later[1] for later in plan[i + 1:]), fn)
                if name in logs:
                    check.keep_logs(name, runs.logs_of(tmp / logs[name]))
        finally:
            runs.stop_all()
    check.write()
    print("\n" + table(check.results), flush=True)
    return 0 if all(r["ok"] for r in check.results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
