"""analyse and report jobs on a synthetic results tree (2 methods x 2 seeds x 3 tasks, d2r routed)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import (
    EPOCHS,
    EVAL_EVERY,
    EVAL_WALL,
    EXPECTED,
    MW_EPISODES,
    N_MODULES,
    STEPS,
    SYNTH_EXPERIMENT,
    SYNTH_METHODS,
    SYNTH_SEEDS,
    SYNTH_TASKS,
    TRAIN_WALL,
    VIDEO_SIZE,
    run_d2r,
)

from d2r.runtime.io import read_json


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
                     "fig-depth-difficulty", "fig-aggregates", "fig-improvement", "fig-profiles",
                     "fig-sample-efficiency"):
        assert expected in div_ids
    # one D2R variant only: no ablation section; mtsac is not routed: no routing figures for it.
    assert "fig-ablation" not in div_ids and "fig-depth-mtsac" not in div_ids
    for section in ("Summary", "Learning curves", "Final success", "Routing depth (D2R)", "Rollout videos",
                    "Network sizes", "Parameters and versions"):
        assert f">{section}</h2>" in text
    assert "62.5% &plusmn; 12.5" in text          # d2r final success, mean +- std over seeds
    assert "metaworld 3.1.1" in text              # versions
    for task in SYNTH_TASKS:
        assert task in text


def test_report_byte_identical(synthetic_report, tmp_path):
    first = synthetic_report["report"].read_bytes()
    first_metrics = synthetic_report["metrics"].read_bytes()
    out, metrics, curves = tmp_path / "again.html", tmp_path / "again.json", tmp_path / "again.csv"
    run_d2r("report", "--params", str(synthetic_report["params"]), "--experiment", SYNTH_EXPERIMENT,
            "--results", str(synthetic_report["results"]), "--out", str(out), "--metrics", str(metrics),
            "--timing", str(tmp_path / "again.timing.json"), "--curves", str(curves),
            "--videos", *map(str, synthetic_report["videos"]))
    assert out.read_bytes() == first
    assert metrics.read_bytes() == first_metrics      # the bootstrap is seeded: the same intervals
    assert curves.read_bytes() == synthetic_report["curves"].read_bytes()


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
        assert (got["return_mean"], got["return_std"]) == pytest.approx((want["return_mean"], want["return_std"]))
        assert got["per_task_return"] == pytest.approx(want["per_task_return"])
        assert got["metaworld"]["success_mean"] == pytest.approx(want["metaworld_success_mean"], abs=1e-6)
        assert got["metaworld"]["iqm_low"] <= got["metaworld"]["iqm"] <= got["metaworld"]["iqm_high"]
    assert metrics["experiment"] == {"benchmark": "MT50", "goal_mode": "fixed", "num_tasks": 3, "seeds": 2,
                                     "env_steps_per_task": EPOCHS * STEPS, "paper_protocol_episodes": 4,
                                     "metaworld_protocol_episodes": MW_EPISODES}
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
    """The report reads files only: importing its job and the d2r.reporting package (its statistics and
    videos modules, rliable) and d2r.analysis pulls in no torch/envs."""
    code = ("import sys, d2r.jobs.report, d2r.reporting.load, d2r.reporting.stats, d2r.reporting.metrics, "
            "d2r.reporting.figures, d2r.reporting.html, d2r.reporting.videos, d2r.reporting.page, d2r.analysis, rliable.library; "
            "bad = [m for m in ('torch', 'd2r.sac.agent', 'd2r.sac.training', 'd2r.envs', 'metaworld') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
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


# ---- statistics (d2r.reporting.stats via the report) ---------------------------------------------
# Hand values for the synthetic tree (conftest FINAL_SUCCESS), runs x tasks:
#   d2r   [[1, .5, 0], [1, 1, .25]]  sorted 0 .25 .5 1 1 1    IQM = mean(.25, .5, 1, 1) = .6875
#   mtsac [[.5, 0, 0], [1, .5, 0]]   sorted 0 0 0 .5 .5 1     IQM = mean(0, 0, .5, .5)  = .25
#   P(d2r > mtsac) per task (4 run pairs, ties half): reach .75, push .875, pick-place .75 -> .791667
HAND_IQM = {"d2r": 0.6875, "mtsac": 0.25}


def test_metrics_statistics(synthetic_report):
    metrics = read_json(synthetic_report["metrics"])
    for method, iqm in HAND_IQM.items():
        m = metrics["methods"][method]
        assert m["iqm"] == pytest.approx(iqm, abs=1e-6)
        assert m["iqm_low"] <= m["iqm"] <= m["iqm_high"]
        assert m["success_mean_low"] <= m["success_mean"] <= m["success_mean_high"]
    st = metrics["statistics"]
    assert st["bootstrap"]["reps"] >= 1000 and st["bootstrap"]["confidence"] == 0.95
    poi = st["probability_of_improvement"]
    assert list(poi) == ["d2r vs mtsac"]
    assert poi["d2r vs mtsac"]["p"] == pytest.approx((0.75 + 0.875 + 0.75) / 3, abs=1e-6)
    assert poi["d2r vs mtsac"]["low"] <= poi["d2r vs mtsac"]["p"] <= poi["d2r vs mtsac"]["high"]
    prof = st["performance_profile"]
    assert prof["tau"][0] == 0.0 and prof["tau"][-1] == 1.0
    # fraction of d2r's 6 scores above tau = 0.5: the three 1.0 -> 0.5
    assert prof["methods"]["d2r"]["fraction"][prof["tau"].index(0.5)] == 0.5
    se = st["sample_efficiency"]["d2r"]
    assert se["env_steps"] == [e * STEPS for e in range(EVAL_EVERY, EPOCHS + 1, EVAL_EVERY)]
    assert se["iqm"][-1] == pytest.approx(HAND_IQM["d2r"], abs=1e-6)   # the last evaluation = final success
    # 2 seeds per method: the report must say the intervals cannot separate the methods.
    assert any("Too few runs" in w for w in st["warnings"])


def test_summary_states_runs_and_warns(synthetic_report):
    text = synthetic_report["report"].read_text()
    summary = text[text.index('<section id="summary">'):text.index('<section id="curves">')]
    assert "The intervals rest on 2 runs per method" in summary
    assert 'id="stats-warnings"' in summary and "Too few runs to separate methods" in summary
    assert "68.8%" in summary and "P(X &gt; Y)" in summary and "0.79" in summary


@pytest.mark.slow
def test_no_warning_box_when_runs_separate(tmp_path):
    """Many runs and a clear gap: the statistics do not warn (the warning is not always there)."""
    import shutil

    import yaml
    from conftest import write_synthetic_results

    params, results = write_synthetic_results(tmp_path)
    raw = yaml.safe_load(params.read_text())
    seeds = list(range(6))
    raw["experiments"][SYNTH_EXPERIMENT]["seeds"] = seeds
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    for method, value in (("d2r", 1.0), ("mtsac", 0.0)):
        for seed in seeds:
            d = results / method / f"seed{seed}"
            if not d.exists():
                shutil.copytree(results / method / "seed0", d)
            ev = read_json(d / "eval.json")
            ev["success"] = {t: value for t in SYNTH_TASKS}
            ev["mean_success"] = value
            (d / "eval.json").write_text(json.dumps(ev))
            run_d2r("analyse", "--run-dir", str(d), "--out", str(d / "routes.json"))
    out, metrics = tmp_path / "r.html", tmp_path / "m.json"
    run_d2r("report", "--params", str(params), "--experiment", SYNTH_EXPERIMENT, "--results", str(results),
            "--out", str(out), "--metrics", str(metrics))
    st = read_json(metrics)["statistics"]
    assert st["warnings"] == []
    assert st["probability_of_improvement"]["d2r vs mtsac"]["p"] == 1.0
    assert 'id="stats-warnings"' not in out.read_text()
    assert "The intervals rest on 6 runs per method" in out.read_text()


def test_curves_csv(synthetic_report):
    lines = synthetic_report["curves"].read_text().splitlines()
    assert lines[0] == "method,task,env_steps,success,return"
    rows = [line.split(",") for line in lines[1:]]
    evals = list(range(EVAL_EVERY, EPOCHS + 1, EVAL_EVERY))
    assert len(rows) == len(SYNTH_METHODS) * (len(SYNTH_TASKS) + 1) * len(evals)
    got = {(m, t, int(x)): float(y) for m, t, x, y, _ in rows}
    # conftest: periodic return = 100 epoch / EPOCHS on every task
    returns = {(m, t, int(x)): float(r) for m, t, x, _, r in rows}
    assert returns[("mtsac", "push", EVAL_EVERY * STEPS)] == pytest.approx(100 * EVAL_EVERY / EPOCHS, abs=1e-4)
    assert returns[("d2r", "(mean over tasks)", EPOCHS * STEPS)] == pytest.approx(100.0)
    # conftest: periodic success = round(final * epoch / EPOCHS, 4), averaged over the two seeds
    for (method, task), want in (((m, t), EXPECTED[m]["per_task"][t]) for m in SYNTH_METHODS for t in SYNTH_TASKS):
        assert got[(method, task, EPOCHS * STEPS)] == pytest.approx(want, abs=1e-4)
    assert got[("d2r", "(mean over tasks)", EPOCHS * STEPS)] == pytest.approx(EXPECTED["d2r"]["success_mean"],
                                                                               abs=1e-4)


# ---- what the report shows of each method --------------------------------------------------------


def test_summary_returns_protocols_and_best(synthetic_report):
    """Returns and Meta-World's protocol beside success; the best method in bold; the curves' axes
    start at 0 env steps."""
    text = synthetic_report["report"].read_text()
    summary = _section(text, "summary")
    assert '<tr class="best"><td class="l">d2r</td>' in summary and 'id="no-success"' not in summary
    assert "255.0 &plusmn; 5.0" in summary and "205.0 &plusmn; 5.0" in summary      # final return
    assert "31.2% &plusmn; 6.2" in summary            # Meta-World protocol: seeds 25% and 37.5%
    assert "Meta-World's protocol (metaworld.evaluation)" in summary
    assert _figure(text, "fig-learning-curves")["layout"]["xaxis"]["rangemode"] == "tozero"
    (d2r_returns,) = [t for t in _figure(text, "fig-return-curves")["data"] if t["name"] == "d2r"]
    assert d2r_returns["y"][-1] == pytest.approx(100.0)         # conftest: 100 at the last evaluation


@pytest.mark.slow
def test_all_zero_success_bolds_nothing_and_says_why(tmp_path):
    """Every method at 0%: no 'best' method, and a note that this is expected at a small budget."""
    from conftest import write_synthetic_results

    params, results = write_synthetic_results(tmp_path)
    for method in SYNTH_METHODS:
        for seed in SYNTH_SEEDS:
            d = results / method / f"seed{seed}"
            ev = read_json(d / "eval.json")
            ev["success"], ev["mean_success"] = {t: 0.0 for t in SYNTH_TASKS}, 0.0
            (d / "eval.json").write_text(json.dumps(ev))
            run_d2r("analyse", "--run-dir", str(d), "--out", str(d / "routes.json"))
    out = tmp_path / "r.html"
    run_d2r("report", "--params", str(params), "--experiment", SYNTH_EXPERIMENT, "--results", str(results),
            "--out", str(out), "--metrics", str(tmp_path / "m.json"))
    summary = _section(out.read_text(), "summary")
    assert 'class="best"' not in summary and "No method is in bold" in summary
    assert 'id="no-success"' in summary and f"At {EPOCHS * STEPS:,} env steps per task that is expected" in summary


def _section(text: str, anchor: str) -> str:
    start = text.index(f'<section id="{anchor}">')
    return text[start:text.index("</section>", start)]


def test_routing_switches_only_for_d2r(synthetic_report):
    """mtsac's run.json carries resrouting/policy_route/route_balance/temperature (MethodConfig's
    defaults); they do not apply to a network without a router and are not shown as its settings."""
    import html as html_mod

    import yaml

    text = _section(synthetic_report["report"].read_text(), "parameters")
    methods_yaml = html_mod.unescape(text.split("<h3>Methods</h3>", 1)[1].split("<pre>", 1)[1].split("</pre>", 1)[0])
    shown = yaml.safe_load(methods_yaml)
    for key in ("resrouting", "policy_route", "route_balance", "temperature"):
        assert key in shown["d2r"] and key not in shown["mtsac"], key
    assert shown["mtsac"]["task_loss_weights"] is False and shown["mtsac"]["net"] == "mtsac"


def _figure(text: str, div_id: str) -> dict:
    """The plotly figure (data and layout) of div `div_id`, from Plotly.newPlot's arguments."""
    start = text.index(f'<div id="{div_id}"')
    call = text.index('Plotly.newPlot(', start)
    args = text[call + len("Plotly.newPlot("):]
    decoder = json.JSONDecoder()
    rest = args[args.index(",") + 1:].lstrip()
    data, end = decoder.raw_decode(rest)
    layout, _ = decoder.raw_decode(rest[end:].lstrip()[1:].lstrip())
    return {"data": data, "layout": layout}


