"""The whole pipeline, end to end, on a tiny experiment in a temporary copy of the repository.

Runs the real jobs (`python -m d2r setup/train/evaluate/analyse/report`) through Snakemake:
2 MT10 tasks, D2R and MT-SAC with small networks, one seed, 2 epochs of 50-step episodes.
Then checks what a parameter or a source change re-runs, and that a DVC push / pull into a
fresh copy gives back the same report and metrics and leaves Snakemake nothing to do (the jobs'
build records travel with the results; tests/test_dvc.py has the Git and DVC experiment side).
With a MuJoCo rendering
backend (OSMesa is installed when missing, see conftest.mujoco_rendering) the run also renders a
small video per task and method and the report embeds them; `dvc plots show` / `diff` draw the
learning curves the report wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import mujoco_rendering
from helpers import (
    EXPERIMENT,
    METHODS,
    REPO,
    TARGET,
    TIMEOUT,
    edit_params,
    ignore_outputs,
    pipeline_env,
    planned,
    repo_copy,
    sh,
    snakemake,
    tiny_experiment,
)

pytestmark = pytest.mark.slow

#: the tiny experiment's videos when rendering works here (repo fixture): 5 frames of 64x64 each
TINY_RENDER = {"enabled": True, "width": 64, "height": 64, "frame_stride": 10}
RENDERING: dict[str, str] = {}     # "why": '' when the repo fixture renders videos, else why not


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the repository with the tiny experiment, after one full run of its report."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo_copy(repo, tiny_experiment)
    RENDERING["why"] = mujoco_rendering()
    if not RENDERING["why"]:
        edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].update(render=dict(TINY_RENDER)))
    snakemake(repo, "--cores", "2", TARGET)
    return repo


def needs_videos():
    if RENDERING.get("why"):
        pytest.skip(f"MuJoCo cannot render offscreen here: {RENDERING['why']}")


def run_dir(repo: Path, method: str) -> Path:
    return repo / "results" / EXPERIMENT / method / "seed0"


def test_pipeline_outputs(repo):
    report, metrics_path = repo / TARGET, repo / "metrics" / f"{EXPERIMENT}.json"
    assert report.exists() and metrics_path.exists()
    metrics = yaml.safe_load(metrics_path.read_text())
    assert sorted(metrics["methods"]) == sorted(METHODS)
    for method in METHODS:
        entry = metrics["methods"][method]
        assert 0.0 <= entry["success_mean"] <= 1.0
        assert entry["seeds"] == 1 and entry["success_std"] == 0.0
        assert set(entry["per_task"]) == {"reach", "drawer-close"}
        assert all(0.0 <= v <= 1.0 for v in entry["per_task"].values())
        # both protocols of the final evaluation, each labelled in eval.json, and returns beside success
        ev = json.loads((run_dir(repo, method) / "eval.json").read_text())
        assert ev["protocol"] == "paper" and ev["metaworld"]["protocol"] == "metaworld.evaluation"
        assert ev["metaworld"]["episodes"] == 1 and ev["metaworld"]["max_episode_steps"] == 500
        assert entry["metaworld"]["success_mean"] == ev["metaworld"]["mean_success"]
        assert entry["return_mean"] == pytest.approx(sum(ev["return"].values()) / 2, abs=1e-6)
    assert "wall_time" not in metrics  # results only: same seed, same bytes
    timing = json.loads((repo / "reports" / f"{EXPERIMENT}.timing.json").read_text())
    assert timing["wall_time"] > 0 and sorted(timing["methods"]) == sorted(METHODS)
    for method in METHODS:
        d = run_dir(repo, method)
        for name in ("model.pt", "run.json", "train_log.jsonl", "eval_log.jsonl", "eval.json", "routes.json"):
            assert (d / name).exists(), f"{d / name} missing"
        assert (repo / "logs" / EXPERIMENT / method / "seed0" / "train.log").exists()
        assert (repo / "benchmarks" / "runs" / EXPERIMENT / method / "seed0" / "train.tsv").exists()
    assert yaml.safe_load((run_dir(repo, "d2r") / "routes.json").read_text())["routed"] is True
    assert yaml.safe_load((run_dir(repo, "mtsac") / "routes.json").read_text())["routed"] is False
    env = yaml.safe_load((repo / "results" / EXPERIMENT / "environment.json").read_text())
    assert env["task_set"]["tasks"] == ["reach", "drawer-close"] and env["versions"]["torch"]
    # which code: no git checkout here (a copy), so both unknown; tests/test_provenance.py has a repo
    assert env["code"] == {"commit": None, "dirty": None}
    assert yaml.safe_load((run_dir(repo, "d2r") / "run.json").read_text())["code"] == {"commit": None, "dirty": None}
    assert "statistics" in metrics and "iqm" in metrics["methods"]["d2r"]
    curves = (repo / "reports" / "curves" / f"{EXPERIMENT}.csv").read_text().splitlines()
    assert curves[0] == "method,task,env_steps,success,return"
    assert len(curves) == 1 + 2 * 3 * 2  # methods x (mean + tasks) x evals


def test_pipeline_videos_in_report(repo):
    """The render rule's MuJoCo videos (first seed, every method and task) are embedded in the report."""
    import base64

    needs_videos()
    text = (repo / TARGET).read_text()
    for method in METHODS:
        d = run_dir(repo, method) / "videos"
        index = json.loads((d / "index.json").read_text())
        assert index["tasks"] == ["reach", "drawer-close"] and (index["width"], index["height"]) == (64, 64)
        for task in index["tasks"]:
            data = base64.b64encode((d / f"{task}.mp4").read_bytes()).decode()
            assert f'id="video-{method}-{task}"' in text and f"data:video/mp4;base64,{data}" in text
            assert index["videos"][task]["frames"] == 5
        assert (repo / "logs" / EXPERIMENT / method / "seed0" / "render.log").exists()


