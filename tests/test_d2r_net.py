"""Tests of the D2R network (spec sections 1 and 2) and of the route functions.

Most tests use a small net (N=5 modules of width 8) and compare against values computed by
hand or against the plain reference `d2r.nets.reference.PlainD2RNet` (the spec's equations
written out) called one sample at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from d2r.nets import routes as R
from d2r.nets.d2r_net import D2RNet
from d2r.nets.module_stack import RoutedModuleStack
from d2r.nets.reference import PlainD2RNet

IN, OUT, T = 6, 3, 3
SMALL = dict(encoder=(16, 12), num_modules=5, width=8, top_k=2, router_hidden=(10, 10))


def small_net(seed: int = 0, dtype=torch.float32, **kw) -> D2RNet:
    torch.manual_seed(seed)
    net = D2RNet(IN, OUT, T, **{**SMALL, **kw})
    return net.to(dtype)


def inputs(batch: int, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, IN, generator=g, dtype=dtype)
    task = torch.randint(0, T, (batch,), generator=g)
    return x, task


def force_logits(net: D2RNet, flat: list[float] | torch.Tensor, noise: float = 0.0) -> None:
    """Make the router output (about) `flat` for every input: last layer bias = flat,
    last layer weight scaled by `noise` (0 = exactly `flat` everywhere)."""
    last = net.router[-1]
    with torch.no_grad():
        last.weight.mul_(noise)
        last.bias.copy_(torch.as_tensor(flat, dtype=last.bias.dtype))


def flat_logits(chunks: list[list[float]]) -> list[float]:
    """Node chunks (node 1 .. node N) -> the flat router output."""
    for n, c in enumerate(chunks, start=1):
        assert len(c) == n
    return [v for c in chunks for v in c]


def random_route(batch: int, n_mod: int, k: int, seed: int = 0) -> torch.Tensor:
    """A random well-formed route, written plainly."""
    g = torch.Generator().manual_seed(seed)
    route = torch.full((batch, n_mod, k), -1, dtype=torch.int64)
    for b in range(batch):
        for n in range(1, n_mod + 1):
            sel = torch.randperm(n, generator=g)[: min(k, n)]
            route[b, n - 1, : len(sel)] = sel
    return route


def grads(net: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in net.named_parameters()
    }


def reference_forward(net: D2RNet, x, task, route, resrouting: bool) -> torch.Tensor:
    """The plain reference's output, one sample at a time: nothing can mix samples."""
    plain = PlainD2RNet(net)
    return torch.cat([plain(x[b : b + 1], task[b : b + 1], route_mode="replayed", route=route[b : b + 1],
                            resrouting=resrouting)[0] for b in range(x.shape[0])])


def reference_greedy(net: D2RNet, x, task) -> list[torch.Tensor]:
    """The plain reference's greedy route of each sample, one sample at a time: [1, N, K] each."""
    plain = PlainD2RNet(net)
    return [plain(x[b : b + 1], task[b : b + 1], route_mode="greedy")[1] for b in range(x.shape[0])]


# ----------------------------------------------------------------------------------------------
# routes.py
# ----------------------------------------------------------------------------------------------


def test_route_shape_helpers():
    assert R.num_edges(16) == 136 and R.num_edges(5) == 15 and R.num_edges(1) == 1
    assert [R.candidates(n) for n in (1, 2, 5)] == [1, 2, 5]
    assert [R.num_selected(n, 2) for n in (1, 2, 5)] == [1, 2, 2]
    assert [R.chunk_offset(n) for n in (1, 2, 3, 4)] == [0, 1, 3, 6]
    assert R.padded_logit_index(3).tolist() == [[0, 6, 6], [1, 2, 6], [3, 4, 5]]
    assert R.padding_mask(3, 2).tolist() == [[False, True], [False, False], [False, False]]
    assert R.padding_mask(4, 3).tolist() == [
        [False, True, True],
        [False, False, True],
        [False, False, False],
        [False, False, False],
    ]
    assert R.chain_route(2, 4, 2).tolist() == [[[0, -1], [1, -1], [2, -1], [3, -1]]] * 2


