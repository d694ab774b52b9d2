"""The update on a CUDA device (skipped without one): every method's update on CUDA equals the CPU
update on the same batch (cuda_graphs off, and the capturable update run eagerly), the capturable
update makes no host synchronisation, the CUDA-graph update (cuda_graphs on) equals the eager
one, a seed group's stacked graph update equals each seed's eager update, and collection on its
own stream during graph replays equals collection alone.
benchmarks/gpu_check.sh runs this file on a GPU machine."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import ACTION, CASES, SAC, STATE, TASKS, filled_buffer

from d2r.runtime.seeding import SeedGenerators
from d2r.sac.agent import MultiTaskSAC
from d2r.sac.replay import TaskReplayBuffer
from d2r.sac.stacked import StackedSAC

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """No TF32 matrix products: the CPU comparison is of float32 against float32 (the default)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def agent(case: str, device, cuda_graphs: str = "off") -> MultiTaskSAC:
    method, order = CASES[case]
    torch.manual_seed(0)  # initialised on the CPU, then moved: the same weights on every device
    return MultiTaskSAC(method, dataclasses.replace(SAC, update_order=order, cuda_graphs=cuda_graphs),
                        STATE, ACTION, TASKS, device)


def batches(case: str, n: int, seed: int = 0) -> list:
    buf = filled_buffer(agent(case, "cpu"), steps=30, seed=seed)
    return [buf.sample(8) for _ in range(n)]


def to(batch, device):
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name).to(device) for f in dataclasses.fields(batch)
                                         if getattr(batch, f.name) is not None})


def host_noise(monkeypatch, seed: int) -> None:
    """The update's random draws (actions, Gumbel route noise) made on the CPU from one seeded
    generator and copied to the device: the same numbers on either device."""
    noise = torch.Generator().manual_seed(seed)
    randn, uniform_ = torch.randn, torch.Tensor.uniform_

    def host_randn(*size, generator=None, device=None, dtype=None, **kwargs):
        shape = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
        return randn(shape, generator=noise, dtype=dtype).to(device)

    def host_uniform_(self, a=0.0, b=1.0, *, generator=None):
        return self.copy_(uniform_(torch.empty(self.shape, dtype=self.dtype), a, b, generator=noise))

    monkeypatch.setattr(torch, "randn", host_randn)
    monkeypatch.setattr(torch.Tensor, "uniform_", host_uniform_)