def test_what_reruns(repo):
    # An up-to-date tree: nothing to do.
    assert planned(repo) == {}

    # A source file of one job only: that job (and what reads its outputs) re-runs, nothing else.
    report_py = repo / "d2r" / "jobs" / "report.py"
    original = report_py.read_text()
    report_py.write_text(original + "\n# an edit\n")
    assert planned(repo) == {"report": 1}
    report_py.write_text(original)     # back as it was, but newer: checksums show nothing changed
    assert planned(repo) == {}
    os.utime(repo / "d2r" / "sac" / "training.py")   # a newer file time alone re-runs nothing
    assert planned(repo) == {}

    # Each job's sources are what it imports (d2r.pipeline.sources): the report's statistics re-run the
    # report only; the renderer the videos and so the report (nothing without videos); setup its
    # record and the report that shows it; a network module every job that builds a net, not setup;
    # the benchmark nothing.
    videos = {"render": 2} if not RENDERING.get("why") else {}
    for source, want in (("reporting/stats.py", {"report": 1}),
                         ("video.py", {**videos, "report": 1} if videos else {}),
                         ("jobs/setup.py", {"setup": 1, "report": 1}),
                         ("nets/baselines.py", {"train": 2, "evaluate": 2, "analyse": 2, **videos, "report": 1}),
                         ("benchmark.py", {})):
        path = repo / "d2r" / source
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        assert planned(repo) == want, source
        path.write_text(original)
        assert planned(repo) == {}

    if not RENDERING.get("why"):
        # A video setting: the videos and the report. Videos off: the report only, which says so.
        edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT]["render"].update(fps=10))
        assert planned(repo) == {"render": 2, "report": 1}
        edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT]["render"].pop("fps"))
        assert planned(repo) == {}
        edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT]["render"].update(enabled=False))
        assert planned(repo) == {"report": 1}
        snakemake(repo, "--cores", "2", TARGET)
        assert "Videos are off" in (repo / TARGET).read_text() and "<video" not in (repo / TARGET).read_text()
        edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT]["render"].update(enabled=True))
        assert planned(repo) == {"report": 1}      # the videos are still there and up to date
        snakemake(repo, "--cores", "2", TARGET)
        assert "<video" in (repo / TARGET).read_text()
        assert planned(repo) == {}

    # A training parameter: training (both methods) and everything after it.
    edit_params(repo, lambda raw: raw["presets"]["tiny"].update(updates_per_epoch=3))
    plan = planned(repo)
    assert plan.get("train") == 2 and plan.get("evaluate") == 2 and "setup" not in plan
    edit_params(repo, lambda raw: raw["presets"]["tiny"].update(updates_per_epoch=2))
    assert planned(repo) == {}

    # An evaluation parameter: evaluate (and analyse, report) re-run, training does not.
    models = {m: run_dir(repo, m) / "model.pt" for m in METHODS}
    before = {m: p.stat().st_mtime_ns for m, p in models.items()}
    edit_params(repo, lambda raw: raw["experiments"][EXPERIMENT].update(final_eval_episodes=2))
    plan = planned(repo)
    assert "train" not in plan and "setup" not in plan
    assert plan.get("evaluate") == 2 and plan.get("report") == 1
    snakemake(repo, "--cores", "2", TARGET)
    assert {m: p.stat().st_mtime_ns for m, p in models.items()} == before, "training re-ran"
    for m in METHODS:
        assert yaml.safe_load((run_dir(repo, m) / "eval.json").read_text())["episodes"] == 2
    assert planned(repo) == {}


