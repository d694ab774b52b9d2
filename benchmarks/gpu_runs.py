"""The GPU check's steps that run other processes (benchmarks/gpu_check.py calls them): the CUDA
tests, D2R updates in three processes sharing the GPU, the training job killed or stopped and
resumed against uninterrupted runs, and the learning runs left in the background.

Every process started here is in CHILDREN, in its own session; stop_all() ends those still
running (the check calls it on its way out, however it ends).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHILDREN: list[subprocess.Popen] = []
#: every network kind at a few dozen units (the CPU dry run)
SMALL_NETS = {"d2r": dict(encoder=[32, 32], num_modules=4, width=16, router_hidden=[16]),
              "mtsac": dict(hidden=[32, 32]), "mhsac": dict(hidden=[32, 32]),
              "moe": dict(num_experts=2, hidden=[32, 32]),
              "softmod": dict(num_layers=2, num_modules=2, module_width=16, encoder=[32, 32], embed_dim=32,
                              routing_hidden=16)}


def start(cmd: list[str], log: Path, talk: bool = False) -> subprocess.Popen:
    """`cmd` with its output in `log`; with `talk`, its stdin and stdout are pipes (stderr to `log`)."""
    with open(log, "w") as out:
        if talk:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out,
                                    text=True, start_new_session=True)
        else:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    CHILDREN.append(proc)
    return proc


def stop_all() -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait(procs: dict[str, subprocess.Popen], deadline) -> None:
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline.left()))
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the {name} run had not ended when its slice ran out") from None


def train_cmd(params: Path, experiment: str, method: str, seed: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "d2r", "train", "--params", str(params), "--experiment", experiment,
            "--method", method, "--seed", str(seed), "--out", str(out), "--no-progress", "--threads", "1"]


def write_params(path: Path, device: torch.device, sizes, experiments: dict | None = None,
                 presets: dict | None = None) -> Path:
    """params.yaml with the device, CUDA graphs on, only `experiments` when given, and in the CPU
    dry run small networks and short episodes."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["device"] = device.type
    raw["train"]["cuda_graphs"] = "on"
    raw["env"]["max_episode_steps"] = sizes.episode_steps
    if sizes.small_nets:
        for kind, net in SMALL_NETS.items():
            raw["nets"][kind].update(net)
    raw["presets"].update(presets or {})
    if experiments is not None:
        raw["experiments"] = experiments
    path.write_text(yaml.safe_dump(raw))
    return path


