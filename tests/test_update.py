"""The SAC update step as the authors' release orders it (spec section 4, "How the release orders
one update"): one joint step, ResRouting in the actor's pass through the Qs, the extreme-task mask
over the summed per-task loss, every group's gradient clipped (log alpha's too)."""

import copy
import dataclasses

import pytest
import torch
from helpers import SAC, d2r_method, filled_buffer, make_agent

from d2r.sac.agent import MultiTaskSAC


def sharpen_routers(agent: MultiTaskSAC, scale: float = 30.0) -> None:
    """Scale every router's logits up, so that greedy routes hold untrusted edges (ResRouting
    then changes gradients, which it does not while every softmax is near uniform)."""
    with torch.no_grad():
        for net in (agent.policy.net, agent.q1, agent.q2):
            net.router[-1].weight.mul_(scale)
            net.router[-1].bias.mul_(scale)
    agent.q1_target.load_state_dict(agent.q1.state_dict())
    agent.q2_target.load_state_dict(agent.q2.state_dict())


def untrusted_share(net, x, task) -> float:
    """Share of the greedy route's selected edges that ResRouting does not trust."""
    with torch.no_grad():
        z = net.logits(x, task)
        zsq = net._square(z)
        route = net.select_route(z, zsq, task, "greedy")
        trusted = net.trusted_mask(zsq, route)
    real = route >= 0
    return 1.0 - (trusted & real).sum().item() / real.sum().item()


def plain_joint_update(agent: MultiTaskSAC, batch) -> None:
    """The release's MTSAC.update written out plainly, on `agent` in place: every loss from the
    pre-step parameters, the actor's pass through deep copies of the current Qs (greedy route,
    ResRouting: they are in training mode), per-task L = J_alpha + J_pi + J_Q1 + J_Q2 masked at
    the threshold, one backward, each group clipped to norm 1, plain (non-fused) Adam steps.

    Random draws in the agent's order: the target's next action, Q1's and Q2's sampled routes, the
    new action."""
    sac, T = agent.sac, agent.num_tasks
    task, res = batch.task, agent.method.resrouting
    log_alpha = agent.log_alpha
    alpha = log_alpha.exp().detach()[task]
    w = T * torch.softmax(-log_alpha.detach(), 0)
    with torch.no_grad():
        a2, logp2, _ = agent.policy.sample(batch.next_state, task, route_mode="greedy")
        s2a2 = torch.cat([batch.next_state, a2], -1)
        q_next = torch.min(agent.q1_target(s2a2, task)[0], agent.q2_target(s2a2, task)[0]).squeeze(-1)
        y = sac.reward_scale * batch.reward + sac.gamma * (1 - batch.done) * (q_next - alpha * logp2)
    sa = torch.cat([batch.state, batch.action], -1)
    q1 = agent.q1(sa, task, route_mode="sampled", temperature=agent.temperature, resrouting=res)[0].squeeze(-1)
    q2 = agent.q2(sa, task, route_mode="sampled", temperature=agent.temperature, resrouting=res)[0].squeeze(-1)
    a, logp, _ = agent.policy.sample(batch.state, task, route_mode="replayed", route=batch.route, resrouting=res)
    copy_q1, copy_q2 = copy.deepcopy(agent.q1), copy.deepcopy(agent.q2)
    sa_new = torch.cat([batch.state, a], -1)
    q_new = torch.min(copy_q1(sa_new, task, route_mode="greedy", resrouting=res)[0],
                      copy_q2(sa_new, task, route_mode="greedy", resrouting=res)[0]).squeeze(-1)

    def per_task(v):
        return v.view(T, -1).mean(1)

    j_alpha = per_task(-log_alpha[task] * (logp + agent.target_entropy).detach())
    j_pi = w * per_task(alpha * logp - q_new)
    j_q1, j_q2 = w * per_task((q1 - y) ** 2), w * per_task((q2 - y) ** 2)
    task_loss = j_alpha + j_pi + j_q1 + j_q2
    loss = ((task_loss <= sac.loss_mask_threshold).float() * task_loss).mean()

    groups = [list(agent.policy.parameters()), list(agent.q1.parameters()), list(agent.q2.parameters()),
              [log_alpha]]
    optims = [agent.policy_optim, agent.q_optim, agent.q_optim, agent.alpha_optim]
    plain = []
    for params, fused in zip(groups, optims):
        opt = torch.optim.Adam(params, lr=fused.param_groups[0]["lr"], foreach=False)
        for p in params:  # the fused optimiser's moments
            if p in fused.state:
                opt.state[p] = {k: v.clone() for k, v in fused.state[p].items()}
        plain.append(opt)
    for params in groups:
        for p in params:
            p.grad = None
    loss.backward()
    for params, opt in zip(groups, plain):
        torch.nn.utils.clip_grad_norm_(params, sac.grad_clip)
        opt.step()
    with torch.no_grad():
        log_alpha.clamp_(max=0.0)
        for net, target in ((agent.q1, agent.q1_target), (agent.q2, agent.q2_target)):
            for p, tp in zip(net.parameters(), target.parameters()):
                tp.mul_(1 - sac.tau).add_(sac.tau * p)
        agent.temperature.copy_(T * torch.softmax(-log_alpha, 0))  # the release's update_gumbel_temperature