def test_depth_over_training_one_panel_per_task(synthetic_report):
    fig = _figure(synthetic_report["report"].read_text(), "fig-depth-time-d2r")
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == SYNTH_TASKS
    axes = {(t.get("xaxis", "x"), t["name"]) for t in fig["data"]}
    assert len({a for a, _ in axes}) == len(SYNTH_TASKS)          # a panel (x axis) per task
    assert {n for _, n in axes} == {"route depth", "modules used"}


@pytest.mark.slow
def test_depth_difficulty_labels_do_not_overlap(tmp_path, synthetic_report):
    """Every task fails everywhere: all share difficulty 1. Points are moved apart, and no two
    written labels sit on top of each other (crowded points keep their name as hover text)."""
    import shutil

    results = tmp_path / "results" / SYNTH_EXPERIMENT
    shutil.copytree(synthetic_report["results"], results)
    for method in SYNTH_METHODS:
        for seed in SYNTH_SEEDS:
            p = results / method / f"seed{seed}" / "eval.json"
            ev = read_json(p)
            ev["success"] = {t: 0.0 for t in SYNTH_TASKS}
            ev["mean_success"] = 0.0
            p.write_text(json.dumps(ev))
            if method == "d2r":     # and the same depth on every task: the points crowd each other
                r = results / method / f"seed{seed}" / "routes.json"
                routes = read_json(r)
                for t in SYNTH_TASKS:
                    routes["per_task"][t]["depth_mean"] = 2.0
                r.write_text(json.dumps(routes))
    out = tmp_path / "r.html"
    run_d2r("report", "--params", str(synthetic_report["params"]), "--experiment", SYNTH_EXPERIMENT,
            "--results", str(results), "--out", str(out), "--metrics", str(tmp_path / "m.json"))
    fig = _figure(out.read_text(), "fig-depth-difficulty")
    trace = fig["data"][0]
    assert len(set(trace["x"])) == len(SYNTH_TASKS)                    # the tied tasks moved apart
    assert all(abs(x - 1.0) < 0.05 for x in trace["x"])                 # ... by a small offset only
    assert [c[0] for c in trace["customdata"]] == SYNTH_TASKS           # hover names every task
    written = [(x, y) for x, y, t in zip(trace["x"], trace["y"], trace["text"]) if t]
    assert trace["y"] == [2.0] * len(SYNTH_TASKS)
    for i, (x, y) in enumerate(written):
        for u, v in written[i + 1:]:
            assert abs(x - u) >= 0.07 or abs(y - v) >= 0.08, "two labels on top of each other"


