"""Crash safety, numerical faults, foreign files and determinism (issue #7), on a tiny budget.

- corrupted checkpoints: a truncated, bit-flipped or checksum-less newest checkpoint is skipped
  with a warning naming it, the previous one is used, and a training run resumed over it ends
  with the same weights as one that was never disturbed; temporary files of interrupted writes
  are never read and are cleaned up;
- malicious files: a checkpoint or model.pt whose unpickling would run code (with a valid
  checksum) is refused with CheckpointError / a one-line error and exit status 1, and the code
  does not run;
- numerical faults: a NaN gradient or parameter stops training in the update it appears, naming
  update, epoch, network (and the task when one task's samples cause it), exit status 3, no
  checkpoint written after it and the last one loadable and finite; NaN transitions of one task
  only drop that task from the updates that sample them, logged in train_log.jsonl;
- atomic writes: a write that fails (or a writer killed with SIGKILL) leaves the old file whole;
- determinism: two runs with the same seed give byte-identical model.pt, logs and eval.json
  (but for wall times).

Training and evaluation use the tiny parameters of test_train.py (2 tasks, 3 epochs) and one
torch thread.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    REPO,
    filled_buffer,
    make_agent,
    nan_after_policy_step,
    nan_gradient,
    nan_parameter,
    on_update,
    tiny_params,
)

from d2r import cli
from d2r.runtime import io as d2r_io
from d2r.runtime.checkpoint import CheckpointError, load_checkpoint_file, load_latest_checkpoint, save_checkpoint
from d2r.sac.replay import TaskReplayBuffer

EPOCHS = 3  # warm-up epoch 1, updates 1-3 in epoch 2 and 4-6 in epoch 3; a checkpoint every epoch
TASKS = ["reach", "drawer-close"]


def train_args(params: Path, out: Path) -> list[str]:
    return ["train", "--params", str(params), "--experiment", "tiny", "--method", "d2r", "--seed", "0",
            "--out", str(out), "--no-progress", "--threads", "1"]


def evaluate_args(params: Path, run: Path) -> list[str]:
    return ["evaluate", "--params", str(params), "--experiment", "tiny", "--method", "d2r", "--seed", "0",
            "--run-dir", str(run), "--out", str(run / "eval.json"), "--threads", "1"]


def d2r(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "d2r", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def train_and_evaluate(params: Path, out: Path) -> Path:
    for args in (train_args(params, out), evaluate_args(params, out)):
        proc = d2r(*args)
        assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    return tiny_params(tmp_path_factory.mktemp("params"), epochs=EPOCHS)


@pytest.fixture(scope="module")
def reference(params, tmp_path_factory) -> Path:
    """An uninterrupted run, trained and evaluated."""
    return train_and_evaluate(params, tmp_path_factory.mktemp("reference") / "run")


def copy_checkpoints(reference: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", directory)
    assert sorted(p.name for p in directory.glob("*.pt")) == ["ckpt-0000002.pt", "ckpt-0000003.pt"]
    return directory


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


# ---- corrupted checkpoints ---------------------------------------------------------------------
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor data: torch.load alone would not notice
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def drop_sidecar(path: Path) -> None:
    path.with_suffix(".json").unlink()


def garble_sidecar(path: Path) -> None:
    path.with_suffix(".json").write_text('{"epoch": 3, "sha2')


@pytest.mark.parametrize("damage", [truncate, flip_bytes, empty, drop_sidecar, garble_sidecar])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(reference, tmp_path, damage):
    directory = copy_checkpoints(reference, tmp_path)
    newest = directory / "ckpt-0000003.pt"
    damage(newest)
    with pytest.warns(UserWarning, match=str(newest).replace(".", r"\.")):
        state = load_latest_checkpoint(directory)
    assert state["epoch"] == 2
    # Both damaged: nothing usable, each named.
    damage(directory / "ckpt-0000002.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_latest_checkpoint(directory) is None
    assert {Path(str(w.message).split()[1]).name for w in caught} == {"ckpt-0000002.pt", "ckpt-0000003.pt"}


def test_flipped_bytes_load_silently_without_the_checksum(reference, tmp_path):
    """Why the checksum is needed: torch.load itself accepts the bit-flipped file."""
    directory = copy_checkpoints(reference, tmp_path)
    flip_bytes(directory / "ckpt-0000003.pt")
    state = load_checkpoint_file(directory / "ckpt-0000003.pt")
    assert state["epoch"] == 3


def test_temporary_files_and_checkpoints_without_sidecar_are_ignored(reference, tmp_path):
    directory = copy_checkpoints(reference, tmp_path)
    good = (directory / "ckpt-0000003.pt").read_bytes()
    # Leftovers of writes killed mid-way: a temporary file (atomic_write_bytes' naming) and a
    # checkpoint whose sidecar was never written.
    (directory / ".ckpt-0000004.pt.k2j3h4.tmp").write_bytes(good[:1000])
    (directory / ".ckpt-0000004.json.x8y9z0.tmp").write_text('{"epoch": 4, "sha256": "')
    (directory / "ckpt-0000004.pt").write_bytes(good[:5000])
    with pytest.warns(UserWarning, match=r"ckpt-0000004\.pt has no readable checksum file"):
        assert load_latest_checkpoint(directory)["epoch"] == 3
    # The next save keeps the last two complete checkpoints and removes the leftovers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = load_latest_checkpoint(directory)
    save_checkpoint(directory, 5, dict(state, epoch=5))
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["ckpt-0000003.json", "ckpt-0000003.pt", "ckpt-0000005.json", "ckpt-0000005.pt"]
    assert load_latest_checkpoint(directory)["epoch"] == 5


def test_resumed_run_uses_the_previous_checkpoint_and_ends_identical(params, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    # The state of a run killed after its last checkpoint, before writing model.pt: then the newest
    # checkpoint is damaged on disk.
    for name in ("model.pt", "run.json", "eval.json"):
        (out / name).unlink()
    flip_bytes(out / "checkpoints" / "ckpt-0000003.pt")
    proc = d2r(*train_args(params, out))
    assert proc.returncode == 0, proc.stderr
    assert "ckpt-0000003.pt is truncated or corrupted" in proc.stderr
    assert "resuming from epoch 2" in proc.stderr
    resumed, full = model_state(out / "model.pt"), model_state(reference / "model.pt")
    assert resumed.keys() == full.keys() and all(torch.equal(resumed[k], full[k]) for k in full)
    assert [json.loads(line)["epoch"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert load_latest_checkpoint(out / "checkpoints")["epoch"] == 3  # rewritten, intact


# ---- malicious files ---------------------------------------------------------------------------
class RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_bytes(marker: Path, fmt: str) -> bytes:
    payload = {"epoch": 9, "config": "x", "agent": RunsCode(f"touch {marker}")}
    if fmt == "pickle":
        return pickle.dumps(payload, protocol=2)  # torch's legacy format is a pickle of protocol 2
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # torch's own zip format, the pickle inside it
    return buffer.getvalue()


def write_with_sidecar(directory: Path, epoch: int, data: bytes) -> Path:
    path = directory / f"ckpt-{epoch:07d}.pt"
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"epoch": epoch, "sha256": hashlib.sha256(data).hexdigest(),
                                                     "bytes": len(data)}))
    return path


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_malicious_checkpoint_is_refused_and_does_not_run(reference, tmp_path, fmt):
    directory = copy_checkpoints(reference, tmp_path)
    marker = tmp_path / "pwned"
    # Control: the payload is live (plain unpickling runs it).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(RunsCode(f"touch {control}")))
    assert control.exists()

    path = write_with_sidecar(directory, 9, malicious_bytes(marker, fmt))  # passes the checksum
    with pytest.raises(CheckpointError, match=r"ckpt-0000009\.pt: refused to load.*posix\.system") as err:
        load_latest_checkpoint(directory)
    assert "run code" in str(err.value)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_evaluate_refuses_a_malicious_model(params, reference, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    shutil.copy(reference / "run.json", run / "run.json")     # a real run's configuration, a bad model
    (run / "model.pt").write_bytes(malicious_bytes(marker, "torch"))
    proc = d2r(*evaluate_args(params, run))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {run / 'model.pt'}: refused to load"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not (run / "eval.json").exists()


def test_training_refuses_to_resume_from_a_malicious_checkpoint(params, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "model.pt").unlink()
    marker = tmp_path / "pwned"
    write_with_sidecar(out / "checkpoints", 4, malicious_bytes(marker, "torch"))
    proc = d2r(*train_args(params, out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {out / 'checkpoints' / 'ckpt-0000004.pt'}: "
                                                           "refused to load")
    assert not marker.exists() and not (out / "model.pt").exists()


# ---- numerical faults --------------------------------------------------------------------------
def run_training(params: Path, out: Path, capsys) -> tuple[int, str]:
    """The train job in this process (so that it can be patched): exit status and stderr."""
    code = cli.main(train_args(params, out))
    return code, capsys.readouterr().err


def huge_states_for_first_task(agent, batch):
    state = batch.state.clone()
    state[: len(state) // agent.num_tasks] = 3e38  # finite, but overflows inside the networks
    return dataclasses.replace(batch, state=state)


@pytest.mark.parametrize("inject, expected", [
    (nan_gradient, r"non-finite gradient in q1$"),
    (nan_parameter, r"non-finite parameter in q2 \(q2\.head\.weight\)$"),
    (nan_after_policy_step, r"non-finite parameter in policy \(policy\.[\w.]+\)$"),
    (huge_states_for_first_task, r"non-finite gradient in (q1|q2|policy) from task 'reach'$"),
])
def test_fault_stops_training_in_its_update_and_keeps_the_checkpoint(params, tmp_path, monkeypatch, capsys,
                                                                     inject, expected):
    out = tmp_path / "run"
    on_update(monkeypatch, 5, inject)  # update 5 is in epoch 3
    code, err = run_training(params, out, capsys)
    assert_stopped_by_update_5(out, code, err, expected)


def nan_gradient_stepped(agent, batch):
    """nan_gradient, but the step is taken: with cuda_graphs on, the check is kept on the device."""
    next(agent.q1.parameters()).register_hook(lambda grad: grad * float("nan"))
    return batch


@pytest.mark.parametrize("inject, expected", [
    (nan_gradient_stepped, r"non-finite gradient in q1$"),
    (huge_states_for_first_task, r"non-finite gradient in (q1|q2|policy) from task 'reach'$"),
])
def test_fault_found_after_the_updates_names_its_update_and_keeps_the_checkpoint(params, tmp_path, monkeypatch,
                                                                                 capsys, inject, expected):
    """With cuda_graphs on the updates read nothing back: their checks are read once after the
    epoch's updates (here update 6 ran too), and the message names the first failing update."""
    raw = yaml.safe_load(params.read_text())
    raw["train"]["cuda_graphs"] = "on"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    on_update(monkeypatch, 5, inject)
    code, err = run_training(tmp_path / "params.yaml", out, capsys)
    assert_stopped_by_update_5(out, code, err, expected)


