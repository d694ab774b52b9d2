"""The update with `cuda_graphs: on`, run eagerly on a CPU: the code a CUDA graph captures on a GPU
(d2r.sac.cuda_graph). It must read nothing back to the host, give the default update's results to
float rounding, and keep its NaN/Inf checks on the device, naming afterwards what the default
checks name at once: the first failing update, its network, parameter and tasks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import (  # the same faults as the default path's tests
    CASES,
    SAC,
    d2r_method,
    filled_buffer,
    make_agent,
    nan_after_policy_step,
    nan_parameter,
    refuse_host_reads,
)

from d2r.config import MethodConfig
from d2r.sac.agent import MultiTaskSAC, resolve_cuda_graphs
from d2r.sac.nonfinite import NonFiniteError


def agent_pair(method: MethodConfig, order: str = "joint") -> dict[str, MultiTaskSAC]:
    """The same initial agent with cuda_graphs off and on (on a CPU: the eager mode)."""
    return {mode: make_agent(method, dataclasses.replace(SAC, update_order=order, cuda_graphs=mode))
            for mode in ("off", "on")}


def test_cuda_graphs_setting_resolves_per_device():
    assert [resolve_cuda_graphs(s, "cpu") for s in ("auto", "on", "off")] == ["off", "eager", "off"]
    assert [resolve_cuda_graphs(s, "cuda") for s in ("on", "off")] == ["graph", "off"]
    with pytest.raises(ValueError):
        resolve_cuda_graphs("yes", "cpu")


@pytest.mark.parametrize("case", list(CASES))
def test_update_reads_nothing_back_and_equals_the_default_update(case, monkeypatch):
    method, order = CASES[case]
    agents = agent_pair(method, order)
    assert (agents["off"].update_mode, agents["on"].update_mode) == ("off", "eager")
    buf = filled_buffer(agents["off"], steps=30)
    batches = [buf.sample(8) for _ in range(4)]
    reward = batches[2].reward.clone()
    reward[8:16] = float("nan")  # task 1 dropped from update 3 (its transitions are not finite)
    batches[2] = dataclasses.replace(batches[2], reward=reward)
    stats = {}
    for mode, agent in agents.items():
        torch.manual_seed(3)
        with monkeypatch.context() as patch:
            if mode == "on":
                refuse_host_reads(patch)
            stats[mode] = [agent.update(batch) for batch in batches]
    assert agents["on"].pop_fault() is None
    assert agents["on"].pop_skipped() == agents["off"].pop_skipped() == {"nonfinite": [0, 1, 0],
                                                                          "over_threshold": [0, 0, 0]}
    on, off = agents["on"].state_dict(), agents["off"].state_dict()
    for key in off:
        torch.testing.assert_close(on[key], off[key], rtol=1e-5, atol=1e-6, msg=key)
    for s_on, s_off in zip(stats["on"], stats["off"]):
        for key in s_off:
            torch.testing.assert_close(s_on[key], s_off[key], rtol=1e-5, atol=1e-6, msg=key)


# ---- NaN/Inf: the same fault named, found at the end of the updates instead of in its update ----
def nan_gradient(agent, batch):
    next(agent.q1.parameters()).register_hook(lambda grad: grad * float("nan"))
    return batch


def overflowing_task_and_nan_gradient(agent, batch):
    """Task 0's critic terms overflow (rewards of 1e38: dropped, as an extreme task), and a NaN
    reaches Q1's gradient: the fault names the gradient and the task whose terms were not finite."""
    reward = batch.reward.clone()
    reward[: len(reward) // agent.num_tasks] = 1e38
    return nan_gradient(agent, dataclasses.replace(batch, reward=reward))


INJECTED = {  # what each fault is named: quantity, network, tasks
    nan_gradient: ("gradient", "q1", ()),
    nan_parameter: ("parameter", "q2", ()),
    nan_after_policy_step: ("parameter", "policy", ()),
    overflowing_task_and_nan_gradient: ("gradient", "q1", (0,)),
}


@pytest.mark.parametrize("order", ["joint", "sequential"])
@pytest.mark.parametrize("inject", list(INJECTED), ids=lambda f: f.__name__)
def test_device_side_checks_name_the_first_failing_update_as_the_default_checks(inject, order):
    agents = agent_pair(d2r_method(), order)
    buf = filled_buffer(agents["off"], steps=30)
    batches = [buf.sample(8) for _ in range(4)]
    errors = {}
    for mode, agent in agents.items():
        torch.manual_seed(5)
        try:
            for i, batch in enumerate(batches, start=1):
                agent.update(inject(agent, batch) if i == 2 else batch)  # the fault comes in update 2
        except NonFiniteError as err:
            assert mode == "off" and i == 2
            errors[mode] = err
        else:
            assert mode == "on"  # all four updates ran; the fault was recorded on the device
            errors[mode] = agent.pop_fault()
    off, on = errors["off"], errors["on"]
    assert (off.quantity, off.network, off.tasks) == INJECTED[inject]
    assert on is not None and on.update == 2 and off.update is None
    assert (on.quantity, on.network, on.tasks, on.detail) == (off.quantity, off.network, off.tasks, off.detail)
    assert on.describe(["reach", "push", "pick"]) == off.describe(["reach", "push", "pick"])
    assert agents["on"].pop_fault() is None  # read once: cleared


def test_device_side_checks_number_updates_from_the_last_read():
    agent = agent_pair(d2r_method())["on"]
    buf = filled_buffer(agent, steps=30)
    for _ in range(3):
        agent.update(buf.sample(8))
    assert agent.pop_fault() is None
    agent.update(buf.sample(8))
    agent.update(nan_gradient(agent, buf.sample(8)))
    agent.update(buf.sample(8))  # fails too (the NaN hook stays): the first fault counts
    err = agent.pop_fault()
    assert (err.update, err.quantity, err.network) == (2, "gradient", "q1")


def test_a_checkpoint_from_before_the_cuda_graphs_key_still_resumes():
    from d2r.sac.run_state import _comparable

    new = {"experiment": {"budget": {"epochs": 6}}, "sac": {"gamma": 0.99, "cuda_graphs": "auto"}}
    old = {"experiment": {"budget": {"epochs": 6}}, "sac": {"gamma": 0.99}}
    assert _comparable(json.dumps(old)) == _comparable(json.dumps(new))
    assert _comparable(json.dumps(old)) != _comparable(json.dumps({**new, "sac": {"gamma": 0.99, "cuda_graphs": "on"}}))