# three hand-built routes, N=5, K=2 (row n-1 = node n; row 4 = the output)
HAND = torch.tensor(
    [
        # 0 <- ; 1 <- 0 ; 2 <- {0,1} ; 3 <- {1,0} ; 4 <- {3,2} ; out <- {0,2}
        [[0, -1], [0, 1], [1, 0], [3, 2], [0, 2]],
        # chain plus module 0 everywhere; out <- {4, 0}
        [[0, -1], [1, 0], [2, 0], [3, 0], [4, 0]],
        # out <- {1, 0}: everything above module 1 is skipped
        [[0, -1], [1, 0], [2, 1], [3, 2], [1, 0]],
    ]
)


def test_used_modules_and_depth_by_hand():
    # sample 0: out reads 0 and 2; 2 reads 0,1; 1 reads 0 -> used {0,1,2};
    #   depths: d0=1, d1=2, d2=3, d3=3, d4=4; out = max(d0, d2) = 3
    # sample 1: the chain is in the route -> all used, depth 5
    # sample 2: out reads 1, 0 -> used {0, 1}, depth 2
    assert R.used_modules(HAND).tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, True],
        [True, True, False, False, False],
    ]
    assert R.module_depths(HAND)[0].tolist() == [1, 2, 3, 3, 4]
    assert R.route_depth(HAND).tolist() == [3, 5, 2]


def test_depth_of_chain_and_of_output_reading_module0():
    for n_mod in (1, 5, 16):
        chain = R.chain_route(3, n_mod, 2)
        assert R.route_depth(chain).tolist() == [n_mod] * 3
        assert R.used_modules(chain).all()
    # K=1, the output reads module 0 alone: depth 1, only module 0 used
    r = R.chain_route(1, 4, 1)
    r[0, 3, 0] = 0
    assert R.route_depth(r).tolist() == [1]
    assert R.used_modules(r).tolist() == [[True, False, False, False]]
    # K=1, out <- 2 <- 0: modules 0 and 2 used, depth 2
    r = torch.tensor([[[0], [0], [1], [2]]])
    assert R.used_modules(r).tolist() == [[True, False, True, False]]
    assert R.route_depth(r).tolist() == [2]


def test_edge_frequency_by_hand():
    f = R.edge_frequency(HAND, 5)
    assert f.shape == (5, 5)
    expected_out = [1.0, 1 / 3, 1 / 3, 0.0, 1 / 3]  # out: {0,2}, {4,0}, {1,0}
    assert torch.allclose(f[4], torch.tensor(expected_out, dtype=f.dtype))
    assert f[0].tolist() == [1.0, 0, 0, 0, 0]
    # node 3 reads {1,0}, {2,0}, {2,1}
    assert torch.allclose(f[2], torch.tensor([2 / 3, 2 / 3, 2 / 3, 0, 0], dtype=f.dtype))
    assert torch.allclose(f[3], torch.tensor([1 / 3, 0, 2 / 3, 1.0, 0], dtype=f.dtype))
    assert torch.allclose(f.sum(1), torch.tensor([1.0, 2, 2, 2, 2], dtype=f.dtype))
    assert torch.all(f[torch.triu(torch.ones(5, 5), diagonal=1).bool()] == 0)  # j >= n


def test_route_functions_accept_numpy_and_int8():
    r8 = HAND.to(torch.int8)
    npr = HAND.numpy().astype(np.int8)
    assert R.route_depth(r8).tolist() == [3, 5, 2]
    d = R.route_depth(npr)
    assert isinstance(d, np.ndarray) and d.tolist() == [3, 5, 2]
    u = R.used_modules(npr)
    assert isinstance(u, np.ndarray) and u.dtype == bool
    assert np.array_equal(u, R.used_modules(HAND).numpy())
    f = R.edge_frequency(npr)
    assert isinstance(f, np.ndarray) and np.allclose(f, R.edge_frequency(HAND).numpy())


def _plain_depth_and_used(route_b: list[list[int]]) -> tuple[int, list[bool]]:
    n_mod = len(route_b)
    srcs = {n: [s for s in route_b[n - 1] if s >= 0] for n in range(1, n_mod + 1)}

    def depth_of_module(j: int) -> int:
        return 1 if j == 0 else 1 + max(depth_of_module(s) for s in srcs[j])

    used = [False] * n_mod
    stack = list(srcs[n_mod])
    while stack:
        j = stack.pop()
        if not used[j]:
            used[j] = True
            stack.extend(srcs[j] if j > 0 else [])
    return max(depth_of_module(j) for j in srcs[n_mod]), used