def test_paper_table_target_never_trains(repo):
    """reports/paper.html shows the experiments that have metrics (tiny: a subset of MT10's tasks,
    listed below the table) and never plans an experiment's jobs, even an outdated one's: the
    table is of the metrics as they are. New metrics rebuild it."""
    paper = "reports/paper.html"
    snakemake(repo, "--cores", "1", paper)
    assert "no published counterpart): tiny." in (repo / paper).read_text()
    assert planned(repo, target=paper) == {}
    edit_params(repo, lambda raw: raw["presets"]["tiny"].update(updates_per_epoch=3))   # tiny is outdated
    assert planned(repo, target=paper) == {}
    edit_params(repo, lambda raw: raw["presets"]["tiny"].update(updates_per_epoch=2))
    metrics = repo / "metrics" / f"{EXPERIMENT}.json"
    original = metrics.read_text()
    metrics.write_text(original + "\n")       # other bytes: the table is rebuilt from them
    assert planned(repo, target=paper) == {"paper": 1}
    metrics.write_text(original)
    assert planned(repo, target=paper) == {}


def test_report_rebuild_identical(repo):
    report = repo / TARGET
    first = report.read_bytes()
    snakemake(repo, "--cores", "2", "--force", TARGET)   # the target job only (not --forcerun report: every experiment)
    assert report.read_bytes() == first
    assert planned(repo) == {}


def _json_tail(text: str):
    """The JSON document in a command's output (DVC may print notes before it)."""
    return json.loads(text[text.index("{"):])


def _copy_tracked(src: Path, dst: Path) -> None:
    """What a clone of the Git repository holds: no DVC outputs, caches or Snakemake records."""
    def ignore(directory, names):
        rel = Path(directory).relative_to(src)
        skip = {n for n in names if n in {"results", "logs", ".snakemake", "__pycache__", "remote"}}
        if rel == Path("reports"):
            skip |= {n for n in names if n.endswith(".html")}
        if rel == Path("benchmarks"):
            skip |= {"runs"}
        if rel == Path(".dvc"):
            skip |= {"cache", "tmp"}
        return skip

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def _dvc_init(repo: Path) -> None:
    """The tiny experiment gets a stage like the others; DVC without Git (the temporary copy has none)."""
    if shutil.which("dvc", path=pipeline_env()["PATH"]) is None:
        pytest.skip("dvc is not installed")
    dvc_yaml = repo / "dvc.yaml"
    text = dvc_yaml.read_text()
    if f"- {EXPERIMENT}\n" not in text:
        text = re.sub(r"(foreach:\n)", rf"\1      - {EXPERIMENT}\n", text, count=1)
        dvc_yaml.write_text(text)
    if not (repo / ".dvc").exists():
        sh(repo, "dvc", "init", "--no-scm", "-q")
        sh(repo, "dvc", "config", "core.analytics", "false")


def test_dvc_push_pull(repo, tmp_path):
    _dvc_init(repo)
    remote = tmp_path / "remote"
    sh(repo, "dvc", "remote", "add", "-f", "-d", "local", str(remote))
    sh(repo, "dvc", "repro", f"experiment@{EXPERIMENT}")       # snakemake finds nothing to do; DVC records
    sh(repo, "dvc", "push")
    assert "up to date" in sh(repo, "dvc", "status", f"experiment@{EXPERIMENT}")
    shown = _json_tail(sh(repo, "dvc", "metrics", "show", "--json", f"metrics/{EXPERIMENT}.json"))
    assert set(shown[""]["data"][f"metrics/{EXPERIMENT}.json"]["data"]["methods"]) == set(METHODS)

    fresh = tmp_path / "fresh"
    _copy_tracked(repo, fresh)
    sh(fresh, "dvc", "pull", f"experiment@{EXPERIMENT}")   # stages never run have nothing to pull
    for rel in (TARGET, f"metrics/{EXPERIMENT}.json", f"results/{EXPERIMENT}/d2r/seed0/model.pt"):
        assert (fresh / rel).read_bytes() == (repo / rel).read_bytes(), rel
    assert not (fresh / "results" / EXPERIMENT / "d2r" / "seed0" / "checkpoints").exists()
    # No .snakemake records and file times in DVC's order: the build records say all is current ...
    assert planned(fresh) == {}
    for rel in (TARGET, f"metrics/{EXPERIMENT}.json"):
        assert (fresh / rel).read_bytes() == (repo / rel).read_bytes(), rel
    # ... and sees a later parameter change like in the original tree.
    edit_params(fresh, lambda raw: raw["experiments"][EXPERIMENT].update(final_eval_episodes=3))
    plan = planned(fresh)
    assert "train" not in plan and plan.get("evaluate") == 2