def assert_stopped_by_update_5(out: Path, code: int, err: str, expected: str) -> None:
    assert code == 3, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: update 5 (epoch 3): "), err
    head = line.split(";")[0]
    assert re.search(expected, head), line
    last = out / "checkpoints" / "ckpt-0000002.pt"
    assert f"the last good checkpoint {last} is intact" in line
    # Nothing from the faulty epoch was saved, and the last checkpoint loads and is finite.
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["ckpt-0000001.pt", "ckpt-0000002.pt"]
    assert not (out / "model.pt").exists()
    state = load_latest_checkpoint(out / "checkpoints")
    assert state["epoch"] == 2 and state["updates"] == 3
    assert all(torch.isfinite(v).all() for v in state["agent"].values() if v.is_floating_point())


def test_nan_transitions_of_one_task_skip_it_and_are_logged(params, tmp_path, monkeypatch, capsys):
    original, calls = TaskReplayBuffer.add, [0]

    def add(buffer, state, action, reward, next_state, done, route=None):
        calls[0] += 1
        if calls[0] % 10 == 0:  # every 10th transition of drawer-close has a NaN reward
            reward = reward.clone()
            reward[1] = float("nan")
        return original(buffer, state, action, reward, next_state, done, route)

    monkeypatch.setattr(TaskReplayBuffer, "add", add)
    out = tmp_path / "run"
    code, err = run_training(params, out, capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    skipped = [r["skipped_tasks"] for r in records[1:]]
    assert all(set(s) <= {"drawer-close"} for s in skipped), skipped
    total = sum(s.get("drawer-close", {}).get("nonfinite", 0) for s in skipped)
    assert total > 0, skipped
    assert "task 'drawer-close' dropped from" in err
    for r in records[1:]:
        assert all(isinstance(v, float) and v == v for k, v in r.items() if k.startswith("loss_"))
    model = model_state(out / "model.pt")
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())


