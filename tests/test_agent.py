"""Multi-task SAC (spec sections 3-4) and the per-task replay buffer, at small sizes."""

import dataclasses

import pytest
import torch
from helpers import ACTION, STATE, TASKS, d2r_method, filled_buffer, make_agent

from d2r.config import MethodConfig
from d2r.sac.replay import TaskReplayBuffer


def test_temperatures_average_one_and_order_inversely_to_alpha():
    agent = make_agent()
    with torch.no_grad():
        agent.log_alpha.copy_(torch.tensor([-0.1, -2.0, -0.7]))
    agent.refresh_temperature()
    temp = agent.temperature
    assert temp.mean().item() == pytest.approx(1.0, abs=1e-6)
    # Hand value: T_tau = T * softmax(-log alpha)_tau (T = 3 tasks).
    expected = 3 * torch.softmax(torch.tensor([0.1, 2.0, 0.7]), 0)
    assert torch.allclose(temp, expected, atol=1e-6)
    assert temp[1] > temp[2] > temp[0]  # smallest alpha -> largest temperature
    # The same vector weights the per-task losses.
    assert torch.allclose(agent.task_weights(), expected, atol=1e-6)


def test_no_route_balance_keeps_temperature_one():
    agent = make_agent(d2r_method(route_balance=False))
    with torch.no_grad():
        agent.log_alpha.copy_(torch.tensor([-0.1, -2.0, -0.7]))
    agent.refresh_temperature()
    assert torch.equal(agent.temperature, torch.ones(TASKS))


