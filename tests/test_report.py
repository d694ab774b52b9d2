"""analyse and report jobs on a synthetic results tree (2 methods x 2 seeds x 3 tasks, d2r routed)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import (EPOCHS, EVAL_EVERY, EVAL_WALL, EXPECTED, N_MODULES, SYNTH_EXPERIMENT, SYNTH_METHODS,
                      SYNTH_SEEDS, SYNTH_TASKS, TRAIN_WALL, run_d2r)
from d2r.io import read_json


def test_analyse_routed(synthetic_report):
    routes = read_json(synthetic_report["results"] / "d2r" / "seed0" / "routes.json")
    ev = read_json(synthetic_report["results"] / "d2r" / "seed0" / "eval.json")
    assert routes["routed"] is True
    assert routes["tasks"] == SYNTH_TASKS
    assert routes["num_modules"] == N_MODULES
    for t in SYNTH_TASKS:
        got, want = routes["per_task"][t], ev["routes"][t]
        assert got["depth_mean"] == want["depth_mean"]
        assert got["modules_used_mean"] == want["modules_used_mean"]
        assert got["module_use"] == want["module_use"]
        assert got["edge_frequency"] == want["edge_frequency"]
    assert routes["mean"]["depth"] == pytest.approx(sum(ev["routes"][t]["depth_mean"] for t in SYNTH_TASKS) / 3)
    evo = routes["evolution"]
    assert evo["epoch"] == list(range(EVAL_EVERY, EPOCHS + 1, EVAL_EVERY))
    assert set(evo["depth"]) == set(SYNTH_TASKS)
    assert all(len(v) == len(evo["epoch"]) for v in evo["depth"].values())


def test_analyse_not_routed(synthetic_report):
    routes = read_json(synthetic_report["results"] / "mtsac" / "seed1" / "routes.json")
    assert routes["routed"] is False
    assert "per_task" not in routes


def test_analyse_rejects_broken_eval(tmp_path, synthetic_report):
    d = tmp_path / "run"
    d.mkdir()
    ev = read_json(synthetic_report["results"] / "d2r" / "seed0" / "eval.json")
    ev["routes"]["push"]["edge_frequency"] = [[0.0]]
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "eval_log.jsonl").write_text("")
    proc = run_d2r("analyse", "--run-dir", str(d), "--out", str(d / "routes.json"), check=False)
    assert proc.returncode != 0
    assert "edge_frequency" in proc.stderr
    assert not (d / "routes.json").exists()


def test_report_self_contained(synthetic_report):
    text = synthetic_report["report"].read_text()
    assert text.startswith("<!DOCTYPE html>")
    # No external resources: scripts, styles and images are all inline.
    assert not re.search(r"<script[^>]+src=", text, re.I)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", text, re.I)
    assert not re.search(r"<img[^>]+src=[\"']?https?:", text, re.I)
    # plotly.js inlined exactly once.
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()[:300]) == 1
    assert text.count('id="js-errors"') == 1


def test_report_content(synthetic_report):
    text = synthetic_report["report"].read_text()
    div_ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', text)
    assert len(div_ids) == len(set(div_ids)), "figure ids must be unique"
    for expected in ("fig-learning-curves", "fig-task-curves", "fig-final-success", "fig-task-success",
                     "fig-depth-d2r", "fig-edges-d2r", "fig-module-use-d2r", "fig-depth-time-d2r",
                     "fig-depth-difficulty"):
        assert expected in div_ids
    # one D2R variant only: no ablation section; mtsac is not routed: no routing figures for it.
    assert "fig-ablation" not in div_ids and "fig-depth-mtsac" not in div_ids
    for section in ("Summary", "Learning curves", "Final success", "Routing depth (D2R)", "Network sizes",
                    "Parameters and versions"):
        assert f">{section}</h2>" in text
    assert "62.5% &plusmn; 12.5" in text          # d2r final success, mean +- std over seeds
    assert "metaworld 3.1.1" in text              # versions
    for task in SYNTH_TASKS:
        assert task in text


def test_report_byte_identical(synthetic_report, tmp_path):
    first = synthetic_report["report"].read_bytes()
    first_metrics = synthetic_report["metrics"].read_bytes()
    out, metrics = tmp_path / "again.html", tmp_path / "again.json"
    run_d2r("report", "--params", str(synthetic_report["params"]), "--experiment", SYNTH_EXPERIMENT,
            "--results", str(synthetic_report["results"]), "--out", str(out), "--metrics", str(metrics),
            "--timing", str(tmp_path / "again.timing.json"))
    assert out.read_bytes() == first
    assert metrics.read_bytes() == first_metrics


def test_metrics(synthetic_report):
    metrics = read_json(synthetic_report["metrics"])
    assert sorted(metrics["methods"]) == sorted(SYNTH_METHODS)
    for method, want in EXPECTED.items():
        got = metrics["methods"][method]
        assert 0.0 <= got["success_mean"] <= 1.0
        assert got["success_mean"] == pytest.approx(want["success_mean"], abs=1e-6)
        assert got["success_std"] == pytest.approx(want["success_std"], abs=1e-6)
        assert got["seeds"] == len(SYNTH_SEEDS)
        assert got["per_task"] == pytest.approx(want["per_task"], abs=1e-6)
        assert all(0.0 <= v <= 1.0 for v in got["per_task"].values())
    assert "depth_mean" in metrics["methods"]["d2r"] and "depth_mean" not in metrics["methods"]["mtsac"]
    assert all("wall_time" not in entry for entry in metrics["methods"].values()) and "wall_time" not in metrics
    timing = read_json(synthetic_report["timing"])
    runs = len(SYNTH_METHODS) * len(SYNTH_SEEDS)
    assert timing["wall_time"] == pytest.approx(runs * (TRAIN_WALL + EVAL_WALL))
    assert timing["methods"]["d2r"] == pytest.approx(len(SYNTH_SEEDS) * (TRAIN_WALL + EVAL_WALL))


def test_report_missing_file_is_clear(synthetic_report, tmp_path):
    import shutil

    results = tmp_path / "results" / SYNTH_EXPERIMENT
    shutil.copytree(synthetic_report["results"], results)
    (results / "mtsac" / "seed1" / "routes.json").unlink()
    proc = run_d2r("report", "--params", str(synthetic_report["params"]), "--experiment", SYNTH_EXPERIMENT,
                   "--results", str(results), "--out", str(tmp_path / "r.html"), "--metrics",
                   str(tmp_path / "m.json"), check=False)
    assert proc.returncode != 0
    assert "routes.json: missing" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_imports_no_training_code(synthetic_report):
    """The report reads files only: importing d2r.report and d2r.analyse pulls in no torch/envs."""
    code = ("import sys, d2r.report, d2r.analyse; "
            "bad = [m for m in ('torch', 'd2r.agent', 'd2r.train', 'd2r.envs', 'metaworld') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_report_ablation_section(synthetic_report, tmp_path):
    """Several D2R variants in one experiment: the report compares them in their own section."""
    import shutil

    import yaml

    results = tmp_path / "results" / SYNTH_EXPERIMENT
    shutil.copytree(synthetic_report["results"], results)
    for seed in SYNTH_SEEDS:
        src, dst = results / "d2r" / f"seed{seed}", results / "d2r-no-balance" / f"seed{seed}"
        shutil.copytree(src, dst)
        for name in ("eval.json", "routes.json"):
            data = read_json(dst / name)
            data["method"] = "d2r-no-balance"
            (dst / name).write_text(json.dumps(data))
    raw = yaml.safe_load(synthetic_report["params"].read_text())
    raw["experiments"][SYNTH_EXPERIMENT]["methods"] = ["d2r", "d2r-no-balance", "mtsac"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    out, metrics = tmp_path / "r.html", tmp_path / "m.json"
    run_d2r("report", "--params", str(params), "--experiment", SYNTH_EXPERIMENT, "--results", str(results),
            "--out", str(out), "--metrics", str(metrics))
    text = out.read_text()
    assert ">D2R variants</h2>" in text and 'id="fig-ablation"' in text
    assert 'id="fig-depth-d2r-no-balance"' in text
    assert sorted(read_json(metrics)["methods"]) == ["d2r", "d2r-no-balance", "mtsac"]
