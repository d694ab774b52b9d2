"""Seeds of a group updated together, their weights stacked along a seed dimension (issue 31,
`group_update: stacked`, d2r.sac.stacked): each seed's update is its solo update to float rounding
(its parameters, optimiser moments, temperatures and random stream), a seed's checkpoint is its own
size, a stacked group trains each seed as alone (identical logs at a small budget), a signal stops
and the rerun resumes it, and a seed with a non-finite gradient ends alone."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import signal
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    ACTION,
    CASES,
    SAC,
    SMALL_D2R,
    STATE,
    TASKS,
    d2r_method,
    filled_buffer,
    refuse_host_reads,
    tiny_params,
    without_timing,
)

from d2r import cli
from d2r import envs as mw
from d2r.config import MethodConfig, load_params
from d2r.runtime.checkpoint import save_model
from d2r.runtime.seeding import SeedGenerators
from d2r.sac import group as group_module
from d2r.sac import stacked as stacked_module
from d2r.sac.agent import MultiTaskSAC
from d2r.sac.collect import Collector, collect_together
from d2r.sac.group import SeedGroup, resolve_group_update
from d2r.sac.stacked import StackedSAC, can_stack
from d2r.sac.training import Trainer

SEEDS, UPDATES = 3, 5
#: every network kind and update order (D2R with ResRouting, without, on the current path, at fixed depth)
STACKED_CASES = {**CASES,
                 "d2r-no-resrouting": (d2r_method(resrouting=False), "joint"),
                 "d2r-fixed-depth": (MethodConfig(name="d2r", net="d2r", net_args={**SMALL_D2R, "fixed_depth": True},
                                                  resrouting=False, route_balance=False), "joint")}
#: relative difference allowed between a seed's stacked and solo weights after UPDATES updates (float32);
#: the Adam moments (running gradients) keep the gradients' rounding: ten times that
RTOL = 1e-6


def seed_agents(case: str, cuda_graphs: str = "off") -> list[MultiTaskSAC]:
    method, order = STACKED_CASES[case]
    sac = dataclasses.replace(SAC, update_order=order, cuda_graphs=cuda_graphs)
    agents = []
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        agents.append(MultiTaskSAC(method, sac, STATE, ACTION, TASKS))
    return agents


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-12))


def optimiser_moments(agent: MultiTaskSAC) -> list[torch.Tensor]:
    return [state[key] for optim in (agent.policy_optim, agent.q_optim, agent.alpha_optim)
            for state in optim.state.values() for key in ("exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize("case, cuda_graphs", [(c, "off") for c in STACKED_CASES] + [("d2r", "on")])
def test_a_stacked_update_is_each_seeds_own_update_to_rounding(case, cuda_graphs):
    agents = seed_agents(case, cuda_graphs)
    batches = [[buf.sample(8) for _ in range(UPDATES)] for buf in
               (filled_buffer(agent, steps=30, seed=seed) for seed, agent in enumerate(agents))]
    solo, solo_stats, solo_streams = [copy.deepcopy(agent) for agent in agents], [], []
    for seed, agent in enumerate(solo):
        torch.manual_seed(100 + seed)
        solo_stats.append([agent.update(batch) for batch in batches[seed]])
        solo_streams.append(torch.get_rng_state())

    assert can_stack(agents)
    stack = StackedSAC(agents)
    generators = SeedGenerators(torch.Generator().manual_seed(100 + seed) for seed in range(SEEDS))
    stacked_stats = [stack.update_seeds([b[i] for b in batches], generators) for i in range(UPDATES)]

    for seed in range(SEEDS):
        got, want = agents[seed].state_dict(), solo[seed].state_dict()  # every network, log_alpha, temperature
        for key in want:
            assert relative_difference(want[key], got[key]) <= RTOL, (seed, key)
        for got_moment, want_moment in zip(optimiser_moments(agents[seed]), optimiser_moments(solo[seed]), strict=True):
            assert relative_difference(want_moment, got_moment) <= 10 * RTOL
        for got_update, want_update in zip((s[seed] for s in stacked_stats), solo_stats[seed], strict=True):
            assert got_update.keys() == want_update.keys()
            for key in want_update:
                assert float(got_update[key]) == pytest.approx(float(want_update[key]), rel=1e-5, abs=1e-7), key
        # the same draws from each seed's stream, in the same number
        assert torch.equal(generators[seed].get_state(), solo_streams[seed])
        if cuda_graphs == "on":
            assert agents[seed].pop_fault() is None


def test_the_capturable_stacked_update_reads_nothing_back_and_predraws_the_same_noise(monkeypatch):
    """cuda_graphs on, run eagerly on a CPU: the stacked update a CUDA graph captures has no host
    read, and with its noise drawn before it (NoiseTape, what the graph reads) it computes exactly
    what it computes drawing in place."""
    direct, predrawn = seed_agents("d2r", "on"), seed_agents("d2r", "on")
    batches = [[buf.sample(8) for _ in range(UPDATES)] for buf in
               (filled_buffer(agent, steps=30, seed=seed) for seed, agent in enumerate(direct))]
    stacks = {"direct": StackedSAC(direct), "predrawn": StackedSAC(predrawn)}
    stacks["predrawn"].predraw_noise = True
    generators = {name: SeedGenerators(torch.Generator().manual_seed(100 + seed) for seed in range(SEEDS))
                  for name in stacks}
    for i in range(UPDATES):
        for name, stack in stacks.items():
            with monkeypatch.context() as patch:
                if i > 0:  # the first builds what is made lazily (Adam's moments, the noise tape)
                    refuse_host_reads(patch)
                stack.update_seeds([b[i] for b in batches], generators[name])
    assert [kind for kind, *_ in stacks["predrawn"]._tape.draws] == ["normal", "uniform", "uniform", "normal"]
    for got, want in zip(predrawn, direct, strict=True):
        for key, value in want.state_dict().items():
            assert torch.equal(got.state_dict()[key], value), key
        assert got.pop_fault() is None
    for got, want in zip(generators["predrawn"], generators["direct"], strict=True):
        assert torch.equal(got.get_state(), want.get_state())


class EagerGraph:
    """d2r.sac.cuda_graph.GraphedUpdate's course without CUDA: warm-up calls, then the capture and
    the replays, each running the update eagerly (a replay runs no Python; here it runs the same
    update on the same predrawn noise)."""

    def __init__(self, update, warmup: int = 3):
        self.update, self.warmup, self.eager_calls, self.graph = update, warmup, 0, None

    @property
    def warming_up(self) -> bool:
        return self.graph is None and self.eager_calls < self.warmup

    def __call__(self, batch):
        if self.warming_up:
            self.eager_calls += 1
        else:
            self.graph = "captured"
        return self.update(batch)


def test_a_graphed_stacked_update_warms_up_on_the_seeds_streams_then_replays_on_predrawn_noise(monkeypatch):
    monkeypatch.setattr(stacked_module, "GraphedUpdate", EagerGraph)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    direct, graphed = seed_agents("d2r", "on"), seed_agents("d2r", "on")
    batches = [[buf.sample(8) for _ in range(7)] for buf in
               (filled_buffer(agent, steps=30, seed=seed) for seed, agent in enumerate(direct))]
    stacks = {"direct": StackedSAC(direct), "graphed": StackedSAC(graphed)}
    stacks["graphed"].update_mode, stacks["graphed"].predraw_noise = "graph", True
    generators = {name: SeedGenerators(torch.Generator().manual_seed(100 + seed) for seed in range(SEEDS))
                  for name in stacks}
    for i in range(7):  # 3 warm-up updates, the capture, 3 replays
        for name, stack in stacks.items():
            stack.update_seeds([b[i] for b in batches], generators[name])
    assert stacks["graphed"]._graphed.graph == "captured"
    for got, want in zip(graphed, direct, strict=True):
        for key, value in want.state_dict().items():
            assert torch.equal(got.state_dict()[key], value), key
    for got, want in zip(generators["graphed"], generators["direct"], strict=True):
        assert torch.equal(got.get_state(), want.get_state())


def test_seeds_at_different_updates_are_not_stacked():
    agents = seed_agents("d2r")
    agents[0].update(filled_buffer(agents[0], steps=30).sample(8))
    assert not can_stack(agents)  # seeds at different updates (after a resume): one by one until level


def test_a_seeds_checkpoint_holds_its_own_weights_only(tmp_path):
    agents = seed_agents("d2r")
    alone = copy.deepcopy(agents[1])
    StackedSAC(agents)  # agents[1]'s tensors are now views of the stack's
    save_model(tmp_path / "stacked.pt", agents[1].state_dict())
    save_model(tmp_path / "alone.pt", alone.state_dict())
    assert (tmp_path / "stacked.pt").stat().st_size == (tmp_path / "alone.pt").stat().st_size
    loaded = torch.load(tmp_path / "stacked.pt", weights_only=True)
    for key, value in alone.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_group_update_setting_resolves_per_device():
    assert resolve_group_update("stacked", "cpu") == "stacked"
    assert resolve_group_update("sequential", "cuda") == "sequential"
    assert resolve_group_update("auto", "cpu") in ("stacked", "sequential")
    with pytest.raises(ValueError, match="group_update must be auto, stacked or sequential"):
        resolve_group_update("together", "cpu")


@pytest.mark.parametrize("vector_strategy", ["sync", "async"])
def test_collecting_together_gives_each_seed_its_own_episode(vector_strategy):
    """One act() per step for all seeds' tasks: each seed's transitions, success and collector
    stream as its collector's own episode gives them."""
    tasks = ["reach", "drawer-close"]

    def collectors():
        out = []
        for seed in range(SEEDS):
            torch.manual_seed(seed)
            agent = MultiTaskSAC(CASES["d2r"][0], SAC, mw.STATE_DIM, mw.ACTION_DIM, len(tasks))
            envs = mw.make_task_envs(tasks, seed, goal_mode="random", max_episode_steps=15,
                                     vector_strategy=vector_strategy)
            out.append(Collector(agent, envs, torch.device("cpu"), seed=seed, cut_on_truncation=True))
        return out

    alone, together = collectors(), collectors()
    try:
        want = [collector.run() for collector in alone]
        got = collect_together(together)
        for w, g, a, t in zip(want, got, alone, together, strict=True):
            assert list(g.success) == list(w.success)
            assert len(g.transitions) == len(w.transitions) == 15
            for got_step, want_step in zip(g.transitions, w.transitions):
                for got_value, want_value in zip(got_step, want_step):
                    assert torch.allclose(got_value.float(), want_value.float(), rtol=1e-5, atol=1e-6)
            assert torch.equal(t.generator.get_state(), a.generator.get_state())
    finally:
        for collector in alone + together:
            collector.envs.close()


