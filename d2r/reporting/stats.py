"""Aggregate statistics over runs x tasks with rliable (Agarwal et al., NeurIPS 2021).

Inputs are plain arrays of final success rates, ``scores[method]`` of shape [runs, tasks], and
periodic-evaluation success, ``curves[method] = (env_steps [points], success [runs, tasks,
points])``. Nothing here reads files or imports training code; `d2r.reporting.metrics` builds the
arrays from the results, and the report shows what this module returns.

What is computed (all intervals: 95%, percentile method, stratified bootstrap over runs, i.e.
runs are resampled within each task, as rliable does by default):

- per method: the interquartile mean (IQM, the mean of the middle 50% of all run x task
  scores) and the mean, each with its interval (``rliable.metrics.aggregate_iqm`` /
  ``aggregate_mean``, ``rliable.library.get_interval_estimates``);
- probability of improvement P(X > Y) of each D2R variant X over each baseline Y: the chance
  that a run of X beats a run of Y on a task (Mann-Whitney U statistic, averaged over tasks;
  ``metrics.probability_of_improvement``), with its interval (runs of X and Y resampled
  independently);
- performance profiles: for each threshold tau, the fraction of run x task scores above tau
  (``library.create_performance_profile``), with its band;
- sample efficiency: the IQM at each periodic evaluation, with its band.

Reproducible to the byte: rliable 1.2.0's stratified bootstrap draws its indices from numpy's
*global* random state (``np.random.choice``; a ``random_state`` passed to it is not used), so
every estimate here runs under ``np.random.seed(crc32(key))`` with a key naming the estimate
(e.g. ``"aggregate:d2r"``), and the global state is restored afterwards. One method's or one
pair's interval therefore does not depend on which other methods the experiment has. Floats
are rounded to 6 decimals.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator

import numpy as np

#: bootstrap replications per estimate: enough for stable 95% bounds at the 6 decimals kept
#: (rliable's default is 50,000; 2,000 keeps the smoke report's statistics to a few seconds)
REPS = 2000
CONFIDENCE = 0.95
#: thresholds of the performance profiles (success rates)
TAUS = tuple(round(0.05 * i, 2) for i in range(21))
#: below this many runs per method the report warns that intervals cannot separate methods
MIN_RUNS = 5


class StatsError(ValueError):
    """The score arrays are not usable (empty, wrong shape, values outside [0, 1])."""


def _r6(x: Any) -> float:
    return round(float(x), 6)


@contextlib.contextmanager
def _seeded(key: str) -> Iterator[None]:
    """numpy's global random state seeded from `key` (rliable draws from it), restored after."""
    saved = np.random.get_state()
    np.random.seed(zlib.crc32(key.encode("utf-8")))
    try:
        yield
    finally:
        np.random.set_state(saved)


