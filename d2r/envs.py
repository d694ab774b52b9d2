"""Meta-World MT10 / MT50 environments for D2R (spec section 5).

One environment per task, batched in a gymnasium vector env (env ``i`` runs task ``i``).
Observation = the 39 Meta-World floats (goal observable, as in Meta-World's MT benchmarks)
followed by a one-hot task id over the tasks of the run.

Goal modes
    ``"fixed"``: each task's object/goal vector (``rand_vec``) is drawn once from ``seed``
    and kept for every reset of the run, in every stream.
    ``"random"``: a new ``rand_vec`` at every reset, drawn from the env's own seeded
    ``np_random`` (reproducible from ``(seed, stream)``).

Seeding. All randomness comes from :class:`numpy.random.SeedSequence` objects derived from
``seed`` and a key that names its use; global ``np.random`` state is never read or written:

* fixed goal of a task:   ``SeedSequence(seed, spawn_key=(_KEY_GOAL, task_id))``
* env ``np_random``, and its action/observation spaces:
  ``SeedSequence(seed, spawn_key=(_KEY_ENV, task_id, stream))``
* the batched ``envs.action_space``: ``SeedSequence(seed, spawn_key=(_KEY_VEC_ACTION, stream))``

``task_id`` is Meta-World's own task number (position in ``MT50_V3``, 0..49), so a task gets
the same fixed goal and the same random stream whether it runs in MT10, MT50 or a subset.
Meta-World's ``reset(seed=...)`` ignores its seed argument, so ``envs.reset(seed=...)`` has
no effect on the streams: seeding happens here, at construction.

We do not use ``gym.make_vec`` / ``metaworld._make_tasks``: they reseed and restore the global
``np.random`` state, may change the module global ``_N_GOALS``, and draw 50 goals per task.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from metaworld.env_dict import MT50_V3, MT50_V3_ARGS_KWARGS
from metaworld.types import Task
from metaworld.wrappers import OneHotWrapper

from d2r.tasks import (  # re-exported: envs is where the rest of the code looks for them
    ACTION_DIM,
    BENCHMARKS,
    GOAL_MODES,
    MT10_TASKS,
    MT50_TASKS,
    STATE_DIM,
    full_name,
    resolve_tasks,
    short_name,
)

__all__ = [
    "MT10_TASKS",
    "MT50_TASKS",
    "BENCHMARKS",
    "STATE_DIM",
    "ACTION_DIM",
    "GOAL_MODES",
    "VECTOR_STRATEGIES",
    "resolve_tasks",
    "full_name",
    "short_name",
    "make_task_envs",
    "make_metaworld_eval_envs",
    "step_outcome",
    "get_rng_state",
    "set_rng_state",
]

VECTOR_STRATEGIES = ("sync", "async")  # every task in this process | one worker process per task
_REWARD_VERSIONS = ("v1", "v2")

# Keys that separate the uses of one run seed (first element of each SeedSequence spawn_key).
_KEY_GOAL = 0
_KEY_ENV = 1
_KEY_VEC_ACTION = 2


def _seed_int(seed: int, *key: int) -> int:
    """A 64-bit integer seed derived from ``(seed, *key)`` (for APIs that want an int)."""
    ss = np.random.SeedSequence(seed, spawn_key=key)
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def _task(env_name: str, env_cls: type, rand_vec: np.ndarray) -> Task:
    """A Meta-World Task as its MT benchmarks build it (goal observable)."""
    kwargs = dict(MT50_V3_ARGS_KWARGS[env_name]["kwargs"])
    kwargs.pop("task_id", None)
    kwargs.update(
        rand_vec=np.asarray(rand_vec, dtype=np.float64),
        env_cls=env_cls,
        partially_observable=False,
    )
    return Task(env_name=env_name, data=pickle.dumps(kwargs))


def _make_env(
    task: str,
    index: int,
    num_tasks: int,
    seed: int,
    goal_mode: str,
    max_episode_steps: int,
    reward_version: str,
    stream: int,
) -> gym.Env:
    """Build one wrapped env (module level so that ``functools.partial`` of it pickles)."""
    env_name = full_name(task)
    env_cls = MT50_V3[env_name]
    task_id = int(MT50_V3_ARGS_KWARGS[env_name]["kwargs"]["task_id"])

    env = env_cls(reward_function_version=reward_version)
    # Let the env's own truncation agree with the TimeLimit (Meta-World 3 defaults to 500;
    # its step() raises once past max_path_length).
    env.max_path_length = int(max_episode_steps)

    space = env._random_reset_space
    assert space is not None
    # set_task needs a rand_vec; this placeholder is never used for a reset (see below).
    env.set_task(_task(env_name, env_cls, space.low.copy()))

    if goal_mode == "fixed":
        # Draw the goal with the env's own reset logic (some tasks reject goals too close to
        # the object and redraw), from a generator that depends on (seed, task) only.
        env.np_random = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_KEY_GOAL, task_id)))
        )
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.reset()
        rand_vec = np.array(env._last_rand_vec, dtype=np.float64, copy=True)
        env.set_task(_task(env_name, env_cls, rand_vec))  # freezes rand_vec
    else:
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True

    # MujocoEnv fixed observation_space at construction, while the env was still partially
    # observable (goal bounds [0, 0], wrong once the goal is shown). The true goal bounds
    # differ between tasks and a vector env needs one space for all, so the goal part is
    # left unbounded. (Observation values are unaffected: the env clips its step
    # observations to sawyer_observation_space, which set_task did refresh.)
    low = np.array(env.sawyer_observation_space.low, dtype=np.float64)
    high = np.array(env.sawyer_observation_space.high, dtype=np.float64)
    low[36:STATE_DIM], high[36:STATE_DIM] = -np.inf, np.inf
    env.observation_space = gym.spaces.Box(low, high, dtype=np.float64)

    # np_random (random goals), action_space, observation_space, goal_space.
    env.seed(_seed_int(seed, _KEY_ENV, task_id, stream))

    wrapped: gym.Env = gym.wrappers.TimeLimit(env, max_episode_steps=int(max_episode_steps))
    with warnings.catch_warnings():
        # OneHotWrapper builds a float32 Box from float64 bounds; gymnasium warns about it.
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        wrapped = OneHotWrapper(wrapped, index, num_tasks)
    return wrapped


def make_task_envs(
    tasks: list[str],
    seed: int,
    *,
    goal_mode: str = "fixed",
    max_episode_steps: int = 200,
    reward_version: str = "v2",
    vector_strategy: str = "sync",
    stream: int = 0,
) -> gym.vector.VectorEnv:
    """One env per task (env ``i`` = ``tasks[i]``), autoreset mode SAME_STEP.

    Observations have ``STATE_DIM + len(tasks)`` floats: Meta-World's 39 (goal observable)
    then the one-hot task id. ``stream`` separates independent streams of one run
    (d2r.runtime.seeding names them: training, evaluation, final evaluation, videos); fixed goals do
    not depend on it.
    """
    names = [short_name(str(t)) for t in ([tasks] if isinstance(tasks, str) else tasks)]
    if not names:
        raise ValueError("make_task_envs needs at least one task")
    for name in names:
        if full_name(name) not in MT50_V3:
            raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(MT50_TASKS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated task in {names}")
    if goal_mode not in GOAL_MODES:
        raise ValueError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
    if vector_strategy not in VECTOR_STRATEGIES:
        raise ValueError(
            f"vector_strategy must be one of {VECTOR_STRATEGIES}, got {vector_strategy!r}"
        )
    if reward_version not in _REWARD_VERSIONS:
        raise ValueError(
            f"reward_version must be one of {_REWARD_VERSIONS}, got {reward_version!r}"
        )
    seed, stream, max_episode_steps = int(seed), int(stream), int(max_episode_steps)
    if seed < 0 or stream < 0:
        raise ValueError(f"seed and stream must be >= 0, got seed={seed}, stream={stream}")
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")

    fns = [
        functools.partial(
            _make_env,
            name,
            i,
            len(names),
            seed,
            goal_mode,
            max_episode_steps,
            reward_version,
            stream,
        )
        for i, name in enumerate(names)
    ]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if vector_strategy == "sync":
        envs: gym.vector.VectorEnv = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    else:
        # one worker process per task, forked (not Python 3.14's forkserver default): a worker
        # then inherits the training job's SIGTERM/SIGINT handler, so a stop signal sent to the
        # whole process group (Slurm, Ctrl-C) is only noted there and the job can finish its
        # episode and checkpoint
        envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="fork")
    envs.action_space.seed(_seed_int(seed, _KEY_VEC_ACTION, stream))
    return envs


def make_metaworld_eval_envs(tasks: Sequence[str], seed: int, reward_version: str = "v2") -> gym.vector.VectorEnv:
    """Meta-World's own evaluation envs, for its protocol (metaworld.evaluation.evaluation): env
    ``i`` runs ``tasks[i]`` over the benchmark's 50 goal variations (a new one at every reset),
    500-step episodes (Meta-World's default), observations of 39 floats (no one-hot).

    Built by Meta-World itself: a whole benchmark in its order exactly as ``gym.make_vec(
    "Meta-World/MT10", seed=seed)`` builds it (``metaworld.make_mt_envs``); a subset task by task as
    ``gym.make_vec("Meta-World/custom-mt-envs")`` does (``make_mt_envs`` of each task with seed + i),
    except that seed 0 is passed on too (that entry point leaves seed 0 unseeded, so an evaluation
    of seed 0 would not repeat). The 50 goals of a task depend on the seed and, in a whole
    benchmark, on the tasks before it, as in Meta-World; nothing here reads the run's streams.
    """
    from metaworld import make_mt_envs

    names = [short_name(str(t)) for t in tasks]
    for benchmark, all_tasks in BENCHMARKS.items():
        if tuple(names) == tuple(all_tasks):
            return make_mt_envs(benchmark, seed=int(seed), reward_function_version=reward_version)
    fns = [functools.partial(make_mt_envs, full_name(name), seed=int(seed) + i, num_tasks=len(names), env_id=i,
                             reward_function_version=reward_version) for i, name in enumerate(names)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def step_outcome(
    obs: np.ndarray, infos: dict[str, Any], terminated: np.ndarray, truncated: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(true_next_obs [n, obs_dim], success [n] bool)`` of a SAME_STEP vector env step.

    Where an env finished, the step's ``obs`` row is already the reset observation; the true
    next observation and the step's success are in ``infos["final_obs"]`` and
    ``infos["final_info"]``.
    """
    obs = np.asarray(obs)
    n = obs.shape[0]
    done = np.logical_or(np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool))
    next_obs = np.array(obs, copy=True)
    success = np.zeros(n, dtype=bool)
    if "success" in infos:
        mask = np.asarray(infos.get("_success", np.ones(n, dtype=bool)), dtype=bool)
        success = np.where(mask, np.asarray(infos["success"]) > 0.5, False)
    if done.any():
        final_obs = infos.get("final_obs")
        final_info = infos.get("final_info", {})
        if final_obs is None:
            raise KeyError("an env finished but infos has no 'final_obs' (autoreset mode?)")
        f_success = final_info.get("success")
        f_mask = np.asarray(final_info.get("_success", np.ones(n, dtype=bool)), dtype=bool)
        for i in np.flatnonzero(done):
            next_obs[i] = np.asarray(final_obs[i], dtype=next_obs.dtype)
            success[i] = bool(f_success is not None and f_mask[i] and f_success[i] > 0.5)
    return next_obs, success


def get_rng_state(envs: gym.vector.VectorEnv) -> list[dict]:
    """Per-env ``np_random`` bit-generator states (JSON-serialisable dicts)."""
    gens = envs.get_attr("np_random")
    return [_jsonable(g.bit_generator.state) for g in gens]


def set_rng_state(envs: gym.vector.VectorEnv, states: Sequence[dict]) -> None:
    """Restore states from :func:`get_rng_state` (sync or async vector env)."""
    if len(states) != envs.num_envs:
        raise ValueError(f"got {len(states)} rng states for {envs.num_envs} envs")
    gens = []
    for state in states:
        bit_gen = getattr(np.random, state["bit_generator"])()
        bit_gen.state = state
        gens.append(np.random.Generator(bit_gen))
    envs.set_attr("np_random", gens)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x