def _curve_rows(path: Path) -> set[tuple[str, str, int, float]]:
    lines = path.read_text().splitlines()[1:]
    return {(m, t, int(x), float(y)) for m, t, x, y, _ in (line.split(",") for line in lines)}


def _vega_svg(spec: dict) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(json.dumps(spec))


def test_dvc_metrics_and_plots_show(repo):
    """`dvc metrics show` lists the tiny experiment's metrics and says nothing of the experiments
    never run; `dvc plots show` gives the learning curves (every method, task and evaluation of
    reports/curves/tiny.csv), which Vega-Lite draws: a panel per task, a line per method."""
    _dvc_init(repo)
    proc = subprocess.run(["dvc", "metrics", "show"], cwd=repo, env=pipeline_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "failed to load" not in proc.stdout + proc.stderr and "WARNING" not in proc.stdout + proc.stderr
    assert f"metrics/{EXPERIMENT}.json" in proc.stdout and "metrics/mt10.json" not in proc.stdout

    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, env=pipeline_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and "failed to load" not in proc.stderr, proc.stderr
    shown = _json_tail(proc.stdout)
    assert not shown.get("errors"), shown.get("errors")
    name = f"reports/curves/{EXPERIMENT}.csv"
    (plot,) = shown["data"][name]
    values = plot["content"]["data"]["values"]
    got = {(v["method"], v["task"], int(v["env_steps"]), float(v["success"])) for v in values}
    want = _curve_rows(repo / name)
    assert got == want and {m for m, *_ in want} == set(METHODS)
    assert {t for _, t, *_ in want} == {"(mean over tasks)", "reach", "drawer-close"}
    svg = _vega_svg(plot["content"])
    assert svg.count('aria-roledescription="line mark"') == 3 * len(METHODS), "a line per method in each panel"
    for label in ("reach", "drawer-close", "(mean over tasks)", "success rate"):
        assert label in svg


def test_dvc_plots_diff(repo, tmp_path):
    """`dvc plots diff` against a commit: both revisions' curves in one spec, told apart by `rev`."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    g = tmp_path / "g"
    for rel in ("dvc.yaml", ".dvcignore", "workflow/plots/learning_curves.json", f"reports/curves/{EXPERIMENT}.csv"):
        (g / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / rel, g / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    sh(g, "git", "init", "-q")
    sh(g, "dvc", "init", "-q")
    sh(g, "dvc", "config", "core.analytics", "false")
    sh(g, "git", "add", "-A")
    sh(g, *git, "commit", "-q", "-m", "curves")
    csv = g / "reports" / "curves" / f"{EXPERIMENT}.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [",".join(r.split(",")[:3] + ["0.5"] + r.split(",")[4:]) for r in lines[1:]])
                   + "\n")
    shown = _json_tail(sh(g, "dvc", "plots", "diff", "HEAD", "--json"))
    (plot,) = shown["data"][f"reports/curves/{EXPERIMENT}.csv"]
    assert sorted(plot["revisions"]) == ["HEAD", "workspace"]
    values = plot["content"]["data"]["values"]
    assert {v["rev"] for v in values} == {"HEAD", "workspace"}
    assert {float(v["success"]) for v in values if v["rev"] == "workspace"} == {0.5}
    assert len(values) == 2 * (len(lines) - 1)
    assert _vega_svg(plot["content"]).count('aria-roledescription="line mark"') == 2 * 3 * len(METHODS)


def test_same_seed_twice_gives_byte_identical_metrics(repo, tmp_path):
    """A second run of the whole experiment from scratch, elsewhere: the same metrics bytes."""
    again = tmp_path / "again"
    shutil.copytree(REPO, again, ignore=ignore_outputs, symlinks=True)
    shutil.copy(repo / "params.yaml", again / "params.yaml")  # as edited by the fixture and earlier tests
    snakemake(repo, "--cores", "2", TARGET)  # brings the first copy up to date with those params
    snakemake(again, "--cores", "2", TARGET)
    name = f"metrics/{EXPERIMENT}.json"
    assert (again / name).read_bytes() == (repo / name).read_bytes()
