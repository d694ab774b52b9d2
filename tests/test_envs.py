"""Tests of d2r.envs: Meta-World MT10/MT50 vector envs, goal modes, seeding, episode ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from d2r.envs import (
    ACTION_DIM,
    BENCHMARKS,
    MT10_TASKS,
    MT50_TASKS,
    STATE_DIM,
    get_rng_state,
    make_task_envs,
    resolve_tasks,
    set_rng_state,
    step_outcome,
)

# Meta-World's scripted policies warn that their gains may be too high; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Constant\\(s\\) may be too high")

MT10_EXPECTED = (
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
)


def _reset_obs(envs, n):
    return [envs.reset()[0].copy() for _ in range(n)]


def _rollout(envs, actions):
    """Observations of a reset and the given steps (true next obs) stacked."""
    obs, _ = envs.reset()
    out = [obs.copy()]
    for a in actions:
        obs, _, term, trunc, infos = envs.step(a)
        out.append(step_outcome(obs, infos, term, trunc)[0])
    return np.stack(out)


# ---------------------------------------------------------------- task names


def test_task_names():
    assert MT10_TASKS == MT10_EXPECTED
    assert len(MT50_TASKS) == 50 and len(set(MT50_TASKS)) == 50
    assert set(MT10_TASKS) <= set(MT50_TASKS)
    for name in ("reach", "peg-insert-side", "window-close", "assembly", "shelf-place"):
        assert name in MT50_TASKS
    assert not any(t.endswith("-v3") for t in MT50_TASKS)
    assert BENCHMARKS == {"MT10": MT10_TASKS, "MT50": MT50_TASKS}
    assert (STATE_DIM, ACTION_DIM) == (39, 4)


def test_task_lists_without_the_simulator_equal_meta_worlds():
    """d2r.tasks writes the task lists out (the config reads them without importing mujoco):
    they must stay Meta-World's, in its order, and so must the observation and action sizes."""
    from metaworld.env_dict import MT10_V3, MT50_V3

    from d2r import tasks

    assert tasks.MT10_TASKS == tuple(n.removesuffix("-v3") for n in MT10_V3)
    assert tasks.MT50_TASKS == tuple(n.removesuffix("-v3") for n in MT50_V3)
    env = MT50_V3["reach-v3"]()
    try:
        assert env.action_space.shape == (tasks.ACTION_DIM,)
        assert env.observation_space.shape == (tasks.STATE_DIM,)
    finally:
        env.close()


def test_resolve_tasks():
    assert resolve_tasks("MT10") == list(MT10_TASKS)
    assert resolve_tasks("MT50", "all") == list(MT50_TASKS)
    assert resolve_tasks("MT10", "push,reach-v3") == ["push", "reach"]  # user order
    assert resolve_tasks("MT10", ["window-close-v3", "reach"]) == ["window-close", "reach"]
    assert resolve_tasks("MT50", ["assembly"]) == ["assembly"]


@pytest.mark.parametrize(
    "benchmark, tasks, bad",
    [
        ("MT10", ["reach", "no-such-task"], "no-such-task"),
        ("MT10", "push,assembly", "assembly"),  # an MT50 task is not in MT10
        ("MT50", "reach,pick-plase", "pick-plase"),
    ],
)
def test_resolve_tasks_unknown_name(benchmark, tasks, bad):
    with pytest.raises(ValueError) as err:
        resolve_tasks(benchmark, tasks)
    assert bad in str(err.value)
    assert "reach" in str(err.value)  # lists the valid names