def test_route_functions_match_plain_recursion_on_random_routes():
    route = random_route(40, 7, 2, seed=3)
    depth, used = R.route_depth(route), R.used_modules(route)
    for b in range(40):
        d, u = _plain_depth_and_used(route[b].tolist())
        assert depth[b] == d and used[b].tolist() == u
    assert used[:, 0].all()  # every path extends back to module 0
    route = random_route(20, 6, 3, seed=4)
    for b in range(20):
        assert R.route_depth(route)[b] == _plain_depth_and_used(route[b].tolist())[0]


def test_check_route_rejects_bad_routes():
    R.check_route(HAND, 2)
    bad = HAND.clone()
    bad[0, 0, 1] = 0  # module 1 has one candidate: its second column must be -1
    with pytest.raises(ValueError):
        R.check_route(bad)
    bad = HAND.clone()
    bad[0, 2, 0] = 3  # module 3 cannot read module 3
    with pytest.raises(ValueError):
        R.check_route(bad)
    bad = HAND.clone()
    bad[0, 4] = torch.tensor([2, 2])  # duplicate source
    with pytest.raises(ValueError):
        R.check_route(bad)
    with pytest.raises(ValueError):
        R.check_route(HAND, 3)


# ----------------------------------------------------------------------------------------------
# D2RNet: route selection
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("mode", ["greedy", "sampled", "replayed"])
def test_selection_sizes_and_padding(mode, top_k):
    net = small_net(top_k=top_k)
    x, task = inputs(32)
    replay = random_route(32, 5, top_k, seed=5) if mode == "replayed" else None
    out, route = net(x, task, route_mode=mode, route=replay, temperature=torch.ones(T))
    assert out.shape == (32, OUT)
    assert route.shape == (32, 5, top_k) and route.dtype == torch.int64
    assert net.route_shape == (5, top_k) and net.routed
    for n in range(1, 6):
        k = min(top_k, n)
        row = route[:, n - 1]
        assert torch.all(row[:, k:] == -1)
        assert torch.all((row[:, :k] >= 0) & (row[:, :k] < n))
    R.check_route(route, top_k)  # also: no duplicate source in a row
    if mode == "replayed":
        assert torch.equal(route, replay)


def test_greedy_route_is_topk_of_each_chunk():
    net = small_net()
    x, task = inputs(16)
    _, route = net(x, task, route_mode="greedy")
    chunks = net.router_logits(x, task)
    assert [c.shape[1] for c in chunks] == [1, 2, 3, 4, 5]
    for b, expected in enumerate(reference_greedy(net, x, task)):
        assert torch.equal(route[b : b + 1], expected)  # the k largest, in order, then -1
        # and the reference's chunks equal router_logits' chunks
        _, ref_chunks = PlainD2RNet(net).logit_chunks(x[b : b + 1], task[b : b + 1])
        for n in range(1, 6):
            assert torch.allclose(chunks[n - 1][b], ref_chunks[n - 1][0], atol=1e-6)


def test_weights_are_softmax_of_selected_logits_by_hand():
    net = small_net()
    # node 3 scores its sources 0,1,2 with 0.5, 2.0, 1.0 -> greedy {1, 2}
    chunks = [[0.3], [0.1, -0.2], [0.5, 2.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0] * 5]
    force_logits(net, flat_logits(chunks))
    x, task = inputs(4)
    _, route = net(x, task, route_mode="greedy")
    zsq = net.padded_logits(x, task)
    w = net.route_weights(net.logits(x, task), route)
    assert zsq[0, 2].tolist() == [0.5, 2.0, 1.0, -math.inf, -math.inf]
    assert route[0, 2].tolist() == [1, 2]
    e2, e1 = math.exp(2.0), math.exp(1.0)
    assert torch.allclose(w[0, 2], torch.tensor([e2 / (e2 + e1), e1 / (e2 + e1)]), atol=1e-6)
    # the unselected source 0 (logit 0.5) and the temperature play no part; module 1: weight 1
    assert w[0, 0].tolist() == [1.0, 0.0]
    # node 2 selects both: softmax(0.1, -0.2) in the greedy order
    a, b = math.exp(0.1), math.exp(-0.2)
    assert route[0, 1].tolist() == [0, 1]
    assert torch.allclose(w[0, 1], torch.tensor([a / (a + b), b / (a + b)]), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(4, 5))
    # a replayed route that includes the unselected source 0 of node 3: weights over {0, 2}
    replay = route.clone()
    replay[:, 2] = torch.tensor([0, 2])
    w = net.route_weights(net.logits(x, task), replay)
    e0 = math.exp(0.5)
    assert torch.allclose(w[0, 2], torch.tensor([e0 / (e0 + e1), e1 / (e0 + e1)]), atol=1e-6)


