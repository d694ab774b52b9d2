"""A trained policy loaded from its run directory (d2r.load_policy), and the evaluate job's two
protocols: the paper's and Meta-World's own (metaworld.evaluation)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import d2r
from d2r.runtime.io import ResultFileError
from d2r.runtime.seeding import EVAL_STREAM
from d2r.sac.build import make_run_envs
from d2r.sac.evaluation import evaluate_agent, metaworld_evaluation

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["reach", "drawer-close"]
SMALL_D2R = dict(encoder=[24, 24], num_modules=3, width=8, top_k=2, router_hidden=[12])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A D2R run with network sizes other than params.yaml's, evaluated once, at its last epoch."""
    tmp = tmp_path_factory.mktemp("policy")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["device"] = "cpu"
    raw["env"]["max_episode_steps"] = 50
    raw["nets"]["d2r"] = dict(SMALL_D2R)
    raw["presets"]["tiny"] = dict(epochs=2, warmup_epochs=1, min_replay=0, updates_per_epoch=2, batch_per_task=8,
                                  replay_size=1000, eval_every=2, eval_episodes=1, checkpoint_every=2)
    raw["experiments"] = {"tiny": dict(benchmark="MT10", tasks=TASKS, goal_mode="fixed", methods=["d2r"], seeds=[0],
                                       preset="tiny", final_eval_episodes=1, metaworld_eval_episodes=1)}
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    run = tmp / "run"
    subprocess.run([sys.executable, "-m", "d2r", "train", "--params", str(params), "--experiment", "tiny",
                    "--method", "d2r", "--seed", "0", "--out", str(run), "--no-progress", "--threads", "1"],
                   check=True, capture_output=True, timeout=600, cwd=ROOT)
    return params, run


def test_loaded_policy_acts_as_the_trained_one(trained):
    """Rebuilt from run.json (not params.yaml, whose D2R is 16 modules of 128), the loaded policy
    replays the training's own last evaluation, which ran on the same env stream: the same returns."""
    _, run = trained
    policy = d2r.load_policy(run)
    assert policy.run.method.net_args["num_modules"] == 3 and policy.tasks == tuple(TASKS)
    envs = make_run_envs(policy.run, EVAL_STREAM)
    try:
        result = evaluate_agent(policy, envs, TASKS, 1)
    finally:
        envs.close()
    last = json.loads((run / "eval_log.jsonl").read_text().splitlines()[-1])
    assert result["return"] == last["return"] and result["success"] == last["success"]


def test_act_takes_names_indices_and_batches(trained):
    policy = d2r.load_policy(trained[1])
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, size=(2, 39))
    batch = policy.act(obs, [0, 1])
    assert batch.shape == (2, 4) and np.all(np.abs(batch) <= 1.0)
    assert not np.allclose(batch[0], policy.act(obs[0], 1)), "the task changes the action"
    np.testing.assert_array_equal(policy.act(obs[1], "drawer-close"), batch[1])
    np.testing.assert_array_equal(policy.act(obs[1], "drawer-close-v3"), batch[1])
    with_one_hot = np.concatenate([obs, np.eye(2)], axis=1)        # the training envs' observations
    np.testing.assert_array_equal(policy.act(with_one_hot, [0, 1]), batch)
    with pytest.raises(ValueError, match="not one of this run's tasks: reach, drawer-close"):
        policy.act(obs[0], "push")
    with pytest.raises(ValueError, match="at least 39 values"):
        policy.act(obs[0, :10], 0)


def test_load_policy_refuses_a_run_it_cannot_rebuild(trained, tmp_path):
    _, run = trained
    with pytest.raises(ResultFileError, match=r"run.json: not found \(train the run first\)"):
        d2r.load_policy(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["config"]["method"]["net_args"]["width"] = 16        # not the width model.pt was trained with
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps(info))
    (other / "model.pt").write_bytes((run / "model.pt").read_bytes())
    with pytest.raises(ResultFileError, match=r"model.pt: does not fit the network of .*run.json"):
        d2r.load_policy(other)