# ---- a stacked group's training ----------------------------------------------------------------
EPOCHS = 3  # warm-up epoch 1; updates 1-3 in epoch 2, 4-6 in epoch 3
GROUP = [0, 1]


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    path = tiny_params(tmp_path_factory.mktemp("params"), epochs=EPOCHS)
    raw = yaml.safe_load(path.read_text())
    raw["nets"]["mtsac"]["hidden"] = raw["nets"]["moe"]["hidden"] = [32, 32]
    raw["nets"]["moe"]["num_experts"] = 2
    raw["env"]["max_episode_steps"] = 20
    raw["experiments"]["tiny"].update(methods=["d2r", "mtsac", "moe"], seeds=GROUP, group_update="stacked")
    path.write_text(yaml.safe_dump(raw))
    return path


def run_config(params: Path, method: str, seed: int, overlap: bool = False):
    run = load_params(params).run("tiny", method, seed)
    return dataclasses.replace(run, sac=dataclasses.replace(run.sac, overlap_collection=overlap))


_solo: dict = {}


def solo(params: Path, root: Path, method: str, seed: int, overlap: bool = False) -> Path:
    if (method, seed, overlap) not in _solo:
        out = root / f"stacked-solo-{method}-{overlap}-seed{seed}"  # not test_seed_groups.py's solo runs
        Trainer(run_config(params, method, seed, overlap), out, progress=False).train()
        _solo[method, seed, overlap] = out
    return _solo[method, seed, overlap]


