"""Several seeds trained together in one process (issue 31, d2r.sac.group): seed s in a group
equals seed s trained alone (weights, logs, every random state), for every method; a group stopped
by a signal resumes every seed exactly; a seed with a non-finite value ends alone and is named;
--out and --record need {seed} with several seeds."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, nan_gradient, on_update, signal_at, tiny_params, without_timing

from d2r import cli
from d2r.config import load_params
from d2r.runtime.checkpoint import load_latest_checkpoint
from d2r.sac.group import SeedGroup
from d2r.sac.training import Trainer

EPOCHS = 3  # warm-up epoch 1; updates 1-3 in epoch 2, 4-6 in epoch 3; evaluation at 2 and 3
SEEDS = [0, 1]
METHODS = list(yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["methods"])


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    """tiny_params with every method in the experiment and the baselines' networks small too."""
    path = tiny_params(tmp_path_factory.mktemp("params"), epochs=EPOCHS)
    raw = yaml.safe_load(path.read_text())
    raw["nets"]["mtsac"]["hidden"] = raw["nets"]["mhsac"]["hidden"] = [32, 32]
    raw["nets"]["moe"].update(num_experts=2, hidden=[32, 32])
    raw["nets"]["softmod"].update(num_layers=2, num_modules=2, module_width=16, encoder=[32, 32], embed_dim=32,
                                  routing_hidden=16)
    raw["env"]["max_episode_steps"] = 20  # short episodes: the whole file in a few minutes
    raw["experiments"]["tiny"]["methods"] = METHODS
    raw["experiments"]["tiny"]["seeds"] = SEEDS
    raw["experiments"]["tiny"]["group_update"] = "sequential"  # exactly the solo updates (test_stacked.py: stacked)
    path.write_text(yaml.safe_dump(raw))
    return path


def runs(params: Path, method: str, overlap: bool = False):
    loaded = load_params(params)
    out = []
    for seed in SEEDS:
        run = loaded.run("tiny", method, seed)
        out.append(dataclasses.replace(run, sac=dataclasses.replace(run.sac, overlap_collection=overlap)))
    return out


_solo: dict = {}


def solo(params: Path, tmp_root: Path, method: str, seed: int, overlap: bool = False) -> Path:
    """Seed `seed` trained alone, as the train job of one seed does (a Trainer's train())."""
    key = (method, seed, overlap)
    if key not in _solo:
        out = tmp_root / f"solo-{method}-{overlap}-seed{seed}"
        Trainer(runs(params, method, overlap)[SEEDS.index(seed)], out, progress=False).train()
        _solo[key] = out
    return _solo[key]


def group(runs_, out_dirs) -> None:
    seeds = SeedGroup(runs_, out_dirs, torch.device("cpu"), progress=False)
    try:
        members = seeds.train()
    finally:
        seeds.close()
    assert [m.ended for m in members] == [None] * len(runs_)


def same_model(out: Path, reference: Path) -> None:
    got = torch.load(out / "model.pt", weights_only=True)
    want = torch.load(reference / "model.pt", weights_only=True)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def same_run(out: Path, reference: Path) -> None:
    """Same weights, the same log lines but for timing, and every random state in the last checkpoint."""
    same_model(out, reference)
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        assert without_timing(out / log) == without_timing(reference / log), log
    got, want = load_latest_checkpoint(out / "checkpoints"), load_latest_checkpoint(reference / "checkpoints")
    assert got["epoch"] == want["epoch"] == EPOCHS
    assert got["rng"]["python"] == want["rng"]["python"]
    assert got["rng"]["numpy"] == want["rng"]["numpy"]
    assert torch.equal(got["rng"]["torch"], want["rng"]["torch"])
    assert torch.equal(got["collector_rng"], want["collector_rng"])
    assert got["env_rng"] == want["env_rng"]
    assert got["replay"]["rng"] == want["replay"]["rng"]


# D2R in the fast tier (make test-fast); the other methods and overlapped collection are `slow`.
@pytest.mark.parametrize("method, overlap", [
    pytest.param(m, False, id=m, marks=() if m == "d2r" else pytest.mark.slow) for m in METHODS
] + [pytest.param("d2r", True, id="d2r-overlapped", marks=pytest.mark.slow)])
def test_each_seed_of_a_group_equals_its_solo_run(params, tmp_path, tmp_path_factory, method, overlap):
    root = tmp_path_factory.getbasetemp()
    out_dirs = [tmp_path / f"seed{seed}" for seed in SEEDS]
    group(runs(params, method, overlap), out_dirs)
    for seed, out in zip(SEEDS, out_dirs):
        same_run(out, solo(params, root, method, seed, overlap))