def test_spread_ties_and_isolated():
    from d2r.reporting.figures import isolated, spread_ties

    assert spread_ties([0.5, 1.0, 1.0, 1.0], step=0.05) == pytest.approx([0.5, 0.95, 1.0, 1.05])
    many = spread_ties([1.0] * 50)                       # 50 tied tasks stay within 0.15
    assert len(set(many)) == 50 and max(many) - min(many) == pytest.approx(0.15)
    assert isolated([(0, 0), (0.01, 0.0), (1, 1)], dx=0.05, dy=0.05) == [False, False, True]


# ---- rollout videos ------------------------------------------------------------------------------


def test_videos_embedded(synthetic_report):
    import base64

    text = synthetic_report["report"].read_text()
    videos = re.findall(r'<video id="([^"]+)" class="d2r-video"[^>]* src="data:video/mp4;base64,([^"]+)"', text)
    assert len(videos) == len(SYNTH_METHODS) * len(SYNTH_TASKS)
    for method in SYNTH_METHODS:
        for task in SYNTH_TASKS:
            vid = dict(videos)[f"video-{method}-{task}"]
            want = (synthetic_report["results"] / method / f"seed{SYNTH_SEEDS[0]}" / "videos" / f"{task}.mp4")
            assert base64.b64decode(vid) == want.read_bytes()
    assert f'width="{VIDEO_SIZE}" height="{VIDEO_SIZE}"' in text
    assert "video.d2r-video" in text    # the play-when-visible script