def test_resolve_tasks_bad_benchmark_and_duplicates():
    with pytest.raises(ValueError, match="MT7"):
        resolve_tasks("MT7")
    with pytest.raises(ValueError, match="reach"):
        resolve_tasks("MT10", ["reach", "reach-v3"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="goal_mode"):
        make_task_envs(["reach"], 0, goal_mode="fixd")
    with pytest.raises(ValueError, match="vector_strategy"):
        make_task_envs(["reach"], 0, vector_strategy="threads")
    with pytest.raises(ValueError, match="nope"):
        make_task_envs(["reach", "nope"], 0)


# ------------------------------------------------------ shapes and one-hot ids


def test_mt10_observation_and_one_hot():
    envs = make_task_envs(list(MT10_TASKS), seed=0)
    try:
        assert envs.num_envs == 10
        assert envs.single_observation_space.shape == (49,)
        assert envs.single_action_space.shape == (ACTION_DIM,)
        obs, _ = envs.reset()
        assert obs.shape == (10, 49)
        np.testing.assert_array_equal(obs[:, STATE_DIM:], np.eye(10))
        # env i runs task i
        names = [type(e).__name__ for e in envs.get_attr("unwrapped")]
        assert names[0] == "SawyerReachEnvV3" and names[9] == "SawyerWindowCloseEnvV3"
        # goal observable: the last 3 state floats are the goal, not zeros
        assert np.all(np.abs(obs[:, 36:39]).sum(axis=1) > 0)
        obs, *_ = envs.step(envs.action_space.sample())
        assert obs.shape == (10, 49)
        np.testing.assert_array_equal(obs[:, STATE_DIM:], np.eye(10))
    finally:
        envs.close()


def test_subset_observation_and_one_hot():
    envs = make_task_envs(["window-close", "reach"], seed=0)
    try:
        obs, _ = envs.reset()
        assert obs.shape == (2, 41)
        assert envs.observation_space.shape == (2, 41)
        np.testing.assert_array_equal(obs[:, STATE_DIM:], np.eye(2))
        names = [type(e).__name__ for e in envs.get_attr("unwrapped")]
        assert names == ["SawyerWindowCloseEnvV3", "SawyerReachEnvV3"]
        for e in envs.get_attr("unwrapped"):
            assert e._partially_observable is False
    finally:
        envs.close()


@pytest.mark.slow
def test_mt50_builds_with_shape():
    # One MT50 build (about 13 s on 2 cores): every task constructs and resets.
    envs = make_task_envs(resolve_tasks("MT50"), seed=1)
    try:
        obs, _ = envs.reset()
        assert obs.shape == (50, 89)
        np.testing.assert_array_equal(obs[:, STATE_DIM:], np.eye(50))
        assert np.all(np.isfinite(obs))
    finally:
        envs.close()


# ------------------------------------------------------------------- goal modes

TASKS2 = ["reach", "drawer-close"]


def test_fixed_goals_are_kept():
    envs = make_task_envs(TASKS2, seed=5, goal_mode="fixed")
    other_stream = make_task_envs(TASKS2, seed=5, goal_mode="fixed", stream=1)
    other_seed = make_task_envs(TASKS2, seed=6, goal_mode="fixed")
    try:
        first = envs.reset()[0].copy()
        for _ in range(3):
            for _ in range(5):  # move the arm, then reset again
                envs.step(envs.action_space.sample())
            np.testing.assert_array_equal(envs.reset()[0], first)
        # same goals in the evaluation stream (same seed)
        np.testing.assert_array_equal(other_stream.reset()[0], first)
        # a different seed draws different goals for every task
        goals6 = other_seed.reset()[0][:, 4:STATE_DIM]
        assert np.all(np.abs(goals6 - first[:, 4:STATE_DIM]).max(axis=1) > 1e-5)
    finally:
        for e in (envs, other_stream, other_seed):
            e.close()


def test_random_goals_change_every_reset():
    envs = make_task_envs(TASKS2, seed=5, goal_mode="random")
    other_stream = make_task_envs(TASKS2, seed=5, goal_mode="random", stream=1)
    try:
        obs = _reset_obs(envs, 4)
        for a in range(4):
            for b in range(a + 1, 4):
                # every env's object/goal part differs between any two resets
                diff = np.abs(obs[a][:, 4:STATE_DIM] - obs[b][:, 4:STATE_DIM]).max(axis=1)
                assert np.all(diff > 1e-5)
        # the evaluation stream is another sequence
        obs1 = other_stream.reset()[0]
        assert np.all(np.abs(obs1[:, 4:STATE_DIM] - obs[0][:, 4:STATE_DIM]).max(axis=1) > 1e-5)
    finally:
        envs.close()
        other_stream.close()


_CHILD = """
import json, sys
import numpy as np
np.random.seed(12345)  # a different global state must not matter
from d2r.envs import make_task_envs, step_outcome
seed, mode = int(sys.argv[1]), sys.argv[2]
envs = make_task_envs({tasks!r}, seed, goal_mode=mode, max_episode_steps=5)
rows = []
for _ in range(2):
    obs, _ = envs.reset()
    rows.append(obs.tolist())
    for k in range(7):  # crosses an episode end (autoreset)
        obs, r, te, tr, inf = envs.step(np.full((envs.num_envs, 4), 0.3 * (-1) ** k))
        rows.append(step_outcome(obs, inf, te, tr)[0].tolist())
        rows.append(obs.tolist())
print(json.dumps(rows))
"""


def _child_stream(seed, mode):
    code = _CHILD.format(tasks=TASKS2)
    env = dict(os.environ, PYTHONHASHSEED="7")
    out = subprocess.run(
        [sys.executable, "-c", code, str(seed), mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    return np.array(json.loads(out.stdout.strip().splitlines()[-1]))


def _local_stream(seed, mode):
    envs = make_task_envs(TASKS2, seed, goal_mode=mode, max_episode_steps=5)
    rows = []
    try:
        for _ in range(2):
            obs, _ = envs.reset()
            rows.append(obs.tolist())
            for k in range(7):
                obs, r, te, tr, inf = envs.step(np.full((envs.num_envs, 4), 0.3 * (-1) ** k))
                rows.append(step_outcome(obs, inf, te, tr)[0].tolist())
                rows.append(obs.tolist())
    finally:
        envs.close()
    return np.array(rows)


@pytest.mark.parametrize("mode", ["fixed", "random"])
def test_same_seed_same_stream_across_processes(mode):
    np.random.seed(999)
    child = _child_stream(3, mode)
    local = _local_stream(3, mode)
    np.testing.assert_array_equal(child, local)
    other = _local_stream(4, mode)
    # a different seed gives different goals (first reset, object/goal part)
    assert np.all(np.abs(other[0][:, 4:STATE_DIM] - local[0][:, 4:STATE_DIM]).max(axis=1) > 1e-5)


def test_global_numpy_random_untouched():
    np.random.seed(2024)
    before = np.random.get_state()
    envs = make_task_envs(TASKS2, seed=0, goal_mode="random")
    envs.reset()
    envs.step(envs.action_space.sample())
    envs.reset()
    envs.close()
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_action_space_seeding_is_deterministic():
    a = make_task_envs(TASKS2, seed=11)
    b = make_task_envs(TASKS2, seed=11)
    c = make_task_envs(TASKS2, seed=11, stream=1)
    try:
        sa = [e.action_space.sample() for e in a.get_attr("unwrapped")]
        sb = [e.action_space.sample() for e in b.get_attr("unwrapped")]
        sc = [e.action_space.sample() for e in c.get_attr("unwrapped")]
        for x, y, z in zip(sa, sb, sc):
            np.testing.assert_array_equal(x, y)
            assert not np.allclose(x, z)
        np.testing.assert_array_equal(a.action_space.sample(), b.action_space.sample())
    finally:
        for e in (a, b, c):
            e.close()


# -------------------------------------------------------------- episode ends


def test_truncation_at_max_steps_and_true_final_obs():
    envs = make_task_envs(TASKS2, seed=0, max_episode_steps=20)
    try:
        obs, _ = envs.reset()
        reset_obs = obs.copy()
        up = np.tile([0.0, 0.0, 1.0, 0.0], (2, 1))  # raise the hand every step
        for t in range(1, 21):
            prev = obs
            obs, _, term, trunc, infos = envs.step(up)
            assert not term.any()
            assert trunc.all() == (t == 20) and trunc.any() == (t == 20), t
            nxt, _ = step_outcome(obs, infos, term, trunc)
            # Meta-World's obs[18:36] is the previous frame's obs[:18]: the true next
            # observation continues from the observation before the step.
            np.testing.assert_allclose(nxt[:, 18:36], prev[:, :18], atol=1e-6)
        # at step 20 the returned obs is already the reset obs...
        np.testing.assert_array_equal(obs, reset_obs)
        # ...while step_outcome gives the true final obs: hand well above its reset height
        assert np.all(nxt[:, 2] > reset_obs[:, 2] + 0.05)
        np.testing.assert_array_equal(nxt[:, STATE_DIM:], np.eye(2))
        # the episode restarts: 20 more steps, truncated again exactly at the end
        for t in range(1, 21):
            obs, _, term, trunc, infos = envs.step(up)
            assert trunc.all() == (t == 20) and trunc.any() == (t == 20), t
    finally:
        envs.close()


def test_step_outcome_without_and_with_final_keys():
    obs = np.arange(6, dtype=np.float32).reshape(3, 2)
    no_end = np.zeros(3, bool)
    infos = {"success": np.array([0.0, 1.0, 0.0]), "_success": np.ones(3, bool)}
    nxt, succ = step_outcome(obs, infos, no_end, no_end)
    np.testing.assert_array_equal(nxt, obs)
    np.testing.assert_array_equal(succ, [False, True, False])
    nxt, succ = step_outcome(obs, {}, no_end, no_end)  # keys absent
    np.testing.assert_array_equal(nxt, obs)
    assert succ.dtype == bool and not succ.any()

    final_obs = np.array([None, np.array([9.0, 9.0]), None], dtype=object)
    infos = {
        "success": np.array([1.0, 0.0, 0.0]),  # env 1's entry comes from its reset
        "_success": np.array([True, False, True]),
        "final_obs": final_obs,
        "_final_obs": np.array([False, True, False]),
        "final_info": {
            "success": np.array([0.0, 1.0, 0.0]),
            "_success": np.array([False, True, False]),
        },
        "_final_info": np.array([False, True, False]),
    }
    ended = np.array([False, True, False])
    nxt, succ = step_outcome(obs, infos, no_end, ended)
    np.testing.assert_array_equal(nxt, [[0, 1], [9, 9], [4, 5]])
    np.testing.assert_array_equal(succ, [True, True, False])
    assert obs[1, 0] == 2  # input not modified


def test_success_at_the_last_step_comes_from_final_info():
    from metaworld.policies import ENV_POLICY_MAP

    envs = make_task_envs(["reach"], seed=0, max_episode_steps=120)
    policy = ENV_POLICY_MAP["reach-v3"]()
    try:
        obs, _ = envs.reset()
        for t in range(1, 121):
            action = policy.get_action(obs[0, :STATE_DIM])[None]
            obs, _, term, trunc, infos = envs.step(action)
        assert trunc[0]
        _, success = step_outcome(obs, infos, term, trunc)
        assert success[0]  # the expert holds the hand at the goal at the last step
        assert infos["final_info"]["success"][0] > 0.5
    finally:
        envs.close()


# ------------------------------------------------- expert vs zero-action rollouts

EXPERT_TASKS = ["reach", "drawer-close", "button-press-topdown"]


def _any_success(envs, act, steps=200):
    obs, _ = envs.reset()
    hit = np.zeros(envs.num_envs, bool)
    for _ in range(steps):
        obs, _, term, trunc, infos = envs.step(act(obs))
        hit |= step_outcome(obs, infos, term, trunc)[1]
    return hit


@pytest.mark.parametrize("mode, seed", [("fixed", 0), ("random", 1)])
def test_expert_succeeds_zero_action_does_not(mode, seed):
    from metaworld.policies import ENV_POLICY_MAP

    policies = [ENV_POLICY_MAP[t + "-v3"]() for t in EXPERT_TASKS]
    envs = make_task_envs(EXPERT_TASKS, seed=seed, goal_mode=mode)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expert = _any_success(
                envs,
                lambda o: np.stack(
                    [p.get_action(o[i, :STATE_DIM]) for i, p in enumerate(policies)]
                ),
            )
        assert expert.all(), expert
        zero = _any_success(envs, lambda o: np.zeros((len(EXPERT_TASKS), ACTION_DIM)))
        # drawer-close and button-press-topdown need the arm to move
        assert not zero[1] and not zero[2], zero
    finally:
        envs.close()


# --------------------------------------------------------------- rng state


def test_rng_state_roundtrip_random_mode():
    envs = make_task_envs(TASKS2, seed=2, goal_mode="random")
    try:
        envs.reset()
        state = json.loads(json.dumps(get_rng_state(envs)))  # JSON-serialisable
        assert len(state) == 2
        first = _reset_obs(envs, 2)
        assert not np.allclose(first[0], first[1])
        set_rng_state(envs, state)
        again = _reset_obs(envs, 2)
        for x, y in zip(first, again):
            np.testing.assert_array_equal(x, y)
        # and the states moved on (otherwise the test above proves nothing)
        assert get_rng_state(envs) != state
    finally:
        envs.close()


# ------------------------------------------------------------------- async


def test_async_builds_steps_and_matches_sync():
    actions = [np.full((2, 4), 0.5 * (-1) ** k) for k in range(6)]
    sync = make_task_envs(TASKS2, seed=8, goal_mode="random", max_episode_steps=4)
    asyn = make_task_envs(
        TASKS2, seed=8, goal_mode="random", max_episode_steps=4, vector_strategy="async"
    )
    try:
        assert asyn.observation_space.shape == (2, 41)
        np.testing.assert_array_equal(_rollout(asyn, actions), _rollout(sync, actions))
        state = get_rng_state(asyn)
        assert state == get_rng_state(sync)  # a checkpoint of either resumes the other
        first = _reset_obs(asyn, 2)
        set_rng_state(asyn, state)
        again = _reset_obs(asyn, 2)
        for x, y in zip(first, again):
            np.testing.assert_array_equal(x, y)
    finally:
        asyn.close()
        sync.close()
