"""d2r.reporting.stats against hand-computed values on small tables, and against rliable itself."""

from __future__ import annotations

import numpy as np
import pytest
from rliable import metrics as rl_metrics

from d2r.reporting import stats

REPS = 300   # enough for these checks, fast


def contains(entry: dict, point: str, low: str, high: str) -> bool:
    return entry[low] <= entry[point] <= entry[high]


def test_iqm_and_mean_of_known_numbers():
    # 2 runs x 4 tasks = 8 scores: sorted 0, .1, .2, .3, .4, .5, .6, 1; IQM drops the lowest and
    # highest 2 (25% each side): mean(.2, .3, .4, .5) = .35; the mean is 3.1 / 8 = .3875.
    scores = {"a": np.array([[0.0, 0.1, 0.2, 1.0], [0.3, 0.4, 0.5, 0.6]])}
    agg = stats.aggregates(scores, REPS)["a"]
    assert agg["runs"] == 2
    assert agg["iqm"] == pytest.approx(0.35, abs=1e-6)
    assert agg["mean"] == pytest.approx(0.3875, abs=1e-6)
    assert contains(agg, "iqm", "iqm_low", "iqm_high") and contains(agg, "mean", "mean_low", "mean_high")
    assert agg["iqm_low"] < agg["iqm_high"]   # two different runs: the resamples differ


def test_one_run_gives_a_point_interval():
    agg = stats.aggregates({"a": np.array([[0.25, 0.5, 0.75, 1.0]])}, REPS)["a"]
    assert agg["iqm"] == agg["iqm_low"] == agg["iqm_high"] == pytest.approx(0.625)


def test_probability_of_improvement_hand_values():
    better = np.array([[0.9, 0.8, 0.7], [1.0, 0.9, 0.8], [0.95, 0.85, 0.75]])
    worse = better - 0.5
    poi = stats.improvement({"x": better, "y": worse}, [("x", "y"), ("y", "x"), ("x", "x")], REPS)
    assert poi["x vs y"] == {"variant": "x", "baseline": "y", "p": 1.0, "low": 1.0, "high": 1.0}
    assert poi["y vs x"]["p"] == 0.0 and poi["y vs x"]["high"] == 0.0
    assert poi["x vs x"]["p"] == 0.5
    # Ties count half: x = [1, 0] vs y = [1, 1] on one task: pairs (1,1) .5, (1,1) .5, (0,1) 0, (0,1) 0.
    assert stats.probability_of_improvement(np.array([[1.0], [0.0]]), np.array([[1.0], [1.0]])) == 0.25


def test_probability_of_improvement_equals_rliable():
    rng = np.random.default_rng(0)
    for _ in range(100):
        x = rng.integers(0, 5, (rng.integers(1, 6), 4)) / 4   # success rates with ties
        y = x.copy() if rng.random() < 0.2 else rng.integers(0, 5, (rng.integers(1, 6), 4)) / 4
        assert stats.probability_of_improvement(x, y) == pytest.approx(
            rl_metrics.probability_of_improvement(x, y), abs=1e-12)


def test_iqm_per_point_equals_rliable():
    rng = np.random.default_rng(1)
    x = rng.random((3, 4, 5))
    x[1, 2] = x[0, 0]                      # ties
    assert np.allclose(stats.iqm_per_point(x), [rl_metrics.aggregate_iqm(x[..., j]) for j in range(5)],
                       rtol=0, atol=1e-15)


def test_performance_profile_hand_values():
    # 4 scores: fraction above tau = 0: 3/4 (0.25, 0.5, 1), above 0.5: 1/4, above 1: 0.
    prof = stats.profiles({"a": np.array([[0.0, 0.25], [0.5, 1.0]])}, (0.0, 0.5, 1.0), REPS)
    assert prof["tau"] == [0.0, 0.5, 1.0]
    a = prof["methods"]["a"]
    assert a["fraction"] == [0.75, 0.25, 0.0]
    assert all(lo <= p <= hi for lo, p, hi in zip(a["low"], a["fraction"], a["high"]))


def test_sample_efficiency_hand_values():
    # 1 run x 4 tasks at 2 evaluations: IQM of [0, .2, .4, 1] = .3, of [.5, .5, .5, .5] = .5.
    arr = np.array([[[0.0, 0.5], [0.2, 0.5], [0.4, 0.5], [1.0, 0.5]]])
    se = stats.sample_efficiency({"a": ([100, 200], arr)}, REPS)["a"]
    assert se["env_steps"] == [100, 200]
    assert se["iqm"] == pytest.approx([0.3, 0.5])
    assert all(lo <= p <= hi for lo, p, hi in zip(se["low"], se["iqm"], se["high"]))


def test_reproducible_and_independent_of_other_methods():
    rng = np.random.default_rng(2)
    a, b, c = (rng.random((3, 5)) for _ in range(3))
    np.random.seed(7)
    state = np.random.get_state()
    first = stats.compute({"a": a, "b": b}, ["a"], ["b"], {}, REPS)
    np.random.seed(8)          # whatever numpy's global state, the same intervals
    assert stats.compute({"a": a, "b": b}, ["a"], ["b"], {}, REPS) == first
    np.random.set_state(state)
    with_c = stats.compute({"a": a, "b": b, "c": c}, ["a"], ["b", "c"], {}, REPS)
    assert with_c["aggregates"]["a"] == first["aggregates"]["a"]
    assert with_c["probability_of_improvement"]["a vs b"] == first["probability_of_improvement"]["a vs b"]
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_cautions():
    rng = np.random.default_rng(3)
    good, bad = 0.8 + 0.2 * rng.random((6, 4)), 0.2 * rng.random((6, 4))
    st = stats.compute({"d2r": good, "mtsac": bad}, ["d2r"], ["mtsac"], {}, REPS)
    assert st["warnings"] == []            # 6 runs, separated by far
    st = stats.compute({"d2r": good[:2], "mtsac": bad[:2]}, ["d2r"], ["mtsac"], {}, REPS)
    assert len(st["warnings"]) == 1 and "Too few runs" in st["warnings"][0] and "d2r: 2" in st["warnings"][0]
    same = stats.compute({"d2r": good, "mtsac": good[::-1]}, ["d2r"], ["mtsac"], {}, REPS)
    assert same["warnings"] == ["d2r vs mtsac: not separated (their IQM intervals overlap and the interval "
                                "of P(X > Y) contains 0.5)."]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 3)), "non-empty"),
    (np.zeros(3), "2 dimensions"),
    (np.array([[0.5, 1.5]]), "in [0, 1]"),
    (np.array([[0.5, np.nan]]), "in [0, 1]"),
])
def test_bad_scores_are_named(bad, message):
    with pytest.raises(stats.StatsError, match=r"^m: .*") as err:
        stats.aggregates({"m": bad}, REPS)
    assert message in str(err.value)
