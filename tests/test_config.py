"""params.yaml -> typed config: the shipped file is valid, and bad input is named precisely."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from d2r.config import ParamsError, load_params, parse_params, run_from_dict

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def mutated(path: str, value):
    """A copy of params.yaml with the value at dotted `path` replaced (or deleted when value is ...)."""
    raw = copy.deepcopy(RAW)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def test_shipped_params_are_valid_and_typed():
    params = load_params(ROOT / "params.yaml")
    smoke = params.experiment("smoke")
    assert smoke.benchmark == "MT10" and len(smoke.tasks) == 10 and smoke.tasks[0] == "reach"
    assert params.experiment("mt50").tasks[-1] and len(params.experiment("mt50").tasks) == 50
    assert params.experiment("easy3").tasks == ("reach", "drawer-close", "button-press-topdown")
    run = params.run("mt10", "d2r", 0)
    # Paper settings are the defaults.
    assert run.method.net_args == {"init": "release", "encoder": [400, 400], "num_modules": 16, "width": 128,
                                   "top_k": 2, "router_hidden": [256, 256]}
    assert run.sac.update_order == "joint"  # the release's order
    assert (run.sac.gamma, run.sac.tau, run.sac.lr, run.sac.lr_alpha, run.sac.reward_scale) == (
        0.99, 0.005, 3e-4, 1e-4, 0.1)
    budget = run.experiment.budget
    assert (budget.epochs, budget.batch_per_task, budget.replay_size, budget.updates_per_epoch) == (
        7500, 128, 1_000_000, 200)
    assert params.experiment("mt50").budget.replay_size == 10_000_000
    assert params.methods["d2r-fixed-depth"].net_args["fixed_depth"] is True
    with pytest.raises(Exception):
        run.seed = 3  # frozen


def test_training_dict_excludes_final_evaluation():
    params = load_params(ROOT / "params.yaml")
    data = params.run("smoke", "d2r", 0).training_dict()
    assert "final_eval_episodes" not in data["experiment"] and "metaworld_eval_episodes" not in data["experiment"]
    assert data["experiment"]["budget"]["epochs"] == params.experiment("smoke").budget.epochs
    # run.json's config reads back as the run (the evaluation's settings are not in it)
    back = run_from_dict(json.loads(json.dumps(data)))
    assert back.training_dict() == data and back.experiment.final_eval_episodes is None


def test_metaworld_eval_episodes_defaults_to_the_protocols_50():
    assert load_params(ROOT / "params.yaml").experiment("smoke").metaworld_eval_episodes == 1
    raw = mutated("experiments.smoke.metaworld_eval_episodes", ...)
    assert parse_params(raw).experiment("smoke").metaworld_eval_episodes == 50


def test_number_read_as_text_gets_a_hint():
    """YAML 1.1 reads `lr: 3e-4` as the string '3e-4': the line says so and how to write it."""
    with pytest.raises(ParamsError, match=r"train\.lr: '3e-4' is not of type 'number' \(YAML reads 3e-4 as text: "
                                          r"write 3\.0e-4\)"):
        parse_params(mutated("train.lr", "3e-4"))
    with pytest.raises(ParamsError, match=r"train\.gamma: '0\.9' .*\(a number in quotes is text: remove the quotes\)"):
        parse_params(mutated("train.gamma", "0.9"))


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("train.lr", -1.0, "train.lr"),
        ("train.lr", "fast", "train.lr"),
        ("train.learning_rate", 0.1, "unknown key"),
        ("presets.smoke.epochs", -5, "presets.smoke.epochs"),
        ("experiments.smoke.seeds.1", -3, "experiments.smoke.seeds[1]"),
        ("experiments.smoke.methods", ["d2r", "ppo"], "experiments.smoke.methods[1]: unknown method 'ppo'"),
        ("experiments.smoke.tasks", ["reach", "fly"], "experiments.smoke.tasks[1]: unknown task 'fly'"),
        ("experiments.smoke.preset", "huge", "experiments.smoke.preset: unknown preset 'huge'"),
        ("experiments.smoke.benchmark", "MT20", "experiments.smoke.benchmark"),
        ("nets.d2r.top_k", 17, "top_k 17 is larger than num_modules 16"),
        ("methods.d2r.net", "transformer", "methods.d2r.net"),
        ("env", ..., "'env' is a required property"),
        ("device", "tpu", "device"),
    ],
)
def test_bad_params_name_the_key(path, value, expected):
    with pytest.raises(ParamsError) as err:
        parse_params(mutated(path, value))
    assert expected in str(err.value), str(err.value)


def test_bad_method_override_is_named():
    raw = mutated("methods.d2r.net_args", {"widht": 64})
    with pytest.raises(ParamsError, match=r"methods\.d2r\.net_args\.widht: unknown key"):
        parse_params(raw)


def test_cli_reports_bad_params_and_exits_nonzero(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(mutated("presets.smoke.epochs", 0)))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "d2r", "train", "--params", str(bad), "--experiment", "smoke", "--method", "d2r",
         "--seed", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "presets.smoke.epochs" in proc.stderr
    assert not out.exists()  # stopped before any work


def test_help_lists_every_job():
    proc = subprocess.run([sys.executable, "-m", "d2r", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for job in ("train", "evaluate", "analyse", "report", "setup"):
        assert job in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "d2r", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--experiment" in proc.stdout and "--seed" in proc.stdout


def test_experiment_train_overrides_apply_to_that_experiment_only():
    params = load_params(ROOT / "params.yaml")
    assert params.run("easy3", "d2r", 0).sac.lr_alpha == 3e-3
    assert params.run("mt10", "d2r", 0).sac.lr_alpha == 1e-4
    assert params.run("easy3", "d2r", 0).training_dict()["sac"]["lr_alpha"] == 3e-3  # re-trains on change
    with pytest.raises(ParamsError, match=r"experiments\.easy3\.train"):
        parse_params(mutated("experiments.easy3.train", {"lr_alfa": 1e-3}))


def test_the_paper_tables_name_is_not_an_experiment():
    raw = copy.deepcopy(RAW)
    raw["experiments"]["paper"] = copy.deepcopy(raw["experiments"]["smoke"])
    with pytest.raises(ParamsError, match=r"experiments\.paper: the name 'paper' is taken by the paper table"):
        parse_params(raw)
