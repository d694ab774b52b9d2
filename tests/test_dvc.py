"""No result is labelled with parameters it was not made with: the pipeline through `dvc` and
`snakemake` themselves, in Git repositories made from this one (issue 27).

One repository (`origin`) builds the tiny experiment with `snakemake` alone, as `make smoke` does;
Snakemake then records it in dvc.lock itself, so `dvc status`, `dvc push` and `dvc exp run` work
on it at once. Every other test works in a `git clone` of it after `dvc pull`: a workspace with no
.snakemake/ records and DVC's file times, where freshness must come from content (d2r.pipeline.records).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    EXPERIMENT,
    METHODS,
    REPO,
    TARGET,
    TIMEOUT,
    edit_params,
    pipeline_env,
    planned,
    sh,
    snakemake,
    tiny_experiment,
)

pytestmark = pytest.mark.slow

STAGE = f"experiment@{EXPERIMENT}"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
#: the pipeline's outputs (DVC outputs), checkpoints included
OUTPUTS = ("results", "logs", "reports", "metrics", "benchmarks/runs")


def snapshot(repo: Path, within=OUTPUTS) -> dict[str, tuple[str, int]]:
    """Every file under `within` (or the whole tree but .git and .snakemake, Snakemake's own cache,
    with within=None) -> (SHA-256, mtime in ns)."""
    roots = [repo / w for w in within] if within else [repo]
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(repo).as_posix()
            if path.is_file() and not rel.startswith((".git/", ".snakemake/")):
                out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


def contents(state: dict[str, tuple[str, int]]) -> dict[str, str]:
    return {rel: digest for rel, (digest, _) in state.items()}


def run(repo: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=repo, env=pipeline_env(), capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A Git repository of the project with the tiny experiment (a DVC stage like the others),
    built by `snakemake` alone, its dvc.lock and metrics committed and its results pushed."""
    if shutil.which("dvc", path=pipeline_env()["PATH"]) is None or shutil.which("git") is None:
        pytest.skip("dvc or git is not installed")
    base = tmp_path_factory.mktemp("dvc")
    repo = base / "origin"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        output = rel.startswith(("metrics/", "reports/curves/")) and not rel.endswith("README.md")
        if (REPO / rel).is_file() and not output:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, repo / rel)
    edit_params(repo, tiny_experiment)
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("foreach:\n", f"foreach:\n      - {EXPERIMENT}\n", 1))
    sh(repo, "git", "init", "-q")
    identify(repo)
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "dvc", "remote", "add", "-d", "local", str(base / "remote"))
    sh(repo, *GIT, "add", "-A")
    sh(repo, *GIT, "commit", "-qm", "code")

    out = snakemake(repo, "--cores", "2", TARGET)
    assert f"recorded {STAGE} in dvc.lock" in out, out[-3000:]
    # The tree is as DVC expects it without any `dvc commit` by hand:
    assert "up to date" in sh(repo, "dvc", "status", STAGE)
    pushed = sh(repo, "dvc", "push", STAGE)
    assert "pushed" in pushed and "Everything is up to date" not in pushed, pushed
    sh(repo, *GIT, "add", "dvc.lock", "metrics", "reports/curves")
    sh(repo, *GIT, "commit", "-qm", "tiny results")
    return repo


def identify(repo: Path) -> None:
    """A committer for the commits DVC makes of experiments (a machine may have no global one)."""
    sh(repo, "git", "config", "user.name", "t")
    sh(repo, "git", "config", "user.email", "t@t")


def clone(origin: Path, dest: Path) -> Path:
    """`git clone` and `dvc pull` of the experiment: no .snakemake/ records, DVC's file order."""
    sh(origin.parent, "git", "clone", "-q", str(origin), str(dest))
    identify(dest)
    sh(dest, "dvc", "pull", STAGE)
    return dest


def test_a_clone_after_dvc_pull_plans_nothing_then_exactly_what_a_change_touches(origin, tmp_path):
    repo = clone(origin, tmp_path / "clone")
    for rel in (TARGET, f"metrics/{EXPERIMENT}.json", f"results/{EXPERIMENT}/d2r/seed0/model.pt"):
        assert (repo / rel).read_bytes() == (origin / rel).read_bytes(), rel
    assert planned(repo) == {}
    # Forcing one run's training re-runs what was made from it too.
    forced = planned(repo, "--forcerun", f"results/{EXPERIMENT}/d2r/seed0/model.pt")
    assert forced == {"train": 1, "evaluate": 1, "analyse": 1, "report": 1}, forced
    # Evaluation settings: evaluate and what reads its output, no training.
    edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].update(final_eval_episodes=2))
    assert planned(repo) == {"evaluate": 2, "analyse": 2, "report": 1}
    # A training setting of this experiment: its runs and everything after them, not setup.
    edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].update(final_eval_episodes=1,
                                                                         train={"lr": 1e-3}))
    assert planned(repo) == {"train": 2, "evaluate": 2, "analyse": 2, "report": 1}
    edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].pop("train"))
    assert planned(repo) == {}