def same_run_to_rounding(out: Path, reference: Path) -> None:
    """Weights within RTOL, the same log lines but for timing (at this budget rounding has changed no
    logged digit nor any decision), a model file of the solo one's size."""
    got = torch.load(out / "model.pt", weights_only=True)
    want = torch.load(reference / "model.pt", weights_only=True)
    assert got.keys() == want.keys()
    for key in want:
        assert relative_difference(want[key], got[key]) <= 10 * RTOL, key  # 6 updates, compounding
    assert (out / "model.pt").stat().st_size == (reference / "model.pt").stat().st_size
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        assert without_timing(out / log) == without_timing(reference / log), log


def train_args(params: Path, out: str, method: str = "d2r") -> list[str]:
    return ["train", "--params", str(params), "--experiment", "tiny", "--method", method,
            *[a for s in GROUP for a in ("--seed", str(s))], "--out", out, "--no-progress"]


@pytest.mark.parametrize("method", ["d2r", pytest.param("mtsac", marks=pytest.mark.slow),
                                    pytest.param("moe", marks=pytest.mark.slow)])
def test_each_seed_of_a_stacked_group_trains_as_alone(params, tmp_path, tmp_path_factory, method, monkeypatch):
    stacks, episodes = [], []
    original_init, original_collect = StackedSAC.__init__, group_module.collect_together

    def counted(self, agents):
        stacks.append(len(agents))
        original_init(self, agents)

    def collect(collectors):
        episodes.append(len(collectors))
        return original_collect(collectors)

    monkeypatch.setattr(StackedSAC, "__init__", counted)
    monkeypatch.setattr(group_module, "collect_together", collect)
    assert cli.main(train_args(params, str(tmp_path / "seed{seed}"), method)) == 0
    assert stacks == [2]  # one stack for the whole run
    assert episodes == [2] * EPOCHS  # every epoch's episodes collected together
    for seed in GROUP:
        same_run_to_rounding(tmp_path / f"seed{seed}", solo(params, tmp_path_factory.getbasetemp(), method, seed))
        run_info = json.loads((tmp_path / f"seed{seed}" / "run.json").read_text())
        assert run_info["group"] == {"seeds": GROUP, "update": "stacked"}


