"""The training job end to end on a tiny budget: outputs, and resuming after SIGKILL."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_params, train_cmd


def epochs_logged(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def run_killed_at(params: Path, out: Path, checkpoint_epoch: int) -> None:
    """Start training and SIGKILL it once the checkpoint of `checkpoint_epoch` exists."""
    proc = subprocess.Popen(train_cmd(params, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "checkpoints" / f"ckpt-{checkpoint_epoch:07d}.json"
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    params = tiny_params(tmp)
    out = tmp / "run"
    subprocess.run(train_cmd(params, out), check=True, capture_output=True, timeout=600)
    return params, out


def test_training_writes_its_outputs(uninterrupted):
    _, out = uninterrupted
    run = json.loads((out / "run.json").read_text())
    assert run["epochs"] == 6 and run["env_steps_per_task"] == 6 * 200
    assert run["updates"] == 5 * 3  # no updates in the warm-up epoch
    assert epochs_logged(out / "train_log.jsonl") == list(range(1, 7))
    evals = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in evals] == [2, 4, 6]
    for e in evals:
        assert set(e["success"]) == {"reach", "drawer-close"}
        assert all(0.0 <= s <= 1.0 for s in e["success"].values())
        assert all(1 <= d <= 4 for d in e["depth"].values())  # 4 modules
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(k.startswith("policy.") for k in state)
    # Only the last two checkpoints are kept.
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["ckpt-0000005.pt", "ckpt-0000006.pt"]


@pytest.mark.parametrize("kill_after", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_killed_run_resumes_and_matches_uninterrupted(uninterrupted, tmp_path, kill_after):
    params, full = uninterrupted
    out = tmp_path / "run"
    run_killed_at(params, out, kill_after)
    proc = subprocess.run(train_cmd(params, out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from epoch" in proc.stderr
    assert epochs_logged(out / "train_log.jsonl") == list(range(1, 7))  # each epoch once: no restart from 0
    resumed = torch.load(out / "model.pt", weights_only=True)
    reference = torch.load(full / "model.pt", weights_only=True)
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key
    strip = lambda path: [{k: v for k, v in json.loads(l).items() if k not in ("wall_time", "sps")}
                          for l in path.read_text().splitlines()]
    assert strip(out / "train_log.jsonl") == strip(full / "train_log.jsonl")
    assert strip(out / "eval_log.jsonl") == strip(full / "eval_log.jsonl")


@pytest.mark.slow
def test_overlapped_collection_same_with_sync_and_async_envs_and_after_a_kill(tmp_path):
    """Collection in a background thread during updates, with every task's env in this process
    (sync) or in a worker process per task (async): the same weights and logs for one seed (the
    env streams are seeded per task), also when the async run is killed and resumed (the
    checkpoints hold each worker's env random state)."""
    params = tiny_params(tmp_path, epochs=4)
    raw = yaml.safe_load(params.read_text())
    raw["train"]["overlap_collection"] = True
    params.write_text(yaml.safe_dump(raw))
    raw["env"]["vector_strategy"] = "async"
    async_params = tmp_path / "async.yaml"
    async_params.write_text(yaml.safe_dump(raw))

    subprocess.run(train_cmd(params, tmp_path / "sync"), check=True, capture_output=True, timeout=600)
    run_killed_at(async_params, tmp_path / "async", 2)
    proc = subprocess.run(train_cmd(async_params, tmp_path / "async"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "resuming from epoch" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr  # the workers were closed, not left to a broken pipe
    models = [torch.load(tmp_path / name / "model.pt", weights_only=True) for name in ("sync", "async")]
    assert json.loads((tmp_path / "async" / "run.json").read_text())["updates"] == 3 * 3
    for key in models[0]:
        assert torch.equal(models[0][key], models[1][key]), key
    strip = lambda path: [{k: v for k, v in json.loads(l).items() if k not in ("wall_time", "sps")}
                          for l in path.read_text().splitlines()]
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        assert strip(tmp_path / "sync" / log) == strip(tmp_path / "async" / log), log