def test_sampled_low_temperature_equals_greedy_and_per_task_temperature():
    net = small_net()
    x, task = inputs(64)
    _, greedy = net(x, task, route_mode="greedy")
    torch.manual_seed(0)
    _, sampled = net(x, task, route_mode="sampled", temperature=torch.full((T,), 1e-8))
    assert torch.equal(sampled, greedy)

    # one input repeated: task 0 hot (T=100, near uniform), task 1 cold (T=1e-8, greedy)
    x1 = x[:1].expand(400, -1)
    task = torch.arange(400) % 2
    temp = torch.tensor([100.0, 1e-8, 1.0])
    _, greedy = net(x1, task, route_mode="greedy")
    torch.manual_seed(1)
    _, sampled = net(x1, task, route_mode="sampled", temperature=temp)
    cold, hot = task == 1, task == 0
    assert torch.equal(sampled[cold], greedy[cold])
    differs = (sampled[hot] != greedy[hot]).flatten(1).any(1)
    assert differs.float().mean() > 0.9  # 4 nodes with >= 3 candidates, near-uniform draws
    assert len({tuple(r.flatten().tolist()) for r in sampled[hot]}) > 100


def test_sampled_is_seeded_by_torch_global_rng():
    net = small_net()
    x, task = inputs(64)
    temp = torch.ones(T)
    torch.manual_seed(123)
    _, a = net(x, task, route_mode="sampled", temperature=temp)
    torch.manual_seed(123)
    _, b = net(x, task, route_mode="sampled", temperature=temp)
    _, c = net(x, task, route_mode="sampled", temperature=temp)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampled_is_k_draws_without_replacement_from_tempered_softmax():
    """P(first i, then j) = q_i q_j / (1 - q_i), q = softmax(z / T) (Plackett-Luce)."""
    net = small_net(top_k=2)
    z3 = [0.0, 1.0, 2.0]  # node 3 (3 candidates)
    chunks = [[0.0], [0.0, 0.0], z3, [0.0] * 4, [0.0] * 5]
    force_logits(net, flat_logits(chunks))
    n = 40000
    x = torch.zeros(n, IN)
    task = torch.arange(n) % 2
    temp = torch.tensor([1.0, 2.0, 1.0])
    torch.manual_seed(7)
    _, route = net(x, task, route_mode="sampled", temperature=temp)
    R.check_route(route)
    for t, tau in ((0, 1.0), (1, 2.0)):
        rows = route[task == t, 2]
        q = torch.softmax(torch.tensor(z3) / tau, 0).tolist()
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                expected = q[i] * q[j] / (1 - q[i])
                freq = ((rows[:, 0] == i) & (rows[:, 1] == j)).float().mean().item()
                assert abs(freq - expected) < 0.02, (t, i, j, freq, expected)


