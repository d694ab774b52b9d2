"""Long runs through the pipeline itself lose nothing and never show stale results (issue 16):
Snakemake drives a tiny experiment in a temporary copy of the repository, and the training
process it runs is killed (SIGKILL), stopped (SIGTERM) or interrupted with Ctrl-C (SIGINT to the
whole process group); missing and failed intermediates are rebuilt; a failed `dvc repro` /
`dvc exp run` deletes nothing; bad parameters give the jobs' one line through Snakemake.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    EXPERIMENT,
    METHODS,
    TARGET,
    TIMEOUT,
    pipeline_env,
    planned,
    repo_copy,
    sh,
    snakemake,
    start_pipeline,
    tiny_experiment,
    training_pid,
    wait_for_file,
    without_timing,
)

pytestmark = pytest.mark.slow

EPOCHS = 8
RUN_FILES = ("model.pt", "run.json", "train_log.jsonl", "eval_log.jsonl", "eval.json", "routes.json")


def long_tiny(raw: dict) -> dict:
    """The tiny experiment with enough epochs to be interrupted between two checkpoints."""
    tiny_experiment(raw)
    raw["presets"]["tiny"].update(epochs=EPOCHS, eval_every=2, checkpoint_every=1)
    return raw


def new_copy(path: Path) -> Path:
    return repo_copy(path, long_tiny)


def run_dir(repo: Path, method: str) -> Path:
    return repo / "results" / EXPERIMENT / method / "seed0"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny experiment run once without interruption."""
    repo = new_copy(tmp_path_factory.mktemp("reference") / "repo")
    snakemake(repo, "--cores", "2", TARGET)
    return repo


def same_as_reference(repo: Path, reference: Path) -> None:
    for method in METHODS:
        for log in ("train_log.jsonl", "eval_log.jsonl"):
            got, want = without_timing(run_dir(repo, method) / log), without_timing(run_dir(reference, method) / log)
            assert got == want, f"{method} {log}: {len(got)} lines, expected {len(want)}"
        assert (run_dir(repo, method) / "model.pt").read_bytes() == (run_dir(reference, method) / "model.pt").read_bytes()
    name = f"metrics/{EXPERIMENT}.json"
    assert (repo / name).read_bytes() == (reference / name).read_bytes()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_interrupted_training_under_snakemake_ends_with_the_uninterrupted_logs(reference, tmp_path, how):
    repo = new_copy(tmp_path / "repo")
    proc = start_pipeline(repo)
    try:
        wait_for_file(run_dir(repo, "d2r") / "checkpoints" / f"ckpt-{3:07d}.json", repo, proc)
        if how == "Ctrl-C":  # the terminal sends SIGINT to every process of the foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            pid = training_pid(repo, "d2r")
            assert pid is not None, "training process not found"
            os.kill(pid, getattr(signal, how))
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    train_log = (repo / "logs" / EXPERIMENT / "d2r" / "seed0" / "train.log").read_text()
    if how != "SIGKILL":  # a graceful stop: one line, the checkpoint of exactly there
        signame = "SIGINT" if how == "Ctrl-C" else how
        assert f"stopped by {signame} " in train_log and "run the same command again to continue" in train_log
    # Snakemake deleted the failed job's logs (declared outputs); the rerun brings them back whole.
    assert not (run_dir(repo, "d2r") / "model.pt").exists()
    out = snakemake(repo, "--cores", "2", TARGET)
    assert "resuming from epoch" in (repo / "logs" / EXPERIMENT / "d2r" / "seed0" / "train.log").read_text(), out
    same_as_reference(repo, reference)


@pytest.mark.parametrize("missing", ["results/tiny/d2r/seed0/eval.json", "results/tiny/mtsac/seed0/routes.json",
                                     "results/tiny/d2r/seed0/model.pt", "results/tiny/environment.json"])
def test_a_missing_intermediate_is_rebuilt_by_the_target_command(reference, tmp_path, missing):
    repo = tmp_path / "repo"
    shutil.copytree(reference, repo, symlinks=True)
    (repo / missing).unlink()
    plan = planned(repo)  # the dry run plans the missing file and what was built from it ...
    assert plan and "report" in plan, plan
    assert (repo / TARGET).exists()  # ... and removes nothing
    snakemake(repo, "--cores", "2", TARGET)
    assert (repo / missing).exists() and (repo / TARGET).exists()
    same_as_reference(repo, reference)
    assert planned(repo) == {}


def test_a_damaged_model_is_rebuilt_before_anything_reads_it(reference, tmp_path):
    """A model.pt that is not the file training wrote: training runs again (from its final
    checkpoint, in seconds) and what was built from it, saying why in one line."""
    repo = tmp_path / "repo"
    shutil.copytree(reference, repo, symlinks=True)
    (run_dir(repo, "mtsac") / "model.pt").write_bytes(b"not a model")
    out = snakemake(repo, "-n", TARGET)
    assert [line for line in out.splitlines() if line.startswith("outdated:")] == [
        f"outdated: train {EXPERIMENT}/mtsac/seed0: results/{EXPERIMENT}/mtsac/seed0/model.pt is not the file "
        "its job wrote (edited or damaged since)"]
    assert planned(repo) == {"train": 1, "evaluate": 1, "analyse": 1, "report": 1}
    snakemake(repo, "--cores", "2", TARGET)
    same_as_reference(repo, reference)