def in_float64(batch):
    return dataclasses.replace(batch, **{k: getattr(batch, k).double()
                                         for k in ("state", "action", "reward", "next_state", "done")})


def trained_pair(resrouting: bool = True, steps: int = 3, **sac_changes):
    """A float64 agent with sharp routers and a few updates behind it, and a batch."""
    agent = make_agent(d2r_method(resrouting=resrouting), dataclasses.replace(SAC, **sac_changes))
    sharpen_routers(agent)
    buf = filled_buffer(agent, steps=30)
    agent.double()  # before any step: the optimisers' moments are then float64 too
    for _ in range(steps):
        agent.update(in_float64(buf.sample(8)))
    return agent, in_float64(buf.sample(8))


@pytest.mark.parametrize("resrouting", [True, False])
def test_joint_update_equals_the_plainly_written_release_update(resrouting):
    agent, batch = trained_pair(resrouting)
    if resrouting:  # the actor's greedy pass through the Qs meets untrusted edges
        assert untrusted_share(agent.q1, torch.cat([batch.state, batch.action], -1), batch.task) > 0.05
    plain = copy.deepcopy(agent)
    torch.manual_seed(7)
    grads = step_gradients(agent, batch)
    torch.manual_seed(7)
    plain_joint_update(plain, batch)
    for (name, p), (_, q) in zip(agent.named_parameters(), plain.named_parameters()):
        if q.grad is not None:  # the plain update leaves its clipped gradients in place
            torch.testing.assert_close(grads[id(p)], q.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, p), (_, q) in zip(agent.state_dict().items(), plain.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=name)


def test_the_actor_pass_through_the_qs_uses_resrouting():
    """With ResRouting on, the gradient the policy gets through the Qs' greedy route differs from
    the one without ResRouting there (the routers are sharp, so greedy routes hold untrusted edges)."""
    agent, batch = trained_pair()
    grads = {}
    for res in (True, False):
        a = copy.deepcopy(agent)
        torch.manual_seed(3)
        new_action, _, _ = a.policy.sample(batch.state, batch.task, route_mode="replayed", route=batch.route,
                                           resrouting=True)
        sa = torch.cat([batch.state, new_action.detach().requires_grad_()], -1)
        q = a.q1(sa, batch.task, route_mode="greedy", resrouting=res)[0].sum()
        grads[res] = torch.autograd.grad(q, sa)[0]
    assert (grads[True] - grads[False]).abs().max() > 1e-4 * grads[False].abs().max()