# ----------------------------------------------------------------------------------------------
# D2RNet: forward pass
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_stored_route_replays_the_same_output(mode):
    net = small_net()
    x, task = inputs(32)
    torch.manual_seed(0)
    out, route = net(x, task, route_mode=mode, temperature=torch.full((T,), 3.0))
    # replayed from the replay buffer's int8 copy
    again, r2 = net(x, task, route_mode="replayed", route=route.to(torch.int8))
    assert torch.equal(again, out)
    assert torch.equal(r2, route)
    again_rr, _ = net(x, task, route_mode="replayed", route=route, resrouting=True)
    assert torch.equal(again_rr, out)  # ResRouting changes gradients, not values


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("resrouting", [False, True])
@pytest.mark.parametrize("mode", ["greedy", "sampled", "replayed"])
def test_matches_plain_reference_outputs_and_gradients(mode, resrouting, capturable):
    """Both module stacks: the default (embedding_bag, pulled gradients) and the capturable one
    (index_select, pushed gradients; the update with cuda_graphs on)."""
    # PyTorch's initialisation (the release's gives the router's logits one bias of 0.1): spread
    # the logits so edges are both trusted and not
    net = small_net(seed=2, dtype=torch.float64, init="torch")
    net.capturable = capturable
    with torch.no_grad():
        net.router[-1].weight.mul_(8.0)
    x, task = inputs(12, seed=3, dtype=torch.float64)
    replay = random_route(12, 5, 2, seed=9) if mode == "replayed" else None
    torch.manual_seed(0)
    out, route = net(
        x, task, route_mode=mode, route=replay, temperature=torch.tensor([0.5, 1.0, 4.0]),
        resrouting=resrouting,
    )
    if mode == "greedy":
        assert torch.equal(route, torch.cat(reference_greedy(net, x, task)))
    if mode == "sampled":  # the reference draws the same route from the same random stream
        torch.manual_seed(0)
        _, ref_route = PlainD2RNet(net)(x, task, route_mode="sampled", temperature=torch.tensor([0.5, 1.0, 4.0]))
        assert torch.equal(route, ref_route)
    g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    (out * g_out).sum().backward()
    fast = grads(net)
    net.zero_grad()
    ref = reference_forward(net, x, task, route, resrouting)
    (ref * g_out).sum().backward()
    slow = grads(net)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    batched, _ = PlainD2RNet(net)(x, task, route_mode="replayed", route=route, resrouting=resrouting)
    torch.testing.assert_close(batched, ref, rtol=1e-10, atol=1e-10)  # as the bench calls it
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-8, atol=1e-10, msg=name)
    if resrouting:  # the case exercised both kinds of edge
        zsq = net.padded_logits(x, task)
        m = net.trusted_mask(zsq, route)[~net._pad.expand_as(route)]
        assert m.any() and not m.all()