def test_update_trains_every_network_and_clamps_log_alpha():
    agent = make_agent()
    buf = filled_buffer(agent)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    with torch.no_grad():
        agent.log_alpha.fill_(0.0)  # at the clamp: a step that would raise alpha is cut back to 0
    for _ in range(3):
        stats = agent.update(buf.sample(8))
    after = agent.state_dict()
    for prefix in ("policy.", "q1.", "q2.", "q1_target.", "q2_target."):
        changed = [k for k in after if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        assert changed, f"{prefix} did not change"
    assert (agent.log_alpha <= 0).all()
    assert all(torch.isfinite(v) for v in stats.values())
    # Polyak: the target moved by tau of the gap only.
    k = next(k for k in after if k.startswith("q1.") and k.endswith("weight"))
    tk = "q1_target." + k[len("q1."):]
    assert (after[tk] - before[tk]).abs().max() < (after[k] - before[tk]).abs().max()


def test_actor_step_leaves_the_critics_gradients_alone():
    """The Qs are frozen during the actor's forward: after the update their gradients are
    exactly those of the critic step, while the policy still learns through them."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    agent = make_agent()
    buf = filled_buffer(agent)
    at_critic_step = {}

    def hook(optimizer, args, kwargs):
        if optimizer is agent.q_optim:
            at_critic_step.update({id(p): p.grad.clone() for g in optimizer.param_groups for p in g["params"]})

    handle = register_optimizer_step_pre_hook(hook)
    try:
        agent.update(buf.sample(8))
    finally:
        handle.remove()
    for net in (agent.q1, agent.q2):
        for p in net.parameters():
            assert p.requires_grad and torch.equal(p.grad, at_critic_step[id(p)])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.policy.net.head.parameters())


def test_temperatures_are_recomputed_after_every_update():
    agent = make_agent()
    buf = filled_buffer(agent)
    with torch.no_grad():
        agent.log_alpha.copy_(torch.tensor([-0.5, -1.0, -1.5]))
    agent.update(buf.sample(8))
    expected = TASKS * torch.softmax(-agent.log_alpha.detach(), 0)
    assert torch.allclose(agent.temperature, expected, atol=1e-6)


def test_truncation_rule_controls_bootstrapping():
    """With done = 1 the target is the scaled reward alone; with done = 0 it bootstraps."""
    agent = make_agent()
    buf = filled_buffer(agent)
    batch = buf.sample(4)
    reward = torch.ones_like(batch.reward)
    cut = dataclasses.replace(batch, reward=reward, done=torch.ones_like(batch.done))
    go_on = dataclasses.replace(batch, reward=reward, done=torch.zeros_like(batch.done))
    # Observe the target through the critic loss of a Q fixed to zero output.
    for q in (agent.q1, agent.q2):
        torch.nn.init.zeros_(q.head.weight)
        torch.nn.init.zeros_(q.head.bias)
    stats_cut = agent.update(cut)
    assert stats_cut["loss_q"].item() == pytest.approx(0.1 ** 2, rel=1e-4)  # (0 - 0.1 * 1)^2
    agent2 = make_agent()
    for q in (agent2.q1, agent2.q2):
        torch.nn.init.zeros_(q.head.weight)
        torch.nn.init.zeros_(q.head.bias)
    stats_go_on = agent2.update(go_on)
    assert stats_go_on["loss_q"].item() != pytest.approx(0.1 ** 2, rel=1e-3)


def test_agent_works_with_a_network_without_routes():
    method = MethodConfig(name="mtsac", net="mtsac", net_args={"hidden": [32, 32]}, task_loss_weights=False)
    agent = make_agent(method)
    assert not agent.routed
    buf = filled_buffer(agent)
    assert buf.route is None
    batch = buf.sample(8)
    assert batch.route is None
    stats = agent.update(batch)
    assert torch.isfinite(stats["loss_q"])


def test_replay_batches_hold_each_task_equally_and_keep_routes():
    agent = make_agent()
    buf = filled_buffer(agent, steps=20)
    batch = buf.sample(7)
    assert batch.state.shape == (TASKS * 7, STATE)
    assert torch.equal(batch.task, torch.arange(TASKS).repeat_interleave(7))
    assert batch.route.shape == (TASKS * 7, *agent.policy.net.route_shape)
    # Every sampled state is one that was stored for that task, with the route stored with it.
    for i in range(batch.state.shape[0]):
        t = batch.task[i]
        match = (buf.state[t, : buf.size] == batch.state[i]).all(dim=1).nonzero()
        assert match.numel() == 1
        assert torch.equal(buf.route[t, match[0, 0]].long(), batch.route[i])


def test_replay_generator_is_seeded_and_restored():
    agent = make_agent()
    a, b = filled_buffer(agent, seed=3), filled_buffer(agent, seed=3)
    assert torch.equal(a.sample(5).state, b.sample(5).state)
    state = a.state_dict()
    first = a.sample(5).state
    c = TaskReplayBuffer(TASKS, 50, STATE, ACTION, agent.policy.net.route_shape, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.sample(5).state, first)


def test_replay_wraps_around_at_capacity():
    buf = TaskReplayBuffer(2, 3, 1, 1, None, seed=0)
    for i in range(5):
        buf.add(torch.full((2, 1), float(i)), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 1),
                torch.zeros(2, dtype=torch.bool))
    assert len(buf) == 6 and buf.size == 3
    assert sorted(buf.state[0, :, 0].tolist()) == [2.0, 3.0, 4.0]  # the two oldest were overwritten


def test_route_stored_and_replayed_gives_the_collection_output():
    """The behaviour route stored in the replay reproduces the policy output of collection."""
    agent = make_agent()
    task = torch.arange(TASKS)
    state = torch.randn(TASKS, STATE)
    with torch.no_grad():
        out, route = agent.policy.net(state, task, route_mode="sampled", temperature=torch.full((TASKS,), 5.0))
        buf = TaskReplayBuffer(TASKS, 4, STATE, ACTION, agent.policy.net.route_shape, seed=0)
        buf.add(state, torch.zeros(TASKS, ACTION), torch.zeros(TASKS), state, torch.zeros(TASKS, dtype=torch.bool),
                route)
        batch = buf.sample(1)
        replayed, _ = agent.policy.net(batch.state, batch.task, route_mode="replayed", route=batch.route)
    assert torch.allclose(replayed, out, atol=1e-6)
