"""The benchmark's D2R update with the plain reference networks (d2r.nets.reference.PlainD2RNet,
spec sections 1-2 written one module at a time) must stay equal to the fast update it measures
against."""

from pathlib import Path

import pytest
import torch

from d2r import benchmark as bench
from d2r.config import load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_plain_reference_update_matches_the_fast_update_at_paper_width():
    params = load_params(REPO / "params.yaml")
    cmp = bench.bench_plain_vs_fast(params, num_tasks=10, reps=1, device=torch.device("cpu"))
    # one full SAC update each from the same state and random numbers: every loss and every
    # gradient that reaches an optimizer (critics with ResRouting, actor, entropy coefficients)
    assert cmp["loss_diff"] < 1e-5 and cmp["grad_diff"] < 1e-5, cmp
    assert cmp["plain_s"] > 0 and cmp["fast_s"] > 0


def test_timed_alternately_returns_every_call_of_each_function_in_turn():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = bench.timed_alternately(fns, reps=3, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 timed
    assert [len(t) for t in times] == [3, 3] and all((t >= 0).all() for t in times)


def test_the_seed_group_section_prints_a_row_per_group_size_and_update(capsys):
    from d2r.jobs import bench as bench_job

    params = load_params(REPO / "params.yaml")
    bench_job.seed_groups(params, torch.device("cpu"), reps=1, method="mtsac", num_tasks=2)
    out = capsys.readouterr().out.splitlines()
    assert "== a group of S seeds trained together" in out[1]
    rows = [line.split() for line in out[3:8]]
    assert [(int(row[0]), row[1]) for row in rows] == [
        (1, "sequential"), (2, "sequential"), (2, "stacked"), (5, "sequential"), (5, "stacked")]
    assert all(float(row[2]) > 0 and abs(float(row[3]) - int(row[0]) * float(row[2])) <= 0.02 * float(row[3])
               for row in rows)
    assert out[8].startswith("act() per vector step of the group")
    acts = [line.split() for line in out[9:]]  # S, one by one | together
    assert [int(row[0]) for row in acts] == [2, 5] and all(float(row[1]) > 0 and float(row[3]) > 0 for row in acts)