def test_after_a_failed_job_what_was_built_from_its_outputs_is_rebuilt(reference, tmp_path):
    """evaluate re-runs (its code changed) and fails for mtsac: Snakemake deletes that eval.json;
    the report built from the old one stays (labelled with the parameters it was made with; nothing
    else is deleted) but is outdated. With the code back, the target command rebuilds what is
    missing and what was built from it."""
    repo = tmp_path / "repo"
    shutil.copytree(reference, repo, symlinks=True)
    job = repo / "d2r" / "jobs" / "evaluate.py"
    code = job.read_text()
    job.write_text(code.replace("def run(args) -> int:\n",
                                "def run(args) -> int:\n    if args.method == 'mtsac':\n"
                                "        raise SystemExit('error: failed on purpose')\n", 1))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", TARGET], cwd=repo, env=pipeline_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    log = (repo / "logs" / EXPERIMENT / "mtsac" / "seed0" / "evaluate.log").read_text()
    assert log.startswith("error: failed on purpose"), log
    assert not (run_dir(repo, "mtsac") / "eval.json").exists()
    assert (repo / TARGET).exists() and (run_dir(repo, "mtsac") / "model.pt").exists()
    job.write_text(code)
    plan = planned(repo)   # mtsac's evaluation; d2r's too if it ran with the edited code before the failure
    assert "train" not in plan and plan.get("report") == 1 and plan.get("evaluate") in (1, 2), plan
    snakemake(repo, "--cores", "2", TARGET)
    same_as_reference(repo, reference)


BAD = [
    (lambda text: text.replace("  gamma: 0.99", "  gamma: 1.5", 1),
     "error: params.yaml: train.gamma: 1.5 is greater than the maximum of 1"),
    (lambda text: text.replace("  gamma: 0.99", "  gamma: 0.99\n  gamma: 0.9", 1),
     "error: params.yaml: line 8: duplicate key 'gamma' (first given at line 7)"),
    (lambda text: text.replace("  tau: 0.005", "  tau: [0.005", 1),
     "error: params.yaml: not valid YAML: line 9, column 5: expected ',' or ']', but got ':' "
     "(while parsing a flow sequence)"),
]


@pytest.mark.parametrize("change, message", BAD, ids=["range", "duplicate", "syntax"])
def test_bad_parameters_give_the_jobs_one_line_through_snakemake(reference, tmp_path, change, message):
    repo = tmp_path / "repo"
    shutil.copytree(reference, repo, symlinks=True)
    params = repo / "params.yaml"
    params.write_text(change(params.read_text()))
    for cmd in ([sys.executable, "-m", "snakemake", "-n", TARGET],
                [sys.executable, "-m", "d2r", "train", "--experiment", EXPERIMENT, "--method", "d2r", "--seed", "0",
                 "--out", "results/x"]):
        proc = subprocess.run(cmd, cwd=repo, env=pipeline_env(), capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        ours = [line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("Using workflow")]
        assert ours == [message], ours
    assert (repo / TARGET).exists()  # nothing was removed


def test_failed_dvc_runs_delete_nothing(reference, tmp_path):
    if shutil.which("dvc", path=pipeline_env()["PATH"]) is None:
        pytest.skip("dvc is not installed")
    repo = tmp_path / "repo"
    shutil.copytree(reference, repo, symlinks=True)
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("foreach:\n", f"foreach:\n      - {EXPERIMENT}\n", 1))
    # dvc exp needs Git: a repository holding the code and params, results ignored as on main
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "dvc", "repro", f"experiment@{EXPERIMENT}")  # snakemake finds nothing to do; DVC records
    outputs = [TARGET, f"reports/{EXPERIMENT}.timing.json", f"metrics/{EXPERIMENT}.json",
               *(f"results/{EXPERIMENT}/{m}/seed0/{f}" for m in METHODS for f in RUN_FILES)]
    before = {rel: (repo / rel).read_bytes() for rel in outputs}
    proc = subprocess.run(["dvc", "exp", "run", "-S", "presets.tiny.updates_per_epoch=-1", f"experiment@{EXPERIMENT}"],
                          cwd=repo, env=pipeline_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "error: params.yaml: presets.tiny.updates_per_epoch: -1 is less than the minimum of 0" in proc.stdout + proc.stderr
    assert {rel: (repo / rel).read_bytes() for rel in outputs if (repo / rel).exists()} == before
    assert "updates_per_epoch: -1" in (repo / "params.yaml").read_text()  # dvc exp run -S leaves it (README)
    proc = subprocess.run(["dvc", "repro", f"experiment@{EXPERIMENT}"], cwd=repo, env=pipeline_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert {rel: (repo / rel).read_bytes() for rel in outputs if (repo / rel).exists()} == before