# ---- steps ---------------------------------------------------------------------------------------
def cuda_tests(log: Path, deadline) -> dict:
    proc = start([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"], log)
    wait({"pytest": proc}, deadline)
    lines = [line.strip("= ") for line in log.read_text().splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    if proc.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest exit status {proc.returncode}: {summary}")
    return {"summary": summary}


def _line(proc: subprocess.Popen, deadline) -> str:
    if not select.select([proc.stdout], [], [], max(0.0, deadline.left()))[0]:
        raise TimeoutError("a worker did not answer within the slice")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a worker ended (exit {proc.wait()}) without answering")
    return line.strip()


def shared_gpu(params: Path, device: torch.device, sizes, logs: list[Path], deadline) -> dict:
    """D2R graph updates at the MT10 batch in len(logs) processes at once, each timed on its own."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_measure.py"), "--shared-worker", "--params", str(params),
           "--device", device.type,
           "--batch-per-task", str(sizes.batch_per_task), "--fill", str(sizes.fill), "--calls", str(sizes.calls),
           "--seconds", str(sizes.shared_seconds)]
    procs = [start(cmd, log, talk=True) for log in logs]
    for proc in procs:
        if _line(proc, deadline) != "ready":
            raise RuntimeError("a worker said something other than ready")
    for proc in procs:  # all measure at once
        proc.stdin.write("go\n")
        proc.stdin.flush()
    each = [json.loads(_line(proc, deadline)) for proc in procs]
    total = sum(r["updates_per_s"] for r in each)
    print(f"{len(each)} processes: " + ", ".join(f"{r['updates_per_s']:.1f}" for r in each)
          + f" updates/s (sum {total:.1f})", flush=True)
    return {"processes": each, "sum_updates_per_s": total}


def _max_diff(a: Path, b: Path) -> float:
    x, y = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].is_floating_point())


def _verdict(diff: float, noise: float) -> str:
    if diff == 0:
        return "equal"
    return "within run-to-run noise" if 0 < noise and diff <= 10 * noise else "DIFFERS"


def kill_and_resume(tmp: Path, device: torch.device, sizes, deadline) -> dict:
    """The MT10 D2R training job (graphs on, a checkpoint every epoch) four times at once: two
    uninterrupted (how far two runs of one seed differ on this device), one SIGKILLed and one sent
    SIGTERM once its second checkpoint exists (a Slurm requeue: it stops mid-epoch 3 with a
    checkpoint, status 75); both run again to the end. Their final weights against the first run's."""
    preset = dict(epochs=4, warmup_epochs=1, min_replay=0, updates_per_epoch=sizes.kill_updates,
                  batch_per_task=sizes.batch_per_task, replay_size=100000, eval_every=4, eval_episodes=1,
                  checkpoint_every=1)
    params = write_params(tmp / "params.yaml", device, sizes, presets={"gpucheck": preset}, experiments={
        "gpucheck": dict(benchmark="MT10", tasks="all", goal_mode="fixed", methods=["d2r"], seeds=[0],
                         preset="gpucheck", final_eval_episodes=1)})
    names = ("uninterrupted", "repeat", "killed", "stopped")

    def launch(name: str, log: str) -> subprocess.Popen:
        return start(train_cmd(params, "gpucheck", "d2r", 0, tmp / name), tmp / log)

    procs = {name: launch(name, f"{name}.log") for name in names}
    signals = {"killed": [signal.SIGKILL, None], "stopped": [signal.SIGTERM, None]}  # (signal, when to send it)
    while signals:
        for name, (sig, when) in list(signals.items()):
            if when is None and (tmp / name / "checkpoints" / "ckpt-0000002.json").exists():
                # SIGKILL at once; SIGTERM within epoch 3's updates (its episode takes about epoch 1's
                # time; epoch 2's updates, a little longer than 3's), so that the mid-epoch checkpoint
                # holds the epoch's partial sums
                walls = [r["wall_time"] for r in _jsonl(tmp / name / "train_log.jsonl")]
                delay = 0.0 if sig == signal.SIGKILL else walls[0] + 0.25 * max(0.0, walls[1] - 2 * walls[0])
                signals[name][1] = when = time.monotonic() + delay
            if when is not None and time.monotonic() >= when:
                procs[name].send_signal(sig)
                del signals[name]
            elif procs[name].poll() is not None:
                raise RuntimeError(f"the {name} run ended (exit {procs[name].returncode}) before its signal")
        if deadline.passed():
            raise TimeoutError(f"{', '.join(signals)} not signalled within the slice")
        time.sleep(0.02)
    wait({name: procs[name] for name in ("killed", "stopped")}, deadline)
    stop_line = next((line for line in (tmp / "stopped.log").read_text().splitlines() if "stopped by SIGTERM" in line),
                     None)
    if procs["stopped"].returncode != 75 or stop_line is None:
        raise RuntimeError(f"SIGTERM: exit {procs['stopped'].returncode}, not 75 with a checkpoint")
    procs.update({f"{name} resumed": launch(name, f"{name}.resumed.log") for name in ("killed", "stopped")})
    wait({name: procs[name] for name in ("uninterrupted", "repeat", "killed resumed", "stopped resumed")}, deadline)
    for name in ("uninterrupted", "repeat", "killed resumed", "stopped resumed"):
        if procs[name].returncode != 0:
            raise RuntimeError(f"the {name} run failed (exit {procs[name].returncode})")
    noise = _max_diff(tmp / "uninterrupted" / "model.pt", tmp / "repeat" / "model.pt")
    out = {"run_to_run_max_diff": noise, "stop_line": stop_line.split(":")[0].strip()}
    for name in ("killed", "stopped"):
        text = (tmp / f"{name}.resumed.log").read_text()
        resumed = next((line for line in text.splitlines() if "resuming from epoch" in line), None)
        if resumed is None:
            raise RuntimeError(f"the {name} run did not resume from its checkpoint")
        diff = _max_diff(tmp / "uninterrupted" / "model.pt", tmp / name / "model.pt")
        out[name] = {"resumed": resumed.strip(), "max_diff": diff, "verdict": _verdict(diff, noise)}
        print(f"{name}: {resumed.strip()}; final weights {out[name]['verdict']} (max |diff| {diff:.1e}; "
              f"two uninterrupted runs: {noise:.1e})", flush=True)
    return out


def logs_of(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.glob("*.log") if p.stat().st_size)


class LearningRuns:
    """easy3 (reach, drawer-close, button-press-topdown), D2R and MT-SAC, seeds 0 and 1, graphs on,
    its `easy` preset (in the CPU dry run a few short epochs), left training in the background;
    paused (SIGSTOP) while the check times something."""

    RUNS = [(method, seed) for method in ("d2r", "mtsac") for seed in (0, 1)]

    def __init__(self, tmp: Path, device: torch.device, sizes):
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        presets = {}
        if sizes.learning_epochs is not None:
            presets["easy"] = {**raw["presets"]["easy"], "epochs": sizes.learning_epochs, "warmup_epochs": 1,
                               "min_replay": 0, "updates_per_epoch": sizes.kill_updates, "eval_every": 1,
                               "eval_episodes": 1, "checkpoint_every": 1}
        self.tmp = tmp
        params = write_params(tmp / "params.yaml", device, sizes, presets=presets,
                              experiments={"easy3": raw["experiments"]["easy3"]})
        self.procs = {(m, s): start(train_cmd(params, "easy3", m, s, tmp / f"{m}-seed{s}"), tmp / f"{m}-seed{s}.log")
                      for m, s in self.RUNS}

    def pause(self, paused: bool) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def collect(self, deadline, jsonl: Path) -> dict:
        """Wait for the runs to the end of the slice, stop those still training (SIGTERM: each
        checkpoints and exits 75), and gather their evaluation logs into `jsonl`."""
        self.pause(False)
        while deadline.left() > 20 and any(p.poll() is None for p in self.procs.values()):
            time.sleep(0.5)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        runs, lines = {}, []
        for (method, seed), proc in self.procs.items():
            run = self.tmp / f"{method}-seed{seed}"
            evals = _jsonl(run / "eval_log.jsonl")
            train = _jsonl(run / "train_log.jsonl")
            lines += [json.dumps({"method": method, "seed": seed, **e}, sort_keys=True) for e in evals]
            runs[f"{method} seed{seed}"] = {
                "exit": proc.returncode, "epochs": train[-1]["epoch"] if train else 0,
                "updates": train[-1]["updates"] if train else 0,
                "wall_s": train[-1]["wall_time"] if train else None,
                "mean_success": [(e["epoch"], e["mean_success"]) for e in evals]}
        jsonl.write_text("".join(line + "\n" for line in lines))
        for name, r in runs.items():
            print(f"{name}: {r['epochs']} epochs, {r['updates']} updates (exit {r['exit']}); evaluations "
                  + ", ".join(f"{e}: {s:.2f}" for e, s in r["mean_success"]), flush=True)
        return {"runs": runs}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