@pytest.mark.slow
@pytest.mark.parametrize("enabled, expected", [(False, "Videos are off"), (True, "No videos: <code>render.enabled")])
def test_report_without_videos_says_so(tmp_path, synthetic_report, enabled, expected):
    import yaml

    raw = yaml.safe_load(synthetic_report["params"].read_text())
    raw["experiments"][SYNTH_EXPERIMENT]["render"] = {"enabled": enabled}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "r.html"
    run_d2r("report", "--params", str(params), "--experiment", SYNTH_EXPERIMENT,
            "--results", str(synthetic_report["results"]), "--out", str(out), "--metrics", str(tmp_path / "m.json"))
    videos = _section(out.read_text(), "videos")
    assert expected in videos and "<video" not in videos


def test_report_missing_video_is_clear(tmp_path, synthetic_report):
    import shutil

    results = tmp_path / "results" / SYNTH_EXPERIMENT
    shutil.copytree(synthetic_report["results"], results)
    dirs = [results / m / f"seed{SYNTH_SEEDS[0]}" / "videos" for m in SYNTH_METHODS]
    (dirs[1] / "push.mp4").unlink()
    proc = run_d2r("report", "--params", str(synthetic_report["params"]), "--experiment", SYNTH_EXPERIMENT,
                   "--results", str(results), "--out", str(tmp_path / "r.html"), "--metrics",
                   str(tmp_path / "m.json"), "--videos", *map(str, dirs), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "push.mp4: missing" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_bad_periodic_success_is_one_line(tmp_path, synthetic_report):
    import shutil

    results = tmp_path / "results" / SYNTH_EXPERIMENT
    shutil.copytree(synthetic_report["results"], results)
    log = results / "mtsac" / "seed1" / "eval_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records[1]["success"]["push"] = 1.5
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = run_d2r("report", "--params", str(synthetic_report["params"]), "--experiment", SYNTH_EXPERIMENT,
                   "--results", str(results), "--out", str(tmp_path / "r.html"), "--metrics",
                   str(tmp_path / "m.json"), check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "mtsac/seed1/eval_log.jsonl at env steps 800: success.push: expected a success rate" in proc.stderr


def test_report_names_the_code_that_trained_the_runs(synthetic_report):
    """environment.json and each run.json record the git commit; the header shows both (the D2R
    runs of the synthetic tree were trained from a tree with uncommitted changes)."""
    html = synthetic_report["report"].read_text()
    assert ("training: commit fedcba987654; commit fedcba987654 (uncommitted changes); "
            "setup: commit 0123456789ab") in html
