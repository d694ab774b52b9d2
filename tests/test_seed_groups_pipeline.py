"""Seed groups through Snakemake (issue 31): with `seeds_per_job: 2` one job trains both seeds of
a method, each seed's files are those of its solo job, a group job stopped by SIGTERM resumes
every seed exactly when the same command runs again, changing seeds_per_job or group_update
alone re-runs nothing, and a stacked group job (group_update: stacked) gives each seed its solo
run's logs to float rounding."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from helpers import (
    EXPERIMENT,
    TARGET,
    TIMEOUT,
    edit_params,
    planned,
    repo_copy,
    snakemake,
    start_pipeline,
    tiny_experiment,
    training_pid,
    wait_for_file,
    without_timing,
)

pytestmark = pytest.mark.slow

SEEDS = [0, 1]
GROUP_RULE = f"train-{EXPERIMENT}-d2r-seeds0-1"


def grouped(seeds_per_job: int, group_update: str = "sequential"):
    def change(raw: dict) -> dict:
        tiny_experiment(raw)
        raw["presets"]["tiny"].update(epochs=6, eval_every=2, checkpoint_every=1)
        raw["experiments"][EXPERIMENT].update(methods=["d2r"], seeds=list(SEEDS), seeds_per_job=seeds_per_job,
                                              group_update=group_update)
        return raw
    return change


def new_copy(path: Path, seeds_per_job: int) -> Path:
    return repo_copy(path, grouped(seeds_per_job))


def run_dir(repo: Path, seed: int) -> Path:
    return repo / "results" / EXPERIMENT / "d2r" / f"seed{seed}"


@pytest.fixture(scope="module")
def solo(tmp_path_factory) -> Path:
    """The experiment with one training job per seed, run once."""
    repo = new_copy(tmp_path_factory.mktemp("solo") / "repo", seeds_per_job=1)
    snakemake(repo, "--cores", "2", TARGET)
    return repo


def test_a_group_job_trains_each_seed_as_alone_and_resumes_after_sigterm(solo, tmp_path):
    repo = new_copy(tmp_path / "repo", seeds_per_job=2)
    assert planned(repo) == {"setup": 1, GROUP_RULE: 1, "evaluate": 2, "analyse": 2, "report": 1}

    proc = start_pipeline(repo)
    try:
        wait_for_file(run_dir(repo, 1) / "checkpoints" / f"ckpt-{3:07d}.json", repo, proc)
        pid = training_pid(repo, "d2r")
        assert pid is not None, "training process not found"
        os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    job_log = repo / "logs" / EXPERIMENT / "d2r" / "seeds0-1" / "train.log"
    stops = re.findall(r"(seed \d): stopped by SIGTERM", job_log.read_text())
    assert sorted(stops) == ["seed 0", "seed 1"], job_log.read_text()[-2000:]

    snakemake(repo, "--cores", "2", TARGET)
    # (the progress bars share the log's lines: find the messages, not whole lines)
    assert re.findall(r"(seed \d): resuming from epoch", job_log.read_text()) == ["seed 0", "seed 1"]
    for seed in SEEDS:
        for name in ("train_log.jsonl", "eval_log.jsonl"):
            assert without_timing(run_dir(repo, seed) / name) == without_timing(run_dir(solo, seed) / name)
        assert (run_dir(repo, seed) / "model.pt").read_bytes() == (run_dir(solo, seed) / "model.pt").read_bytes()
    metrics = f"metrics/{EXPERIMENT}.json"
    assert (repo / metrics).read_bytes() == (solo / metrics).read_bytes()

    # How training is scheduled is no result: regrouping re-runs nothing, either way.
    edit_params(repo, grouped(1))
    assert planned(repo) == {}
    edit_params(solo, grouped(2))
    assert planned(solo) == {}
    edit_params(solo, grouped(2, group_update="stacked"))
    assert planned(solo) == {}


def close_records(got, want, where: str = "") -> None:
    """The same log lines to float rounding: equal but for floats within 1e-4 relative."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            close_records(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            close_records(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), where
    else:
        assert got == want, where


def test_a_stacked_group_job_trains_each_seed_as_alone_to_rounding(solo, tmp_path):
    repo = new_copy(tmp_path / "repo", seeds_per_job=2)
    edit_params(repo, grouped(2, group_update="stacked"))
    assert planned(repo) == {"setup": 1, GROUP_RULE: 1, "evaluate": 2, "analyse": 2, "report": 1}
    snakemake(repo, "--cores", "2", TARGET)
    for seed in SEEDS:
        run_info = json.loads((run_dir(repo, seed) / "run.json").read_text())
        assert run_info["group"] == {"seeds": SEEDS, "update": "stacked"}
        for name in ("train_log.jsonl", "eval_log.jsonl"):
            close_records(without_timing(run_dir(repo, seed) / name), without_timing(run_dir(solo, seed) / name))