def test_large_batch_gives_the_gradients_of_its_pieces():
    """Past 32,767 module rows (N * B) the backward sorts its edges on int32 keys instead of
    int16: the whole batch must give the sum of the gradients of its pieces."""
    net = small_net(seed=2, dtype=torch.float64)
    with torch.no_grad():  # trusted and untrusted edges both
        net.router[-1].weight.mul_(8.0)
    batch, piece = 6600, 1100  # 5 * 6600 = 33,000 rows; 5 * 1100 = 5,500
    x, task = inputs(batch, seed=3, dtype=torch.float64)
    torch.manual_seed(0)
    _, route = net(x, task, route_mode="sampled", temperature=torch.ones(T))
    g_out = torch.randn(batch, OUT, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kw = dict(route_mode="replayed", resrouting=True)
    (net(x, task, route=route, **kw)[0] * g_out).sum().backward()
    whole = grads(net)
    net.zero_grad()
    for s in range(0, batch, piece):
        part = slice(s, s + piece)
        (net(x[part], task[part], route=route[part], **kw)[0] * g_out[part]).sum().backward()
    for name, g in grads(net).items():
        torch.testing.assert_close(whole[name], g, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("frozen_modules,y0_grad", [(False, True), (True, True), (True, False)])
def test_module_stack_backward_passes_gradcheck(frozen_modules, y0_grad, capturable):
    """The hand-written backward of the module stack against finite differences (plain routing;
    ResRouting's stop-gradients are checked against the reference above). Frozen module weights
    (the Qs inside the actor's loss) must not change the gradients of the inputs, and the mixing
    weights get their whole gradient when module 0's output needs none."""
    g = torch.Generator().manual_seed(0)
    batch, n_mod, k, width = 5, 4, 2, 3
    route = random_route(batch, n_mod, k, seed=1)
    y0 = torch.randn(batch, width, dtype=torch.float64, generator=g).requires_grad_(y0_grad)
    logits = torch.randn(batch, n_mod, k, dtype=torch.float64, generator=g).masked_fill(route < 0, -math.inf)
    w = torch.softmax(logits, -1).requires_grad_()
    params = [torch.randn(width, width, dtype=torch.float64, generator=g) for _ in range(n_mod - 1)]
    params += [torch.randn(width, dtype=torch.float64, generator=g) for _ in range(n_mod - 1)]
    for p in params:
        p.requires_grad_(not frozen_modules)

    def stack(y0, w, *params):
        return RoutedModuleStack.apply(y0, w, route, None, True, capturable, *params)

    assert torch.autograd.gradcheck(stack, (y0, w, *params))


@pytest.mark.parametrize("resrouting", [False, True])
def test_no_grad_forward_gives_the_output_recorded_with_a_graph(resrouting):
    """Under no_grad the module stack frees each module's temporaries at once (a separate code
    path): the output must be the one recorded with a graph, and no graph must be recorded."""
    net = small_net(seed=7)
    x, task = inputs(9, seed=8)
    route = random_route(9, SMALL["num_modules"], SMALL["top_k"], seed=2)
    kw = dict(route_mode="replayed", route=route, resrouting=resrouting)
    with torch.no_grad():
        out_nograd, _ = net(x, task, **kw)
    out, _ = net(x, task, **kw)
    assert out_nograd.grad_fn is None and out.grad_fn is not None
    torch.testing.assert_close(out_nograd, out.detach(), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# ResRouting and gradients
# ----------------------------------------------------------------------------------------------

# N=4, a replayed route. Module 2 is read only by the output, through an edge the current
# router does not trust; module 1 is read only by module 2; module 3 is unused.
#   1 <- 0 ;  2 <- {0,1} ;  3 <- {0,2} ;  out <- {2,0}
# output logits (3, -3, -1, -3): p_2 = e^-1 / (e^3 + 2 e^-3 + e^-1) = 0.018 <= 1/5 -> untrusted;
# p_0 = 0.98 -> trusted. Module 2's logits (0, 0): p = 1/2 > 1/3, both trusted. Module 3's
# logits (3, -3, -1): its edge from module 2 is untrusted too (p = 0.018 <= 1/4).
OUT_UNTRUSTED_ROUTE = torch.tensor([[[0, -1], [0, 1], [0, 2], [2, 0]]])
OUT_UNTRUSTED_LOGITS = flat_logits([[0.0], [0.0, 0.0], [3.0, -3.0, -1.0], [3.0, -3.0, -1.0, -3.0]])

# The same, except that the untrusted edge 2 -> 3 feeds a module that the output reads:
#   1 <- 0 ;  2 <- {0,1} ;  3 <- {0,2} ;  out <- {3,0}      (output logits (2, -1, -1, 2))
MID_UNTRUSTED_ROUTE = torch.tensor([[[0, -1], [0, 1], [0, 2], [3, 0]]])
MID_UNTRUSTED_LOGITS = flat_logits([[0.0], [0.0, 0.0], [3.0, -3.0, -1.0], [2.0, -1.0, -1.0, 2.0]])


def _forced_case(route, logits, resrouting: bool):
    net = small_net(seed=4, num_modules=4)
    force_logits(net, logits, noise=1e-2)
    x, task = inputs(8, seed=5)
    route = route.expand(8, -1, -1)
    out, _ = net(x, task, route_mode="replayed", route=route, resrouting=resrouting)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (out * g).sum().backward()
    zsq = net.padded_logits(x, task)
    return net, out, net.trusted_mask(zsq, route)


def _nonzero(t: torch.Tensor) -> bool:
    return bool(t.abs().sum() > 0)


def test_resrouting_untrusted_edge_freezes_the_source_module_only():
    net, out_rr, mask = _forced_case(OUT_UNTRUSTED_ROUTE, OUT_UNTRUSTED_LOGITS, resrouting=True)
    # the mask computed by hand: edges 2 -> 3 (row 2, col 1) and 2 -> out (row 3, col 0) untrusted
    expected = torch.tensor([[True, False], [True, True], [True, False], [False, True]])
    assert torch.equal(mask, expected.expand(8, -1, -1))
    # module 2's own weights W_2, b_2: exactly zero gradient
    assert torch.count_nonzero(net.layers[2].weight.grad) == 0
    assert torch.count_nonzero(net.layers[2].bias.grad) == 0
    # but its source, module 1 (reached only through module 2's shortcut), gets one,
    assert _nonzero(net.layers[1].weight.grad) and _nonzero(net.layers[1].bias.grad)
    assert _nonzero(net.layers[0].weight.grad) and _nonzero(net.head.weight.grad)
    assert torch.count_nonzero(net.layers[3].weight.grad) == 0  # unused module
    # and so does the router, including the logit of the untrusted edge 2 -> out
    assert net.router[-1].bias.grad[R.chunk_offset(4) + 2] != 0
    assert net.router[-1].bias.grad[R.chunk_offset(2) + 1] != 0  # module 2's weights w
    assert all(_nonzero(p.grad) for p in net.router.parameters())
    assert _nonzero(net.task_embed.weight.grad)

    plain, out_plain, _ = _forced_case(OUT_UNTRUSTED_ROUTE, OUT_UNTRUSTED_LOGITS, resrouting=False)
    assert torch.equal(out_rr, out_plain)  # y_hat = sg(y) numerically: same forward value
    assert _nonzero(plain.layers[2].weight.grad)  # without ResRouting module 2 learns
    assert not torch.allclose(plain.layers[1].weight.grad, net.layers[1].weight.grad)
    assert not torch.allclose(plain.router[-1].bias.grad, net.router[-1].bias.grad)


def test_resrouting_untrusted_edge_into_a_module_keeps_that_modules_shortcut():
    """Spec section 2 as written (and as the release's code does it): r_i = sum w_j y_j uses
    the ordinary stream, so an untrusted edge j -> i only stops the gradient that passes
    through W_i; module j still learns from module i's shortcut."""
    net, out_rr, mask = _forced_case(MID_UNTRUSTED_ROUTE, MID_UNTRUSTED_LOGITS, resrouting=True)
    assert not mask[:, 2, 1].any() and mask[:, 3].all()
    plain, out_plain, _ = _forced_case(MID_UNTRUSTED_ROUTE, MID_UNTRUSTED_LOGITS, resrouting=False)
    assert torch.equal(out_rr, out_plain)
    g_rr, g_plain = net.layers[2].weight.grad, plain.layers[2].weight.grad
    assert _nonzero(g_rr) and not torch.allclose(g_rr, g_plain)
    # module 3's own weights and everything downstream of it are unaffected
    for name in ("layers.3.weight", "layers.3.bias", "head.weight", "head.bias"):
        torch.testing.assert_close(grads(net)[name], grads(plain)[name], rtol=1e-5, atol=1e-7)


def test_resrouting_with_all_edges_trusted_equals_plain_forward():
    # for each node two high logits (selected by greedy, p ~ 1/2 > 1/(c+1)), the rest low
    g = torch.Generator().manual_seed(8)
    chunks = []
    for n in range(1, 6):
        c = [-3.0] * n
        for j in torch.randperm(n, generator=g)[:2].tolist():
            c[j] = 3.0
        chunks.append(c)
    results = []
    for resrouting in (False, True):
        net = small_net(seed=5)
        force_logits(net, flat_logits(chunks), noise=1e-2)
        x, task = inputs(16, seed=6)
        out, route = net(x, task, route_mode="greedy", resrouting=resrouting)
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        zsq = net.padded_logits(x, task)
        assert net.trusted_mask(zsq, route)[~net._pad.expand_as(route)].all()
        results.append((out, route, grads(net)))
    (o0, r0, g0), (o1, r1, g1) = results
    assert torch.equal(r0, r1) and torch.equal(o0, o1)
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], rtol=1e-5, atol=1e-7, msg=name)


def test_no_straight_through_estimator():
    net = small_net()
    chunks = [[0.0], [0.2, -0.1], [0.5, 2.0, 1.0], [1.0, 0.0, -1.0, 0.5], [0.3, 0.1, 0.0, 2.0, 1.0]]
    force_logits(net, flat_logits(chunks))  # identical logits for all samples
    x, task = inputs(16)
    out, route = net(x, task, route_mode="greedy")
    assert not route.requires_grad and route.dtype == torch.int64
    assert torch.equal(route, route[:1].expand_as(route))  # one route for all samples
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    bias_grad = net.router[-1].bias.grad
    for n in range(1, 6):
        sel = set(route[0, n - 1].tolist()) - {-1}
        for j in range(n):
            gj = bias_grad[R.chunk_offset(n) + j]
            if j not in sel or len(sel) == 1:
                assert gj == 0, (n, j)  # unselected edge or a lone source: weight constant
            else:
                assert gj != 0, (n, j)  # selected edges learn through the weights w
        # softmax over the selected: the gradients of a node's selected logits sum to 0
        assert abs(sum(bias_grad[R.chunk_offset(n) + j] for j in sel)) < 1e-6


def test_resrouting_and_routes_under_sampled_mode():
    """ResRouting also applies to a sampled route (the Q update of spec section 4)."""
    net = small_net(seed=2, dtype=torch.float64)
    with torch.no_grad():
        net.router[-1].weight.mul_(8.0)
    x, task = inputs(10, seed=3, dtype=torch.float64)
    torch.manual_seed(3)
    out, route = net(x, task, route_mode="sampled", temperature=torch.ones(T) * 2, resrouting=True)
    out.sum().backward()
    fast = grads(net)
    net.zero_grad()
    reference_forward(net, x, task, route, True).sum().backward()
    for name, g in grads(net).items():
        torch.testing.assert_close(fast[name], g, rtol=1e-8, atol=1e-10, msg=name)


# ----------------------------------------------------------------------------------------------
# Fixed depth, depth of the net's routes, paper size
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["greedy", "sampled", "replayed"])
def test_fixed_depth_is_the_chain(mode):
    net = small_net(fixed_depth=True)
    assert net.router is None and net.task_embed is None
    x, task = inputs(8)
    replay = random_route(8, 5, 2) if mode == "replayed" else None
    out, route = net(x, task, route_mode=mode, route=replay, temperature=torch.ones(T), resrouting=True)
    assert torch.equal(route, R.chain_route(8, 5, 2))
    assert R.route_depth(route).tolist() == [5] * 8
    # by hand: y0 = relu(W0 relu(h)); y_n = relu(W_n y_{n-1}) + y_{n-1}; out = head(y4)
    h = net.encoder(x)
    y = torch.relu(net.layers[0](torch.relu(h)))
    for n in range(1, 5):
        y = torch.relu(net.layers[n](y)) + y
    assert torch.allclose(out, net.head(y), atol=1e-6)


