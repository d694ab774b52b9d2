"""Tests of the baseline networks (d2r/nets/baselines.py, spec section 6), and of the registry of
network kinds (d2r.nets.NETS) against the parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from d2r.config import net_kinds
from d2r.nets import NETS, build_net
from d2r.nets.base import MultiTaskNet
from d2r.nets.baselines import (
    MixtureOfExpertsNet,
    MTSACNet,
    MultiHeadNet,
    SoftModularNet,
    parameter_count,
)

ROOT = Path(__file__).resolve().parents[1]
STATE, ACTION = 39, 4
POLICY_DIMS = (STATE, 2 * ACTION)  # 39 -> 8
Q_DIMS = (STATE + ACTION, 1)  # 43 -> 1
#: every registered kind but D2R's own network (each builds with its class's default sizes)
BASELINES = {kind: cls for kind, cls in NETS.items() if kind != "d2r"}
CLASSES = list(BASELINES.values())
IDS = list(BASELINES)


def test_every_network_kind_is_registered_and_known_to_the_parameters():
    """A kind registered in d2r.nets.NETS has its sizes in the schema (`nets.<kind>`, which makes it a
    choice of a method's `net`) and in params.yaml, and builds from them; and no other kind is known."""
    schema = set(net_kinds())
    assert not set(NETS) - schema, f"registered, but not in d2r/params.schema.yaml nets: {sorted(set(NETS) - schema)}"
    assert not schema - set(NETS), f"in the schema's nets, but not registered in d2r.nets.NETS: {sorted(schema - set(NETS))}"
    nets = yaml.safe_load((ROOT / "params.yaml").read_text())["nets"]
    assert set(nets) - {"init"} == set(NETS), "params.yaml nets: an entry of sizes for each registered kind"
    for kind, cls in NETS.items():
        net = build_net(kind, *POLICY_DIMS, 10, **{"init": nets["init"], **nets[kind]})
        assert isinstance(net, cls) and isinstance(net, MultiTaskNet), kind


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=f"unknown network kind 'transformer' \\(known: {', '.join(NETS)}\\)"):
        build_net("transformer", *POLICY_DIMS, 10)