def test_a_nan_task_contributes_nothing_to_the_update():
    """A task dropped for NaN rewards leaves the critics exactly as a task dropped by the paper's
    extreme-loss threshold does: its rows change neither the loss nor any gradient."""
    agent = make_agent()
    batch = filled_buffer(agent).sample(8)  # 3 tasks x 8
    init, optim = copy.deepcopy(agent.state_dict()), copy.deepcopy(agent.optimizer_state())

    def updated(reward_of_task_1: float):
        a = make_agent()
        a.load_state_dict(init)
        a.load_optimizer_state(optim)
        reward = batch.reward.clone()
        reward[8:16] = reward_of_task_1
        torch.manual_seed(5)
        return a, a.update(dataclasses.replace(batch, reward=reward))

    nan_agent, nan_stats = updated(float("nan"))
    big_agent, big_stats = updated(1e6)  # finite, dropped by loss_mask_threshold
    assert nan_agent.pop_skipped() == {"nonfinite": [0, 1, 0], "over_threshold": [0, 0, 0]}
    assert big_agent.pop_skipped() == {"nonfinite": [0, 0, 0], "over_threshold": [0, 1, 0]}
    assert nan_stats["loss_q"].item() == big_stats["loss_q"].item()
    assert nan_stats["masked_tasks"].item() == 1  # task 1, from all four terms
    nan_state, big_state = nan_agent.state_dict(), big_agent.state_dict()
    for key in nan_state:
        if key.startswith(("q1", "q2")):
            assert torch.equal(nan_state[key], big_state[key]), key
    assert all(torch.isfinite(v).all() for v in nan_state.values() if v.is_floating_point())
    # Finite inputs whose losses overflow (states of 1e30): the task is dropped, not the run.
    state = batch.state.clone()
    state[8:16] = 1e30
    huge = make_agent()
    huge.load_state_dict(init)
    stats = huge.update(dataclasses.replace(batch, state=state))
    assert huge.pop_skipped()["nonfinite"] == [0, 1, 0]
    assert all(torch.isfinite(v) for v in stats.values())