def train_args(params: Path, out: str, *seeds: int) -> list[str]:
    return ["train", "--params", str(params), "--experiment", "tiny", "--method", "d2r",
            *[a for s in seeds for a in ("--seed", str(s))], "--out", out, "--no-progress"]


def test_a_signal_stops_every_seed_and_the_rerun_resumes_each_exactly(params, tmp_path, tmp_path_factory,
                                                                      monkeypatch, capsys):
    out = str(tmp_path / "seed{seed}")
    # The updates alternate between the seeds: call 5 is seed 0's 3rd update (the last of epoch 2).
    # Seed 1 then stops before its 3rd, seed 0 at the end of epoch 2: each at its own position.
    with monkeypatch.context() as patch:
        signal_at(patch, "update", 5, signal.SIGTERM)
        code = cli.main(train_args(params, out, *SEEDS))
    err = capsys.readouterr().err
    assert code == 75, err
    lines = err.strip().splitlines()
    assert any(line.startswith("seed 0: stopped by SIGTERM at the end of epoch 2") for line in lines), err
    assert any(line.startswith("seed 1: stopped by SIGTERM after 2 updates of epoch 2") for line in lines), err
    assert (tmp_path / "seed1" / "checkpoints" / "ckpt-0000001.000003.pt").exists()
    assert not any((tmp_path / f"seed{s}" / "model.pt").exists() for s in SEEDS)
    assert cli.main(train_args(params, out, *SEEDS)) == 0
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines() if "resuming from epoch" in line] == ["seed 0", "seed 1"]
    root = tmp_path_factory.getbasetemp()
    for seed in SEEDS:
        same_run(tmp_path / f"seed{seed}", solo(params, root, "d2r", seed))


def test_a_non_finite_value_ends_its_seed_alone_and_names_it(params, tmp_path, tmp_path_factory, monkeypatch,
                                                             capsys):
    out = str(tmp_path / "seed{seed}")
    on_update(monkeypatch, 4, nan_gradient)  # call 4: seed 1's 2nd update (epoch 2)
    code = cli.main(train_args(params, out, *SEEDS))
    err = capsys.readouterr().err
    assert code == 3, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: seed 1: update 2 (epoch 2): non-finite gradient in q1;"), err
    assert f"the last good checkpoint {tmp_path / 'seed1' / 'checkpoints' / 'ckpt-0000001.pt'} is intact" in line
    assert not (tmp_path / "seed1" / "model.pt").exists()
    same_run(tmp_path / "seed0", solo(params, tmp_path_factory.getbasetemp(), "d2r", 0))


def test_several_seeds_need_the_seed_placeholder(params, tmp_path, capsys):
    assert cli.main(train_args(params, str(tmp_path / "run"), 0, 1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {tmp_path / 'run'}: with several seeds"), err
    assert "{seed}" in err[0]
    args = train_args(params, str(tmp_path / "seed{seed}"), 0, 1) + ["--record", "results/tiny/d2r/train.json"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --record results/tiny/d2r/train.json: with several"), err
    assert not (tmp_path / "seed0").exists()


def test_a_group_job_writes_one_build_record_per_seed(params, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = train_args(params, "results/tiny/d2r/seed{seed}", 0, 1) + [
        "--record", "results/tiny/d2r/seed{seed}/records/train.json"]
    assert cli.main(args) == 0, capsys.readouterr().err
    for seed in SEEDS:
        record = json.loads((tmp_path / f"results/tiny/d2r/seed{seed}/records/train.json").read_text())
        assert record["job"] == f"train tiny/d2r/seed{seed}"
        assert f"results/tiny/d2r/seed{seed}/model.pt" in record["outputs"]


@pytest.mark.slow
def test_a_group_job_sigtermed_from_outside_resumes_every_seed_exactly(params, tmp_path):
    """The job as the pipeline runs it, in its own process: SIGTERM at whatever point it has reached
    once seed 1 wrote its first checkpoint; the rerun ends as the uninterrupted group does."""
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "d2r", *train_args(params, str(out / "seed{seed}"), *SEEDS), "--threads", "1"]

    full = tmp_path / "full"
    subprocess.run(command(full), check=True, capture_output=True, timeout=600, cwd=REPO)
    out = tmp_path / "stopped"
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    marker = out / "seed1" / "checkpoints" / "ckpt-0000001.json"
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 75, err
    stops = [line.split(":")[0] for line in err.splitlines() if ": stopped by SIGTERM " in line]
    assert sorted(stops) == ["seed 0", "seed 1"], err  # each at its own next safe point, in either order
    assert not (out / "seed1" / "model.pt").exists()
    rerun = subprocess.run(command(out), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr
    for seed in SEEDS:
        same_run(out / f"seed{seed}", full / f"seed{seed}")