def _batch(in_dim: int, num_tasks: int, per_task: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    task = torch.arange(num_tasks).repeat_interleave(per_task)
    x = torch.randn(task.shape[0], in_dim, generator=g)
    return x, task


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("num_tasks", [10, 50], ids=["MT10", "MT50"])
@pytest.mark.parametrize("dims", [POLICY_DIMS, Q_DIMS], ids=["policy", "Q"])
def test_output_shape_and_no_route(cls, num_tasks, dims):
    torch.manual_seed(0)
    in_dim, out_dim = dims
    net = cls(in_dim, out_dim, num_tasks)
    assert isinstance(net, MultiTaskNet)
    assert net.routed is False and net.route_shape is None
    assert (net.in_dim, net.out_dim, net.num_tasks) == (in_dim, out_dim, num_tasks)
    x, task = _batch(in_dim, num_tasks, per_task=2)
    out, route = net(x, task)
    assert out.shape == (x.shape[0], out_dim)
    assert out.dtype == torch.float32
    assert route is None
    assert torch.isfinite(out).all()
    # routing keyword arguments are accepted and ignored
    out2, route2 = net(
        x, task, route_mode="sampled", temperature=torch.ones(num_tasks), resrouting=True
    )
    assert route2 is None
    torch.testing.assert_close(out2, out)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_output_depends_on_task(cls):
    torch.manual_seed(0)
    # PyTorch's initialisation: the release's U(+-3e-3) routing logits of Soft Modularization
    # start near uniform, so its output then depends on the task only at ~1e-9
    net = cls(*POLICY_DIMS, 10, init="torch")
    x = torch.randn(1, STATE).expand(10, STATE)
    out, _ = net(x, torch.arange(10))
    # same state, different tasks -> different outputs
    assert (out - out[:1]).abs()[1:].amax(dim=1).min() > 1e-6


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_adam_step_trains_every_parameter(cls):
    torch.manual_seed(0)
    net = cls(*Q_DIMS, 10)
    x, task = _batch(Q_DIMS[0], 10, per_task=4)
    target = torch.randn(x.shape[0], Q_DIMS[1])
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out, _ = net(x, task)
    loss = ((out - target) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    opt.step()
    for name, p in net.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"
    with torch.no_grad():
        loss_after = ((net(x, task)[0] - target) ** 2).mean()
    assert loss_after < loss


# ---------------------------------------------------------------- Multi-head
def test_multihead_gradient_only_on_own_head():
    torch.manual_seed(0)
    net = MultiHeadNet(*POLICY_DIMS, 10)
    x = torch.randn(16, STATE)
    task = torch.full((16,), 3, dtype=torch.long)
    out, _ = net(x, task)
    out.pow(2).sum().backward()
    gw, gb = net.head_weight.grad, net.head_bias.grad
    assert gw.shape == (10, 400, POLICY_DIMS[1])
    assert gw[3].abs().sum() > 0 and gb[3].abs().sum() > 0
    others = [t for t in range(10) if t != 3]
    assert torch.count_nonzero(gw[others]) == 0
    assert torch.count_nonzero(gb[others]) == 0


def test_multihead_matches_per_sample_head():
    torch.manual_seed(1)
    net = MultiHeadNet(*Q_DIMS, 50, hidden=(32, 32))
    x, task = _batch(Q_DIMS[0], 50, per_task=1)
    task = task[torch.randperm(50)]
    out, _ = net(x, task)
    z = net.trunk(torch.cat([x, torch.nn.functional.one_hot(task, 50).float()], -1))
    ref = torch.stack([z[b] @ net.head_weight[task[b]] + net.head_bias[task[b]] for b in range(50)])
    torch.testing.assert_close(out, ref)


def test_mtsac_is_mlp_on_state_and_one_hot():
    torch.manual_seed(0)
    net = MTSACNet(*POLICY_DIMS, 10)
    x, task = _batch(STATE, 10)
    ref = net.net(torch.cat([x, torch.eye(10)[task]], -1))
    torch.testing.assert_close(net(x, task)[0], ref)
    assert [m.out_features for m in net.net if isinstance(m, torch.nn.Linear)] == [400, 400, 400, 8]


# ---------------------------------------------------------------- Mixture of experts
def test_moe_gate_sums_to_one_and_depends_on_task():
    torch.manual_seed(0)
    net = MixtureOfExpertsNet(*POLICY_DIMS, 10, num_experts=4)
    g = net.gate_weights(torch.arange(10))
    assert g.shape == (10, 4)
    assert (g >= 0).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(10), atol=1e-6, rtol=0)
    assert (g - g[:1]).abs()[1:].amax(dim=1).min() > 1e-4  # every task has its own mixture


def test_moe_matches_explicit_mixture():
    torch.manual_seed(2)
    net = MixtureOfExpertsNet(*POLICY_DIMS, 10, num_experts=3, hidden=(16, 24))
    x, task = _batch(STATE, 10, per_task=2)
    out, _ = net(x, task)
    g = net.gate_weights(task)
    ref = torch.zeros_like(out)
    for e in range(3):
        h = x
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = h @ w[e] + b[e]
            if i < len(net.weights) - 1:
                h = torch.relu(h)
        ref += g[:, e : e + 1] * h
    torch.testing.assert_close(out, ref)
    # experts see the state only: the one-hot enters through the gate alone
    assert net.weights[0].shape == (3, STATE, 16)


# ---------------------------------------------------------------- Soft Modularization
@pytest.mark.parametrize("condition", ["all", "previous"])
@pytest.mark.parametrize("output_routing", [True, False])
def test_soft_modular_routing_weights(condition, output_routing):
    torch.manual_seed(0)
    net = SoftModularNet(
        *POLICY_DIMS, 10, routing_condition=condition, output_routing=output_routing
    )
    x, task = _batch(STATE, 10, per_task=4)
    ws = net.routing_weights(x, task, include_output=True)
    n_mats = net.num_layers - 1 + (1 if output_routing else 0)
    assert len(ws) == n_mats
    for l, w in enumerate(ws):
        rows = 1 if (output_routing and l == n_mats - 1) else 4
        assert w.shape == (x.shape[0], rows, 4)
        assert (w >= 0).all()
        assert (w.sum(-1) - 1).abs().max() <= 1e-6
    mats = net.routing_weights(x, task)
    assert len(mats) == 3 and all(m.shape == (x.shape[0], 4, 4) for m in mats)

    # depends on the state (same task, different states) ...
    t0 = torch.zeros(8, dtype=torch.long)
    w_s = net.routing_weights(torch.randn(8, STATE), t0)
    # ... and on the task (same state, different tasks)
    w_t = net.routing_weights(torch.randn(1, STATE).expand(10, STATE), torch.arange(10))
    for w in w_s + w_t:
        spread = (w - w[:1]).abs().flatten(1).amax(1)[1:]
        assert spread.min() > 1e-6


def _soft_modular_reference(net: SoftModularNet, x, task):
    """Loop-by-module transcription of ModularGatedCascadeCondNet.forward (release); with
    routing_condition="previous" only p^l conditions p^{l+1}; with output_routing=False
    the last layer's modules are summed."""
    prev_only = net.routing_condition == "previous"
    relu = torch.relu
    n = net.num_modules
    out = net.encoder(x)
    emb = net.task_embed(torch.nn.functional.one_hot(task, net.num_tasks).float()) * out
    out = relu(out)
    emb = net.routing_trunk(relu(emb))
    weights, flat = [], []
    raw = net.route_out[0](relu(emb)).view(-1, n, n)
    weights.append(torch.softmax(raw, -1))
    flat.append(weights[-1].reshape(-1, n * n))
    for l in range(1, net.num_layers - 1):
        c = flat[-1] if prev_only else torch.cat(flat, -1)
        cond = net.route_cond[l - 1](c) * emb
        raw = net.route_out[l](relu(cond)).view(-1, n, n)
        weights.append(torch.softmax(raw, -1))
        flat.append(weights[-1].reshape(-1, n * n))
    if net.output_routing:
        c = flat[-1] if prev_only else torch.cat(flat, -1)
        last = torch.softmax(net.out_gate(relu(net.out_cond(c) * emb)), -1)
    else:
        last = torch.ones(x.shape[0], n)
    W = net.module_width
    w0 = net.layer0.weight.view(n, W, -1)
    b0 = net.layer0.bias.view(n, W)
    outs = torch.stack([out @ w0[j].T + b0[j] for j in range(n)], -2)
    for i in range(net.num_layers - 1):
        new = []
        for j in range(n):
            inp = relu((outs * weights[i][..., j, :].unsqueeze(-1)).sum(-2))
            new.append(inp @ net.module_weight[i][j] + net.module_bias[i][j])
        outs = torch.stack(new, -2)
    z = relu((outs * last.unsqueeze(-1)).sum(-2))
    return net.head(z)


@pytest.mark.parametrize("condition", ["all", "previous"])
@pytest.mark.parametrize("output_routing", [True, False])
def test_soft_modular_matches_release_forward(condition, output_routing):
    torch.manual_seed(3)
    net = SoftModularNet(*Q_DIMS, 10, num_layers=4, num_modules=3, module_width=16,
                         encoder=(32, 24), embed_dim=24, routing_hidden=20,
                         routing_condition=condition, output_routing=output_routing)
    x, task = _batch(Q_DIMS[0], 10, per_task=2)
    torch.testing.assert_close(net(x, task)[0], _soft_modular_reference(net, x, task))


def test_soft_modular_previous_condition_uses_last_matrix_only():
    net = SoftModularNet(*POLICY_DIMS, 10, routing_condition="previous")
    assert all(m.in_features == 16 for m in net.route_cond)
    assert net.out_cond.in_features == 16
    net_all = SoftModularNet(*POLICY_DIMS, 10)
    assert [m.in_features for m in net_all.route_cond] == [16, 32]
    assert net_all.out_cond.in_features == 48


def test_soft_modular_rejects_mismatched_embedding():
    with pytest.raises(ValueError):
        SoftModularNet(*POLICY_DIMS, 10, encoder=(400, 300), embed_dim=400)


# ---------------------------------------------------------------- sizes
def test_parameter_counts_default(capsys):
    torch.manual_seed(0)
    counts = {}
    for cls in CLASSES:
        for T in (10, 50):
            for kind, dims in (("policy", POLICY_DIMS), ("Q", Q_DIMS)):
                c = parameter_count(cls(*dims, T))
                assert c > 0
                counts[(cls.__name__, T, kind)] = c
    # exact count of the simplest one: [39+10] -> 400 -> 400 -> 400 -> 8
    assert counts[("MTSACNet", 10, "policy")] == 49 * 400 + 400 + 2 * (400 * 400 + 400) + 400 * 8 + 8
    # multi-head = MT-SAC trunk + T heads
    assert counts[("MultiHeadNet", 10, "policy")] == counts[("MTSACNet", 10, "policy")] + 9 * (400 * 8 + 8)
    with capsys.disabled():
        print("\nparameter counts (default sizes):")
        for (name, T, kind), c in counts.items():
            print(f"  {name:22s} MT{T:<3d} {kind:6s} {c:>10,d}")
