"""Long runs through the training job lose nothing (issue 16): a signal stops training at a safe
point with a checkpoint of exactly there, the logs live in the checkpoints, raising `epochs`
continues a finished run, unreadable checkpoints and failed writes are named.

The same scenarios through Snakemake itself are in test_pipeline_long_runs.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess

import pytest
import torch
import yaml
from helpers import signal_at, tiny_params, train_cmd, without_timing

from d2r import cli
from d2r.runtime import io as d2r_io

pytestmark = pytest.mark.slow



def live_view(out) -> dict[str, list[tuple[int, float]]]:
    """The run's TensorBoard scalars as TensorBoard's own reader sees them: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def same_run(out, reference) -> None:
    """Same final weights and the same logs (but for timing fields) as the reference run, and a
    live view of exactly those records."""
    got, want = torch.load(out / "model.pt", weights_only=True), torch.load(reference / "model.pt", weights_only=True)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        assert without_timing(out / log) == without_timing(reference / log), log
    view = live_view(out)
    train = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    assert view["train/loss_q"] == [(r["env_steps"], pytest.approx(r["loss_q"])) for r in train if "loss_q" in r]
    assert view["alpha/reach"] == [(r["env_steps"], pytest.approx(r["alpha"]["reach"])) for r in train]
    assert view["eval/mean_success"] == [(r["env_steps"], pytest.approx(r["mean_success"])) for r in evals]
    assert [step for step, _ in view["eval_depth/drawer-close"]] == [r["env_steps"] for r in evals]


def train_args(params, out) -> list[str]:
    return train_cmd(params, out)[3:] + ["--threads", "1"]


def with_overlap(params, overlap: bool):
    raw = yaml.safe_load(params.read_text())
    raw["train"]["overlap_collection"] = overlap
    params.write_text(yaml.safe_dump(raw))
    return params


@pytest.fixture(scope="module", params=[False, True], ids=["sequential", "overlapped"])
def reference(request, tmp_path_factory):
    """An uninterrupted 6-epoch run (epoch 1 warm-up; 3 updates in each later epoch)."""
    tmp = tmp_path_factory.mktemp("reference")
    params = with_overlap(tiny_params(tmp), request.param)
    out = tmp / "run"
    subprocess.run(train_cmd(params, out) + ["--threads", "1"], check=True, capture_output=True, timeout=600)
    return params, out


@pytest.mark.parametrize("where, number, signum, checkpoint, line", [
    # update 5 = the 2nd of epoch 3: stops after it (episode + 2 updates of epoch 3)
    ("update", 5, signal.SIGTERM, "ckpt-0000002.000003.pt", "stopped by SIGTERM after 2 updates of epoch 3"),
    # the 4th episode (epoch 4): sequential collection stops after it, before any update
    ("episode", 4, signal.SIGINT, "ckpt-0000003.000001.pt", "stopped by SIGINT after 0 updates of epoch 4"),
])
def test_a_signal_stops_at_a_safe_point_and_the_rerun_continues_exactly(reference, tmp_path, monkeypatch, capsys,
                                                                       where, number, signum, checkpoint, line):
    params, full = reference
    overlapped = yaml.safe_load(params.read_text())["train"]["overlap_collection"]
    if overlapped and where == "episode":  # the episode runs beside the epoch's updates: the next
        # safe point is after the first update (the episode is finished and held in the checkpoint)
        checkpoint, line = "ckpt-0000003.000002.pt", "stopped by SIGINT after 1 updates of epoch 4"
    out = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch:
        signal_at(patch, where, number, signum)
        code = cli.main(train_args(params, out))
    err = capsys.readouterr().err
    assert code == 75, err
    message = err.strip().splitlines()[-1]
    assert message.startswith(line), message
    assert f"checkpoint {out / 'checkpoints' / checkpoint} written" in message
    assert not (out / "model.pt").exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored
    assert cli.main(train_args(params, out)) == 0
    assert "resuming from epoch" in capsys.readouterr().err
    same_run(out, full)


def test_logs_deleted_after_a_stop_come_back_from_the_checkpoint(reference, tmp_path, monkeypatch, capsys):
    """What Snakemake does to a failed job's outputs: the logs are gone; the rerun rewrites them."""
    params, full = reference
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_at(patch, "update", 10)  # in epoch 5
        assert cli.main(train_args(params, out)) == 75
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        (out / log).unlink()
    assert cli.main(train_args(params, out)) == 0
    capsys.readouterr()
    same_run(out, full)


def test_raising_epochs_continues_the_finished_run(reference, tmp_path, capsys):
    params, full = reference
    short = tmp_path / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["presets"]["tiny"]["epochs"] = 4  # on the evaluation grid (eval_every 2): the same run so far
    short.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert cli.main(train_args(short, out)) == 0
    assert json.loads((out / "run.json").read_text())["epochs"] == 4
    capsys.readouterr()
    assert cli.main(train_args(params, out)) == 0
    err = capsys.readouterr().err
    assert "continuing the run of 4 epochs to 6 epochs" in err and "resuming from epoch 4" in err
    same_run(out, full)
    # Another change (not epochs) starts a new run.
    raw["presets"]["tiny"]["epochs"] = 6
    raw["train"]["lr"] = 1e-3
    short.write_text(yaml.safe_dump(raw))
    with pytest.warns(UserWarning, match="belong to other parameters; starting afresh"):
        assert cli.main(train_args(short, out)) == 0
    assert "resuming" not in capsys.readouterr().err


def test_unreadable_checkpoints_are_said_in_one_line_before_starting_over(reference, tmp_path, capsys):
    params, full = reference
    out = tmp_path / "run"
    shutil.copytree(full / "checkpoints", out / "checkpoints")
    for path in (out / "checkpoints").glob("*.pt"):
        path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="truncated or corrupted"):
        assert cli.main(train_args(params, out)) == 0
    err = capsys.readouterr().err
    assert (f"warning: none of the 2 checkpoints in {out / 'checkpoints'} is readable; training starts from "
            "scratch") in err
    same_run(out, full)


@pytest.mark.parametrize("target", ["checkpoint", "log"])
def test_disk_full_keeps_the_previous_checkpoint_and_names_the_file(reference, tmp_path, monkeypatch, capsys, target):
    params, full = reference
    out = tmp_path / "run"
    real_replace = os.replace

    def full_disk(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    if target == "checkpoint":  # the 4th checkpoint's data cannot be written
        def replace(src, dst):
            if str(dst).endswith("ckpt-0000004.pt"):
                full_disk(dst)
            return real_replace(src, dst)
        monkeypatch.setattr(d2r_io.os, "replace", replace)
        failing = out / "checkpoints" / "ckpt-0000004.pt"
    else:  # the train log's 5th line: the write itself fails, as on a full disk
        appends = [0]

        class FullFile:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, text):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def failing_open(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            if "train_log" in str(path) and mode == "a":
                appends[0] += 1
                if appends[0] == 5:
                    return FullFile(f)
            return f

        monkeypatch.setattr(d2r_io, "open", failing_open, raising=False)
        failing = out / "train_log.jsonl"
    assert cli.main(train_args(params, out)) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    last = out / "checkpoints" / ("ckpt-0000003.pt" if target == "checkpoint" else "ckpt-0000004.pt")
    assert message == (f"error: cannot write {failing}: No space left on device; the last good checkpoint "
                       f"{last} is intact"), message
    assert not list((out / "checkpoints").glob(".*.tmp"))
    monkeypatch.undo()
    assert cli.main(train_args(params, out)) == 0  # space again: the rerun continues from there
    capsys.readouterr()
    same_run(out, full)