@pytest.mark.slow
def test_evaluate_job_writes_both_protocols(trained, tmp_path):
    """eval.json: the paper's protocol at the top, Meta-World's under "metaworld", labelled. The
    run is rebuilt from its run.json: with today's params.yaml at other network sizes (the paper's)
    the job gives the same file, but for the wall time (and so it repeats itself)."""
    params, run = trained
    raw = yaml.safe_load(params.read_text())
    raw["nets"]["d2r"] = yaml.safe_load((ROOT / "params.yaml").read_text())["nets"]["d2r"]
    assert raw["nets"]["d2r"]["num_modules"] == 16
    today = tmp_path / "today.yaml"
    today.write_text(yaml.safe_dump(raw))
    outs = []
    for name, params_file in (("a.json", params), ("b.json", today)):
        subprocess.run([sys.executable, "-m", "d2r", "evaluate", "--params", str(params_file), "--experiment", "tiny",
                        "--method", "d2r", "--seed", "0", "--run-dir", str(run), "--out", str(tmp_path / name),
                        "--threads", "1"], check=True, capture_output=True, timeout=600, cwd=ROOT)
        ev = json.loads((tmp_path / name).read_text())
        del ev["wall_time"]
        outs.append(ev)
    ev = outs[0]
    assert outs[1] == ev
    assert ev["protocol"] == "paper" and ev["episodes"] == 1
    mw = ev["metaworld"]
    assert mw["protocol"] == "metaworld.evaluation" and mw["episodes"] == 1 and mw["max_episode_steps"] == 500
    assert set(mw["success"]) == set(mw["return"]) == set(TASKS)
    # an untrained policy on 500-step episodes collects more reward than on the paper's 50-step ones
    assert mw["return"]["reach"] > ev["return"]["reach"] > 0


class Scripted(nn.Module):
    """An actor of Meta-World's scripted expert policies (or zero actions), one per task."""

    device = torch.device("cpu")
    routed = False

    def __init__(self, tasks, expert=True):
        super().__init__()
        from metaworld.policies import ENV_POLICY_MAP

        self.policies = [ENV_POLICY_MAP[f"{t}-v3"]() for t in tasks] if expert else None

    def act_greedy(self, state, task):
        if self.policies is None:
            return torch.zeros(len(task), 4), None
        obs = state.double().numpy()
        return torch.as_tensor(np.stack([self.policies[int(t)].get_action(obs[i]) for i, t in enumerate(task)])), None


@pytest.mark.filterwarnings("ignore")
def test_metaworld_protocol_runs_the_library_on_our_tasks():
    """Meta-World's experts solve their own tasks under metaworld.evaluation (goal variations,
    stop at success), zero actions do not: the protocol's tasks reach our actors in our order."""
    tasks = ["drawer-close", "reach"]              # not Meta-World's order
    solved = metaworld_evaluation(Scripted(tasks), tasks, seed=0, episodes=3)
    assert solved["success"] == {"drawer-close": 1.0, "reach": 1.0} and solved["mean_success"] == 1.0
    idle = metaworld_evaluation(Scripted(tasks, expert=False), tasks, seed=0, episodes=1)
    assert idle["success"] == {"drawer-close": 0.0, "reach": 0.0}


@pytest.mark.filterwarnings("ignore")
def test_readme_example_runs(trained):
    """The README's example (section "Using a trained policy") on the trained run."""
    text = (ROOT / "README.md").read_text().split("## Using a trained policy", 1)[1]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))   # its first code block
    end = next(i for i in range(start, len(lines)) if lines[i].strip() and not lines[i].startswith("    "))
    code = "\n".join(line[4:] for line in lines[start:end])
    assert "d2r.load_policy(" in code and "env.step(policy.act(obs" in code
    code = code.replace("results/smoke/d2r/seed0", str(trained[1]))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["policy"].tasks == tuple(TASKS) and scope["obs"].shape == (39,)