# ---- atomic writes -----------------------------------------------------------------------------
def test_failed_writes_leave_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    d2r_io.atomic_write_json(path, {"old": 1})
    old = path.read_bytes()
    # Not serialisable (NaN is refused: JSON outputs hold finite numbers only).
    with pytest.raises(ValueError):
        d2r_io.atomic_write_json(path, {"new": float("nan")})
    # The disk fails after part of the data was written.
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        d2r_io.atomic_write_bytes(path, b"x" * 10_000)
    monkeypatch.undo()
    # The rename fails.
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError):
        d2r_io.atomic_write_text(path, "new text")
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left behind


def test_writer_killed_mid_write_leaves_old_or_new_never_a_part(tmp_path):
    path = tmp_path / "big.bin"
    a, b = b"a" * (8 << 20), b"b" * (8 << 20)
    d2r_io.atomic_write_bytes(path, a)
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from d2r.runtime.io import atomic_write_bytes\n"
              f"a, b = b'a' * (8 << 20), b'b' * (8 << 20)\n"
              f"print('go', flush=True)\n"
              f"while True:\n    atomic_write_bytes({str(path)!r}, b)\n    atomic_write_bytes({str(path)!r}, a)\n")
    for delay in (0.05, 0.13, 0.29, 0.41):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"go\n"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert path.read_bytes() in (a, b)
    # A torn last line of a JSON-lines log (a crash mid-append) is ignored by the reader.
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert [r["epoch"] for r in d2r_io.read_jsonl(log)] == [1, 2]


# ---- determinism -------------------------------------------------------------------------------
def without_wall_time(path: Path):
    if path.suffix == ".jsonl":
        return [{k: v for k, v in json.loads(line).items() if k not in ("wall_time", "sps")}
                for line in path.read_text().splitlines()]
    data = json.loads(path.read_text())
    data.pop("wall_time", None)
    return d2r_io.dump_json(data)


@pytest.mark.slow
def test_same_seed_gives_identical_outputs(params, reference, tmp_path):
    again = train_and_evaluate(params, tmp_path / "run")
    assert (again / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()
    assert (again / "eval_log.jsonl").read_bytes() == (reference / "eval_log.jsonl").read_bytes()
    for name in ("eval.json", "run.json", "train_log.jsonl"):  # identical but for the wall times
        assert without_wall_time(again / name) == without_wall_time(reference / name), name
    # The eval.json bytes differ in the wall_time line at most.
    differing = [(x, y) for x, y in zip((again / "eval.json").read_text().splitlines(),
                                         (reference / "eval.json").read_text().splitlines()) if x != y]
    assert all(x.strip().startswith('"wall_time"') for x, _ in differing), differing