def test_an_overlapped_stacked_group_collects_in_one_background_episode(params, tmp_path, tmp_path_factory,
                                                                       monkeypatch):
    started = []
    original = group_module.start_together

    def start(collectors):
        started.append(len(collectors))
        original(collectors)

    monkeypatch.setattr(group_module, "start_together", start)
    runs = [run_config(params, "d2r", seed, overlap=True) for seed in GROUP]
    group = SeedGroup(runs, [tmp_path / f"seed{seed}" for seed in GROUP], torch.device("cpu"), progress=False,
                      group_update="stacked")
    try:
        assert [member.ended for member in group.train()] == [None, None]
    finally:
        group.close()
    assert started == [2] * EPOCHS
    for seed in GROUP:
        reference = solo(params, tmp_path_factory.getbasetemp(), "d2r", seed, overlap=True)
        same_run_to_rounding(tmp_path / f"seed{seed}", reference)


def on_stacked_update(monkeypatch, number: int, action) -> None:
    """action(stack) before the `number`-th stacked update (1-based)."""
    original, calls = StackedSAC.update_seeds, [0]

    def update_seeds(stack, batches, generators):
        calls[0] += 1
        if calls[0] == number:
            action(stack)
        return original(stack, batches, generators)

    monkeypatch.setattr(StackedSAC, "update_seeds", update_seeds)


def test_a_signal_stops_a_stacked_group_and_the_rerun_resumes_it(params, tmp_path, tmp_path_factory, monkeypatch,
                                                                 capsys):
    out = str(tmp_path / "seed{seed}")
    with monkeypatch.context() as patch:  # during update 2 of both seeds (epoch 2)
        on_stacked_update(patch, 2, lambda stack: signal.raise_signal(signal.SIGTERM))
        assert cli.main(train_args(params, out)) == 75
    err = capsys.readouterr().err
    for seed in GROUP:
        assert f"seed {seed}: stopped by SIGTERM after 2 updates of epoch 2" in err, err
    assert cli.main(train_args(params, out)) == 0
    for seed in GROUP:
        same_run_to_rounding(tmp_path / f"seed{seed}", solo(params, tmp_path_factory.getbasetemp(), "d2r", seed))


def test_a_non_finite_gradient_ends_its_seed_alone_in_a_stacked_group(params, tmp_path, tmp_path_factory,
                                                                      monkeypatch, capsys):
    def nan_in_seed_1(stack):  # seed 1's slice of Q1's first weight's gradient
        mask = torch.ones(len(GROUP), 1, 1)
        mask[1] = float("nan")
        next(stack.q1.parameters()).register_hook(lambda grad: grad * mask)

    on_stacked_update(monkeypatch, 2, nan_in_seed_1)
    assert cli.main(train_args(params, str(tmp_path / "seed{seed}"))) == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: seed 1: update 2 (epoch 2): non-finite gradient in q1;"), line
    assert not (tmp_path / "seed1" / "model.pt").exists()
    same_run_to_rounding(tmp_path / "seed0", solo(params, tmp_path_factory.getbasetemp(), "d2r", 0))