def test_a_dry_run_changes_no_file(origin, tmp_path):
    """Not on a current tree, nor with outdated results, a missing and a damaged file to plan for."""
    repo = clone(origin, tmp_path / "clone")
    (repo / f"results/{EXPERIMENT}/mtsac/seed0/routes.json").unlink()
    (repo / f"results/{EXPERIMENT}/d2r/seed0/eval.json").write_text("{\"trunc")
    edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].update(final_eval_episodes=3))
    before = snapshot(repo, within=None)
    assert planned(repo) == {"evaluate": 2, "analyse": 2, "report": 1}
    assert snapshot(repo, within=None) == before


def test_a_truncated_intermediate_is_named_and_rebuilt_and_nothing_else_goes(origin, tmp_path):
    repo = clone(origin, tmp_path / "clone")
    damaged = f"results/{EXPERIMENT}/d2r/seed0/eval.json"
    good = (repo / damaged).read_bytes()
    (repo / damaged).write_bytes(good[: len(good) // 2])
    model = repo / f"results/{EXPERIMENT}/d2r/seed0/model.pt"
    model_state = (model.read_bytes(), model.stat().st_mtime_ns)

    out = snakemake(repo, "-n", TARGET)
    lines = [line for line in out.splitlines() if line.startswith("outdated:")]
    assert lines == [f"outdated: evaluate {EXPERIMENT}/d2r/seed0: {damaged} is not the file its job wrote "
                     "(edited or damaged since)"], lines
    assert planned(repo) == {"evaluate": 1, "analyse": 1, "report": 1}
    snakemake(repo, "--cores", "2", TARGET)
    rebuilt, original = (json.loads(text) for text in ((repo / damaged).read_text(), good.decode()))
    assert rebuilt.pop("wall_time") > 0 and original.pop("wall_time") > 0
    assert rebuilt == original
    assert (model.read_bytes(), model.stat().st_mtime_ns) == model_state
    metrics = f"metrics/{EXPERIMENT}.json"
    assert (repo / metrics).read_bytes() == (origin / metrics).read_bytes()
    assert planned(repo) == {}


def test_a_failed_dvc_exp_run_on_a_tree_snakemake_built_loses_no_file(origin, tmp_path):
    """Results that Snakemake trained after the last Git commit (dvc.lock not committed): DVC's
    experiment starts by checking the workspace out from dvc.lock, which Snakemake kept current."""
    repo = clone(origin, tmp_path / "clone")
    edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].update(train={"lr": 1e-3}))
    snakemake(repo, "--cores", "2", TARGET)
    assert (repo / "results" / EXPERIMENT / "d2r" / "seed0" / "checkpoints").is_dir()
    before = contents(snapshot(repo))
    proc = run(repo, "dvc", "exp", "run", "-S", "presets.tiny.epochs=-1", STAGE)
    assert proc.returncode != 0
    assert "error: params.yaml: presets.tiny.epochs: -1 is less than the minimum of 1" in proc.stdout + proc.stderr
    assert contents(snapshot(repo)) == before


def _wait_for_queue(repo: Path, timeout: float = 1500) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sh(repo, "dvc", "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(5)
    raise AssertionError(f"the DVC queue did not finish:\n{status}")


def checkout(repo: Path, experiment: str) -> None:
    """An experiment's commit and results into the workspace, as the README says."""
    sh(repo, "dvc", "exp", "branch", experiment, f"exp-{experiment}")
    sh(repo, "git", "checkout", "-q", f"exp-{experiment}")
    sh(repo, "dvc", "checkout", STAGE)


def _run_info(repo: Path, method: str) -> dict:
    return json.loads((repo / "results" / EXPERIMENT / method / "seed0" / "run.json").read_text())


def test_queued_experiments_train_with_their_own_parameters(origin, tmp_path):
    """Two queued experiments with other learning rates each train with theirs; one that changes
    only the evaluation retrains nothing. DVC runs them in temporary workspaces with the baseline's
    results checked out and no Snakemake records."""
    repo = clone(origin, tmp_path / "clone")
    base_models = {m: (repo / "results" / EXPERIMENT / m / "seed0" / "model.pt").read_bytes() for m in METHODS}
    assert _run_info(repo, "d2r")["config"]["sac"]["lr"] == 3e-4
    for name, setting in (("lr-low", "train.lr=5e-4"), ("lr-high", "+experiments.tiny.train.lr=2e-3"),
                          ("eval-only", "experiments.tiny.final_eval_episodes=2")):
        sh(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", setting, STAGE)
    sh(repo, "dvc", "queue", "start", "-j", "1")
    status = _wait_for_queue(repo)
    assert status.count("Success") == 3, status

    for name, lr in (("lr-low", 5e-4), ("lr-high", 2e-3)):
        checkout(repo, name)
        for m in METHODS:
            assert _run_info(repo, m)["config"]["sac"]["lr"] == lr, (name, m)
            assert (repo / "results" / EXPERIMENT / m / "seed0" / "model.pt").read_bytes() != base_models[m], (name, m)
        assert planned(repo) == {}
    checkout(repo, "eval-only")
    for m in METHODS:
        assert _run_info(repo, m)["config"]["sac"]["lr"] == 3e-4
        assert (repo / "results" / EXPERIMENT / m / "seed0" / "model.pt").read_bytes() == base_models[m], m
        assert json.loads((repo / "results" / EXPERIMENT / m / "seed0" / "eval.json").read_text())["episodes"] == 2
    assert planned(repo) == {}