def _check(name: str, scores: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != ndim or 0 in arr.shape:
        raise StatsError(f"{name}: expected a non-empty array of {ndim} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise StatsError(f"{name}: scores must be success rates in [0, 1]")
    return arr


def _interval(func, data, key: str, reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, low, high) of `func` over `data` (an array, or a list of arrays resampled
    independently), from rliable's stratified bootstrap."""
    from rliable import library as rly

    with _seeded(key):
        point, interval = rly.get_interval_estimates({key: data}, func, reps=reps,
                                                     confidence_interval_size=CONFIDENCE)
    return np.atleast_1d(point[key]), np.atleast_1d(interval[key][0]), np.atleast_1d(interval[key][1])


def aggregates(scores: dict[str, np.ndarray], reps: int = REPS, key: str = "aggregate") -> dict[str, dict[str, float]]:
    """Per method: IQM and mean over runs x tasks with their intervals, and the number of runs.
    `key` names the bootstrap's seed (`key:method`): another set of scores, another key."""
    from rliable import metrics

    def func(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    out = {}
    for m, s in scores.items():
        arr = _check(m, s, 2)
        point, low, high = _interval(func, arr, f"{key}:{m}", reps)
        out[m] = {"runs": int(arr.shape[0]),
                  "iqm": _r6(point[0]), "iqm_low": _r6(low[0]), "iqm_high": _r6(high[0]),
                  "mean": _r6(point[1]), "mean_low": _r6(low[1]), "mean_high": _r6(high[1])}
    return out


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks, as ``rliable.metrics.probability_of_improvement``.

    rliable computes each task's Mann-Whitney U with scipy (about 0.5 ms a task, so 10 s for one
    pair of the smoke experiment at 2,000 replications); this is the same number from one
    comparison of every run pair: U / (n_x n_y) = P(x > y) + P(x = y) / 2 (so identical runs
    give 0.5, as rliable's special case). tests/test_stats.py checks it equals rliable's."""
    x, y = x[:, None, :], y[None, :, :]
    per_task = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(per_task.mean())


def improvement(scores: dict[str, np.ndarray], pairs: list[tuple[str, str]],
                reps: int = REPS) -> dict[str, dict[str, Any]]:
    """P(X > Y) with its interval for each (X, Y) in `pairs`; keys "X vs Y"."""

    def func(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([probability_of_improvement(x, y)])

    out = {}
    for x, y in pairs:
        sx, sy = _check(x, scores[x], 2), _check(y, scores[y], 2)
        if sx.shape[1] != sy.shape[1]:
            raise StatsError(f"{x} and {y} have scores on {sx.shape[1]} and {sy.shape[1]} tasks")
        point, low, high = _interval(func, [sx, sy], f"improvement:{x}:{y}", reps)
        out[f"{x} vs {y}"] = {"variant": x, "baseline": y, "p": _r6(point[0]),
                              "low": _r6(low[0]), "high": _r6(high[0])}
    return out


def profiles(scores: dict[str, np.ndarray], taus: tuple[float, ...] = TAUS,
             reps: int = REPS) -> dict[str, Any]:
    """Performance profiles: per method the fraction of run x task scores above each tau."""
    from rliable import library as rly

    out: dict[str, Any] = {"tau": [_r6(t) for t in taus], "methods": {}}
    for m, s in scores.items():
        arr = _check(m, s, 2)
        with _seeded(f"profile:{m}"):
            point, band = rly.create_performance_profile({m: arr}, np.asarray(taus), reps=reps,
                                                         confidence_interval_size=CONFIDENCE)
        out["methods"][m] = {"fraction": [_r6(v) for v in point[m]],
                             "low": [_r6(v) for v in band[m][0]], "high": [_r6(v) for v in band[m][1]]}
    return out


def iqm_per_point(x: np.ndarray) -> np.ndarray:
    """``rliable.metrics.aggregate_iqm`` of each x[..., j] (x: [runs, tasks, points]) in one call
    of the same scipy function (trim_mean, 25% cut) along the points axis; one call per point
    was 190 s for an MT10-sized study. tests/test_stats.py checks it equals aggregate_iqm."""
    from scipy.stats import trim_mean

    return trim_mean(x.reshape(-1, x.shape[-1]), proportiontocut=0.25, axis=0)


def sample_efficiency(curves: dict[str, tuple[list[int], np.ndarray]],
                      reps: int = REPS) -> dict[str, dict[str, list]]:
    """Per method: IQM over runs x tasks at each periodic evaluation, with its band."""
    out = {}
    for m, (steps, arr) in curves.items():
        arr = _check(m, arr, 3)
        if arr.shape[-1] != len(steps):
            raise StatsError(f"{m}: {len(steps)} env-step values for {arr.shape[-1]} evaluation points")
        point, low, high = _interval(iqm_per_point, arr, f"sample-efficiency:{m}", reps)
        out[m] = {"env_steps": [int(s) for s in steps], "iqm": [_r6(v) for v in point],
                  "low": [_r6(v) for v in low], "high": [_r6(v) for v in high]}
    return out


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def cautions(agg: dict[str, dict[str, float]], poi: dict[str, dict[str, Any]],
             min_runs: int = MIN_RUNS) -> list[str]:
    """Plain-text warnings: too few runs, and comparisons the intervals do not settle."""
    out = []
    few = {m: a["runs"] for m, a in agg.items() if a["runs"] < min_runs}
    if few:
        counts = ", ".join(f"{m}: {n}" for m, n in few.items())
        out.append(f"Too few runs to separate methods: the intervals rest on {counts} run(s) per method "
                   f"(fewer than {min_runs}); with so few runs a bootstrap interval understates the "
                   "uncertainty, so treat any difference as unconfirmed.")
    for key, p in poi.items():
        x, y = p["variant"], p["baseline"]
        reasons = []
        if _overlap((agg[x]["iqm_low"], agg[x]["iqm_high"]), (agg[y]["iqm_low"], agg[y]["iqm_high"])):
            reasons.append("their IQM intervals overlap")
        if p["low"] <= 0.5 <= p["high"]:
            reasons.append("the interval of P(X > Y) contains 0.5")
        if reasons:
            out.append(f"{x} vs {y}: not separated ({' and '.join(reasons)}).")
    return out


def compute(scores: dict[str, np.ndarray], variants: list[str], baselines: list[str],
            curves: dict[str, tuple[list[int], np.ndarray]], reps: int = REPS) -> dict[str, Any]:
    """Everything above for one experiment, as JSON data (metrics/E.json "statistics")."""
    agg = aggregates(scores, reps)
    pairs = [(x, y) for x in variants for y in baselines]
    poi = improvement(scores, pairs, reps)
    return {
        "bootstrap": {"reps": reps, "confidence": CONFIDENCE, "method": "percentile",
                      "resampled": "runs, within each task (stratified)"},
        "aggregates": agg,
        "probability_of_improvement": poi,
        "performance_profile": profiles(scores, TAUS, reps),
        "sample_efficiency": sample_efficiency(curves, reps),
        "warnings": cautions(agg, poi),
    }