def test_depth_and_usage_of_the_nets_routes():
    net = small_net()
    x, task = inputs(64)
    torch.manual_seed(0)
    _, route = net(x, task, route_mode="sampled", temperature=torch.full((T,), 5.0))
    depth, used = R.route_depth(route), R.used_modules(route)
    assert depth.shape == (64,) and used.shape == (64, 5)
    assert torch.all((depth >= 1) & (depth <= 5)) and used[:, 0].all()
    assert torch.all(depth <= used.sum(1))  # the longest path only visits used modules
    for b in range(64):
        d, u = _plain_depth_and_used(route[b].tolist())
        assert depth[b] == d and used[b].tolist() == u


def test_paper_size_shapes():
    torch.manual_seed(0)
    net = D2RNet(39, 8, 10)  # defaults: encoder 400-400, 16 x 128, top-2, router 256-256
    assert net.route_shape == (16, 2)
    assert net.router[-1].out_features == 136 and net.router[0].in_features == 400
    assert net.task_embed.in_features == 10 and net.task_embed.out_features == 400
    assert len(net.layers) == 16 and net.layers[0].in_features == 400
    assert all(l.in_features == l.out_features == 128 for l in net.layers[1:])
    x = torch.randn(6, 39)
    task = torch.tensor([0, 1, 2, 7, 8, 9])
    chunks = net.router_logits(x, task)
    assert [c.shape for c in chunks] == [(6, n) for n in range(1, 17)]
    out, route = net(x, task, route_mode="sampled", temperature=torch.ones(10))
    assert out.shape == (6, 8) and route.shape == (6, 16, 2)
    assert torch.all(route[:, 0, 1] == -1) and torch.all(route[:, 0, 0] == 0)
    R.check_route(route, 2)
    out2, _ = net(x, task, route_mode="replayed", route=route.to(torch.int8), resrouting=True)
    assert torch.equal(out, out2)
    out2.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert R.edge_frequency(route).shape == (16, 16)


def test_bad_arguments():
    net = small_net()
    x, task = inputs(4)
    with pytest.raises(ValueError):
        net(x, task, route_mode="replayed")
    with pytest.raises(ValueError):
        net(x, task, route_mode="replayed", route=torch.zeros(4, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        net(x, task, route_mode="bogus")
    with pytest.raises(ValueError):
        D2RNet(IN, OUT, T, num_modules=3, top_k=4)