def assert_same_state(a: MultiTaskSAC, b: MultiTaskSAC, rtol: float, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        torch.testing.assert_close(sa[key].cpu(), sb[key].cpu(), rtol=rtol, atol=atol, msg=key)


@pytest.mark.parametrize("case", list(CASES))
def test_update_on_cuda_equals_the_cpu_update(case, monkeypatch):
    batch = batches(case, 1)[0]
    cpu, cuda, capturable = agent(case, "cpu"), agent(case, CUDA), agent(case, CUDA, "on")
    results = {}
    for name, a, update in (("cpu", cpu, cpu.update), ("cuda", cuda, cuda.update),
                            ("cuda capturable", capturable, capturable._update)):  # (eager: no graph)
        with monkeypatch.context() as patch:
            host_noise(patch, seed=1)
            results[name] = {k: v.cpu() for k, v in update(to(batch, a.device)).items()}
    for name in ("cuda", "cuda capturable"):
        for key, value in results["cpu"].items():
            torch.testing.assert_close(results[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
    assert_same_state(cuda, cpu, rtol=1e-4, atol=1e-5)
    assert_same_state(capturable, cpu, rtol=1e-4, atol=1e-5)
    assert capturable.pop_fault() is None


@pytest.mark.parametrize("case", list(CASES))
def test_capturable_update_makes_no_host_synchronisation(case):
    a = agent(case, CUDA, "on")
    data = [to(b, CUDA) for b in batches(case, 2)]
    a._update(data[0])  # the optimisers' moments are made lazily in the first step
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a._update(data[1])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert a.pop_fault() is None


@pytest.mark.parametrize("case", list(CASES))
def test_cuda_graph_update_equals_the_eager_update(case):
    """Three eager warm-up updates, one captured (and replayed), then replays; against the same
    capturable update run eagerly from the same state and CUDA generator."""
    graphed, eager = agent(case, CUDA, "on"), agent(case, CUDA, "on")
    data = [to(b, CUDA) for b in batches(case, 7)]
    stats = {}
    for name, update in (("graph", graphed.update), ("eager", eager._update)):
        torch.manual_seed(2)
        stats[name] = [{k: v.cpu() for k, v in update(b).items()} for b in data]
    assert graphed._graphed is not None and graphed._graphed.graph is not None
    for step, (s_graph, s_eager) in enumerate(zip(stats["graph"], stats["eager"]), start=1):
        for key in s_eager:
            torch.testing.assert_close(s_graph[key], s_eager[key], rtol=1e-5, atol=1e-6, msg=f"update {step}: {key}")
    assert_same_state(graphed, eager, rtol=1e-5, atol=1e-6)
    assert graphed.pop_fault() is None and eager.pop_fault() is None


@pytest.mark.parametrize("case", ["d2r", "mtsac", "moe"])
def test_a_stacked_groups_cuda_graph_update_equals_its_solo_eager_updates(case):
    """Three seeds' update stacked (d2r.sac.stacked) and captured as one CUDA graph, its noise drawn
    before each replay from each seed's generator: each seed as its own capturable update run
    eagerly from the same state and CUDA generator state."""
    def seeds():
        agents = []
        for seed in range(3):
            torch.manual_seed(seed)
            method, order = CASES[case]
            agents.append(MultiTaskSAC(method, dataclasses.replace(SAC, update_order=order, cuda_graphs="on"),
                                       STATE, ACTION, TASKS, CUDA))
        return agents

    grouped, alone = seeds(), seeds()
    data = [[to(b, CUDA) for b in batches(case, 7, seed)] for seed in range(3)]
    stack = StackedSAC(grouped)
    generators = SeedGenerators(torch.Generator(CUDA).manual_seed(10 + seed) for seed in range(3))
    for step in range(7):
        stack.update_seeds([d[step] for d in data], generators)
    assert stack._graphed is not None and stack._graphed.graph is not None
    for seed, agent in enumerate(alone):
        with torch.random.fork_rng(devices=[CUDA]):
            torch.cuda.manual_seed(10 + seed)
            for step in range(7):
                agent._update(data[seed][step])
            assert torch.equal(torch.cuda.get_rng_state(), generators[seed].get_state())
        assert_same_state(grouped[seed], agent, rtol=1e-5, atol=1e-6)
        assert grouped[seed].pop_fault() is None and agent.pop_fault() is None


def test_cuda_graph_update_records_a_fault_of_its_replay():
    a = agent("d2r", CUDA, "on")
    data = [to(b, CUDA) for b in batches("d2r", 7)]
    for b in data[:5]:  # 3 warm-up updates, the capture, a replay
        a.update(b)
    assert a.pop_fault() is None
    with torch.no_grad():  # in place: the graph reads this memory
        dict(a.q2.named_parameters())["head.weight"][0, 0] = float("nan")
    a.update(data[5])
    a.update(data[6])
    err = a.pop_fault()
    assert (err.update, err.quantity, err.network, err.detail) == (1, "parameter", "q2", "q2.head.weight")


def test_cuda_replay_samples_the_cpu_replays_batches():
    cpu = TaskReplayBuffer(TASKS, 20, STATE, ACTION, (4, 2), seed=3)
    cuda = TaskReplayBuffer(TASKS, 20, STATE, ACTION, (4, 2), seed=3, device=CUDA)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        step = (torch.randn(TASKS, STATE, generator=g), torch.randn(TASKS, ACTION, generator=g),
                torch.rand(TASKS, generator=g), torch.randn(TASKS, STATE, generator=g),
                torch.rand(TASKS, generator=g) < 0.2, torch.randint(-1, 4, (TASKS, 4, 2), generator=g))
        cpu.add(*step)
        cuda.add(*(t.to(CUDA) for t in step))
    for _ in range(3):
        a, b = cpu.sample(5), cuda.sample(5)
        for f in dataclasses.fields(a):
            assert torch.equal(getattr(a, f.name), getattr(b, f.name).cpu()), f.name


def test_collection_on_its_own_stream_while_graph_updates_replay_equals_collection_alone():
    """The collector's episode on its stream, overlapped with the warm-up, capture and replays of
    CUDA-graph updates on the learner's, equals the episode collected with nothing else running
    (the same policy snapshot, generator and env streams), and the learner reads it whole."""
    from d2r import envs as mw
    from d2r.sac.collect import Collector

    tasks = ["reach", "push"]
    a = MultiTaskSAC(CASES["d2r"][0], dataclasses.replace(SAC, cuda_graphs="on"), mw.STATE_DIM, mw.ACTION_DIM,
                     len(tasks), CUDA)
    collectors = [Collector(a, mw.make_task_envs(tasks, seed=0, max_episode_steps=30), CUDA, seed=0,
                            cut_on_truncation=True) for _ in range(2)]
    try:
        alone = collectors[0].run()
        buf = TaskReplayBuffer(len(tasks), 50, mw.STATE_DIM, mw.ACTION_DIM, a.policy.net.route_shape, seed=0,
                               device=CUDA)
        for transition in alone.transitions:
            buf.add(*transition)
        collectors[1].start()
        for _ in range(20):
            a.update(buf.sample(8))
        overlapped = collectors[1].join()
    finally:
        for c in collectors:
            c.envs.close()
    assert a._graphed.graph is not None and a.pop_fault() is None
    assert (overlapped.success == alone.success).all() and len(overlapped.transitions) == len(alone.transitions) == 30
    for step, (x, y) in enumerate(zip(overlapped.transitions, alone.transitions)):
        for name, u, v in zip(("state", "action", "reward", "next_state", "done", "route"), x, y):
            assert torch.equal(u.cpu(), v.cpu()), f"step {step}: {name}"