def step_gradients(agent: MultiTaskSAC, batch) -> dict:
    """Every optimiser's gradients when it steps (after clipping)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = {}

    def hook(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                seen[id(p)] = p.grad.clone()

    handle = register_optimizer_step_pre_hook(hook)
    try:
        agent.update(batch)
    finally:
        handle.remove()
    return seen


def test_sequential_order_gives_the_same_critic_step_and_another_policy_step():
    agent, batch = trained_pair()
    grads = {}
    for order in ("joint", "sequential"):
        a = copy.deepcopy(agent)
        a.sac = dataclasses.replace(a.sac, update_order=order)
        torch.manual_seed(11)
        by_id = step_gradients(a, batch)
        grads[order] = {name: by_id[id(p)] for name, p in a.named_parameters() if id(p) in by_id}
    joint, seq = grads["joint"], grads["sequential"]
    for name in joint:
        if name.startswith(("q1.", "q2.")):
            torch.testing.assert_close(joint[name], seq[name], rtol=0, atol=1e-12, msg=name)
    policy = [n for n in joint if n.startswith("policy.")]
    change = max((joint[n] - seq[n]).abs().max().item() for n in policy)
    size = max(joint[n].abs().max().item() for n in policy)
    # the actor's pass went through the already-updated critics (float64: rounding is ~1e-16)
    assert change > 1e-6 * size


def test_mask_drops_all_four_terms_of_a_task_whose_summed_loss_is_over_the_threshold():
    agent = make_agent(sac=dataclasses.replace(SAC, loss_mask_threshold=3000.0))
    # task 0: every term small; task 1: no term over 3000 but their sum is (3001);
    # task 2: J_Q1 alone over 3000, but J_pi pulls the sum below (3500 - 1000 + 2 = 2502)
    values = {"alpha": [1.0, 1.0, 0.5], "policy": [-2.0, 2995.0, -1000.0],
              "q1": [1.0, 2.5, 3500.0], "q2": [1.0, 2.5, 1.5]}
    terms = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    loss, keep, finite = agent._masked_mean(terms, torch.ones(3, dtype=torch.bool))
    assert keep.tolist() == [True, False, True] and finite.all()
    assert loss.item() == pytest.approx((1 + 1 - 2 + 1 + 0.5 - 1000 + 3500 + 1.5) / 3)
    loss.backward()
    for name, t in terms.items():
        assert t.grad.tolist() == pytest.approx([1 / 3, 0.0, 1 / 3]), name


def test_a_task_masked_by_its_critic_loss_loses_its_alpha_and_policy_terms_too():
    """Rewards of 1e5 for task 1 put its J_Q far over the threshold: its log alpha does not move
    (J_alpha is dropped with it, as in the release), the other tasks' do, and every gradient equals
    that of the same update with task 1 dropped outright."""
    agent = make_agent()
    with torch.no_grad():
        agent.log_alpha.fill_(-0.5)  # off the clamp at 0, so that every step shows
    batch = filled_buffer(agent, steps=30).sample(8)
    reward = batch.reward.clone()
    reward[8:16] = 1e5
    huge = dataclasses.replace(batch, reward=reward)
    masked = copy.deepcopy(agent)
    torch.manual_seed(2)
    grads_masked = step_gradients(masked, huge)
    moved = (masked.log_alpha.detach() + 0.5).abs()
    assert moved[1] == 0 and (moved[[0, 2]] > 0).all()
    assert masked.pop_skipped() == {"nonfinite": [0, 0, 0], "over_threshold": [0, 1, 0]}
    dropped = copy.deepcopy(agent)  # task 1 dropped as if its transitions were not finite
    clean = dropped._finite_batch
    dropped._finite_batch = lambda b: (clean(b)[0], torch.tensor([True, False, True]))
    torch.manual_seed(2)
    grads_dropped = step_gradients(dropped, huge)
    by_id = {id(p): name for name, p in dropped.named_parameters()}
    assert {by_id[i] for i in grads_dropped} == {n for n, _ in dropped.named_parameters() if "target" not in n}
    for (name, p), (_, q) in zip(masked.named_parameters(), dropped.named_parameters()):
        if id(q) in grads_dropped:
            torch.testing.assert_close(grads_masked[id(p)], grads_dropped[id(q)], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_log_alpha_gradient_is_clipped_to_norm_one():
    agent = make_agent()
    agent.target_entropy = -100.0  # d J_alpha / d log alpha_tau ~ -(log pi - 100) / T: norm ~ 60
    batch = filled_buffer(agent).sample(8)
    with torch.no_grad():
        agent.log_alpha.fill_(-0.5)
    a = copy.deepcopy(agent)
    torch.manual_seed(4)
    seen = step_gradients(a, batch)
    clipped = seen[id(a.log_alpha)]
    assert clipped.norm().item() == pytest.approx(1.0, rel=1e-5)
    # unclipped, by hand: -(mean over the task's samples of log pi + target entropy) / T
    torch.manual_seed(4)
    b = copy.deepcopy(agent)
    b.sac = dataclasses.replace(b.sac, grad_clip=1e9)
    raw = step_gradients(b, batch)[id(b.log_alpha)]
    assert raw.norm().item() > 30
    torch.testing.assert_close(clipped, raw / raw.norm(), rtol=1e-5, atol=0)
