"""Every number the report shows, computed from the loaded results (d2r.reporting.load.Data).

The figures and the HTML only draw and format what these functions return. Plain Python (no
numpy) except the arrays handed to d2r.reporting.stats, so the numbers are the same everywhere.

Definitions used in the report (also printed in it):
- final success of a run = eval.json ``mean_success`` (mean over tasks of the per-task success
  rate of the final evaluation, the paper's protocol); per method: mean and standard deviation
  over seeds (population std, ddof = 0, so one seed gives 0);
- final return of a run = the mean over tasks of eval.json ``return`` (each task's mean episode
  return, env rewards unscaled), per method as success;
- the same under Meta-World's protocol (eval.json ``metaworld``, metaworld.evaluation);
- learning curves: eval_log.jsonl ``mean_success`` against env steps per task; the line is the
  mean over seeds, the band spans the lowest to the highest seed;
- task difficulty = 1 - final success on the task, averaged over every method and seed of the
  experiment (so it does not favour the routed method whose depth is plotted against it).

metrics/{exp}.json (results only, so two runs with the same seed give the same bytes)::

    {"experiment": {"benchmark", "goal_mode", "num_tasks", "seeds", "env_steps_per_task",
                    "paper_protocol_episodes", "metaworld_protocol_episodes"},
     "methods": {method: {"success_mean", "success_std", "per_task": {task: mean over seeds},
                          "return_mean", "return_std", "per_task_return": {task: mean over seeds},
                          "seeds", and for routed methods "depth_mean", "modules_used_mean",
                          "iqm", "iqm_low", "iqm_high", "success_mean_low", "success_mean_high",
                          "metaworld": {"success_mean", "success_std", "per_task", "return_mean",
                                        "iqm", "iqm_low", "iqm_high", "success_mean_low",
                                        "success_mean_high"}}},
     "statistics": {"bootstrap": {...}, "probability_of_improvement": {"X vs Y": {"variant",
                    "baseline", "p", "low", "high"}}, "performance_profile": {"tau": [...],
                    "methods": {method: {"fraction", "low", "high"}}}, "sample_efficiency":
                    {method: {"env_steps", "iqm", "low", "high"}}, "warnings": [...]}}

(d2r/reporting/stats.py: rliable's IQM, mean, probability of improvement and performance profiles
with 95% stratified bootstrap intervals over runs x tasks, seeded, so the same bytes every time.)

reports/curves/{exp}.csv (--curves): ``method,task,env_steps,success,return`` with the mean over
seeds of each periodic evaluation, per task and ("(mean over tasks)") for the task set, for `dvc
plots` (which draws success).

reports/{exp}.timing.json (wall times differ from run to run, so they are kept apart)::

    {"methods": {method: seconds of training plus final evaluation, summed over seeds},
     "wall_time": the same summed over every run}
"""

from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple

import numpy as np

from d2r.reporting import stats
from d2r.reporting.load import Data, check_rate

# ----------------------------------------------------------------------------------------------
# Over seeds


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def std(xs: Iterable[float]) -> float:
    """Population standard deviation (ddof = 0)."""
    xs = list(xs)
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = mean(xs), mean(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy)


def _r6(x: float) -> float:
    return round(float(x), 6)


class OverSeeds(NamedTuple):
    """One value per seed (in the experiment's seed order), their mean and population std."""

    values: list[float]
    mean: float
    std: float


def over_seeds(xs: Iterable[float]) -> OverSeeds:
    xs = list(xs)
    return OverSeeds(xs, mean(xs), std(xs))


def final_success(data: Data, method: str) -> OverSeeds:
    return over_seeds(float(data.runs[method][s]["eval"]["mean_success"]) for s in data.seeds)


def task_success(data: Data, method: str, task: str) -> OverSeeds:
    return over_seeds(float(data.runs[method][s]["eval"]["success"][task]) for s in data.seeds)


def final_return(data: Data, method: str) -> OverSeeds:
    """Per seed: the mean over tasks of each task's mean episode return (paper protocol)."""
    return over_seeds(mean(float(data.runs[method][s]["eval"]["return"][t]) for t in data.tasks) for s in data.seeds)


def task_return(data: Data, method: str, task: str) -> OverSeeds:
    return over_seeds(float(data.runs[method][s]["eval"]["return"][task]) for s in data.seeds)


def metaworld_success(data: Data, method: str) -> OverSeeds:
    """Final success under Meta-World's protocol (eval.json "metaworld"), per seed."""
    return over_seeds(float(data.runs[method][s]["eval"]["metaworld"]["mean_success"]) for s in data.seeds)


def metaworld_task_success(data: Data, method: str, task: str) -> OverSeeds:
    return over_seeds(float(data.runs[method][s]["eval"]["metaworld"]["success"][task]) for s in data.seeds)


def best_method(data: Data, metrics: dict[str, Any]) -> str | None:
    """The method with the highest mean final success, or None when another one ties it (all 0%)."""
    values = {m: metrics["methods"][m]["success_mean"] for m in data.methods}
    top = max(values.values())
    leaders = [m for m, v in values.items() if v == top]
    return leaders[0] if len(leaders) == 1 else None


def difficulty(data: Data) -> dict[str, float]:
    """1 - final success per task, averaged over every method and seed."""
    return {t: 1.0 - mean(v for m in data.methods for v in task_success(data, m, t).values) for t in data.tasks}


def run_wall_time(r: dict[str, Any]) -> float:
    return float(r["run"].get("wall_time", 0.0)) + float(r["eval"].get("wall_time", 0.0))


# ----------------------------------------------------------------------------------------------
# Curves over training


class Curve(NamedTuple):
    """x (union of env steps), mean, min and max over the seeds that have a value at x."""

    x: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def curve(records_per_seed: list[list[tuple[int, float]]]) -> Curve:
    by_x: dict[int, list[float]] = {}
    for records in records_per_seed:
        for x, y in records:
            by_x.setdefault(int(x), []).append(float(y))
    xs = sorted(by_x)
    return Curve(xs, [mean(by_x[x]) for x in xs], [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs])


def success_curve(data: Data, method: str, task: str | None = None) -> Curve:
    """Periodic-evaluation success against env steps: of `task`, or the mean over tasks (None)."""
    return curve([[(r["env_steps"], r["mean_success"] if task is None else r["success"][task]) for r in
                   data.runs[method][s]["eval_log"]] for s in data.seeds])


def return_curve(data: Data, method: str, task: str | None = None) -> Curve:
    """Periodic-evaluation mean episode return against env steps: of `task`, or the mean over tasks."""
    return curve([[(r["env_steps"], mean(r["return"][t] for t in data.tasks) if task is None else r["return"][task])
                   for r in data.runs[method][s]["eval_log"]] for s in data.seeds])


def route_curve(data: Data, method: str, task: str, key: str) -> Curve:
    """routes.json "evolution": route `key` (depth, modules_used) of `task` during training."""
    per_seed = []
    for s in data.seeds:
        ev = data.runs[method][s]["routes"]["evolution"]
        per_seed.append(list(zip(ev["env_steps"], ev[key][task])))
    return curve(per_seed)


CURVES_HEADER = "method,task,env_steps,success,return\n"
MEAN_TASK = "(mean over tasks)"   # sorts before the task names in `dvc plots` panels


def curves_csv(data: Data) -> str:
    """Learning curves for `dvc plots`: mean over seeds per method, task and periodic evaluation."""
    lines = [CURVES_HEADER]
    for m in data.methods:
        for name, task in [(MEAN_TASK, None)] + [(t, t) for t in data.tasks]:
            c, r = success_curve(data, m, task), return_curve(data, m, task)
            lines += [f"{m},{name},{x},{_r6(y)},{_r6(z)}\n" for x, y, z in zip(c.x, c.mean, r.mean)]
    return "".join(lines)


# ----------------------------------------------------------------------------------------------
# Routes (routes.json of the analyse job)


def num_modules(data: Data, method: str) -> int:
    return data.runs[method][data.seeds[0]]["routes"]["num_modules"]


def route_depth(data: Data, method: str) -> OverSeeds:
    """Mean route depth over tasks of the final evaluation, per seed."""
    return over_seeds(data.runs[method][s]["routes"]["mean"]["depth"] for s in data.seeds)


def route_per_task(data: Data, method: str, key: str) -> list[OverSeeds]:
    """routes.json per-task `key` (depth_mean, modules_used_mean), in task order."""
    return [over_seeds(data.runs[method][s]["routes"]["per_task"][t][key] for s in data.seeds) for t in data.tasks]


def edge_frequency(data: Data, method: str, task: str) -> list[list[float | None]]:
    """[receiving node][source module]: mean over seeds of the edge-selection frequency; None
    where the edge cannot exist (module r+1, 0-based, picks among modules 0..r; the output
    node, the last row, among all)."""
    mats = [data.runs[method][s]["routes"]["per_task"][task]["edge_frequency"] for s in data.seeds]
    n = num_modules(data, method)
    return [[mean(mat[r][j] for mat in mats) if r == n - 1 or j <= r else None for j in range(n)]
            for r in range(n)]


def module_use(data: Data, method: str) -> list[list[float]]:
    """[task][module]: mean over seeds of how often the module lies on the route to the output."""
    return [[mean(col) for col in zip(*[data.runs[method][s]["routes"]["per_task"][t]["module_use"]
                                        for s in data.seeds])]
            for t in data.tasks]


class DepthDifficulty(NamedTuple):
    difficulty: list[float]                 # per task, in task order
    depth: dict[str, list[float]]           # routed method -> mean route depth per task
    correlation: dict[str, float | None]    # routed method -> Pearson r (None: < 3 tasks or no spread)


def depth_vs_difficulty(data: Data) -> DepthDifficulty:
    diff = difficulty(data)
    xs = [diff[t] for t in data.tasks]
    depth = {m: [d.mean for d in route_per_task(data, m, "depth_mean")] for m in data.routed_methods}
    return DepthDifficulty(xs, depth, {m: pearson(xs, ys) for m, ys in depth.items()})


def ablation_base(data: Data) -> str:
    """The routed method the D2R variants are compared with: d2r, else the first."""
    routed = data.routed_methods
    return "d2r" if "d2r" in routed else routed[0]


def ablation_deltas(data: Data) -> dict[str, float]:
    """Routed method -> its mean final success minus the base's (ablation_base)."""
    base = final_success(data, ablation_base(data)).mean
    return {m: final_success(data, m).mean - base for m in data.routed_methods}


# ----------------------------------------------------------------------------------------------
# Statistics over runs x tasks (d2r.reporting.stats)


def score_array(data: Data, method: str) -> np.ndarray:
    """Final success [runs, tasks] (eval.json per seed and task)."""
    return np.array([[float(data.runs[method][s]["eval"]["success"][t]) for t in data.tasks] for s in data.seeds])


def metaworld_score_array(data: Data, method: str) -> np.ndarray:
    """Final success under Meta-World's protocol [runs, tasks]."""
    return np.array([[float(data.runs[method][s]["eval"]["metaworld"]["success"][t]) for t in data.tasks]
                     for s in data.seeds])


def curve_array(data: Data, method: str) -> tuple[list[int], np.ndarray] | None:
    """Periodic-evaluation success [runs, tasks, points] at the env steps every run evaluated."""
    logs = [data.runs[method][s]["eval_log"] for s in data.seeds]
    common = set.intersection(*({int(r["env_steps"]) for r in log} for log in logs))
    if not common:
        return None
    steps = sorted(common)
    arr = np.empty((len(logs), len(data.tasks), len(steps)))
    for i, log in enumerate(logs):
        at = {int(r["env_steps"]): r for r in log}
        where = f"results/{data.experiment}/{method}/seed{data.seeds[i]}/eval_log.jsonl"
        for k, x in enumerate(steps):
            arr[i, :, k] = [check_rate(at[x].get("success", {}).get(t), f"{where} at env steps {x}: success.{t}")
                            for t in data.tasks]
    return steps, arr


def variants(data: Data) -> list[str]:
    """D2R and its ablations: methods whose network is d2r."""
    return [m for m in data.methods if data.run_config(m).method.net == "d2r"]


def baselines(data: Data) -> list[str]:
    return [m for m in data.methods if data.run_config(m).method.net != "d2r"]


def statistics(data: Data, reps: int = stats.REPS) -> dict[str, Any]:
    """d2r.reporting.stats.compute over this experiment's runs (metrics/E.json "statistics")."""
    scores = {m: score_array(data, m) for m in data.methods}
    curves = {m: c for m in data.methods if (c := curve_array(data, m)) is not None}
    return stats.compute(scores, variants(data), baselines(data), curves, reps)


def method_aggregates(metrics: dict[str, Any], method: str) -> dict[str, float]:
    """IQM and mean with their intervals, from a method's metrics entry."""
    mm = metrics["methods"][method]
    return {"iqm": mm["iqm"], "iqm_low": mm["iqm_low"], "iqm_high": mm["iqm_high"],
            "mean": mm["success_mean"], "mean_low": mm["success_mean_low"], "mean_high": mm["success_mean_high"]}


# ----------------------------------------------------------------------------------------------
# The metrics and timing files


def experiment_setting(data: Data) -> dict[str, Any]:
    """What the numbers are of (the paper table, d2r/reporting/paper_table.py, reads it from the metrics)."""
    ts = data.environment["task_set"]
    first = data.runs[data.methods[0]][data.seeds[0]]
    return {"benchmark": ts["benchmark"], "goal_mode": ts["goal_mode"], "num_tasks": len(data.tasks),
            "seeds": len(data.seeds), "env_steps_per_task": int(first["run"].get("env_steps_per_task", 0)),
            "paper_protocol_episodes": int(first["eval"]["episodes"]),
            "metaworld_protocol_episodes": int(first["eval"]["metaworld"]["episodes"])}


def compute_metrics(data: Data) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for m in data.methods:
        fs, fr, mw = final_success(data, m), final_return(data, m), metaworld_success(data, m)
        entry: dict[str, Any] = {
            "success_mean": _r6(fs.mean),
            "success_std": _r6(fs.std),
            "per_task": {t: _r6(task_success(data, m, t).mean) for t in data.tasks},
            "return_mean": _r6(fr.mean),
            "return_std": _r6(fr.std),
            "per_task_return": {t: _r6(task_return(data, m, t).mean) for t in data.tasks},
            "seeds": len(data.seeds),
            "metaworld": {
                "success_mean": _r6(mw.mean),
                "success_std": _r6(mw.std),
                "per_task": {t: _r6(metaworld_task_success(data, m, t).mean) for t in data.tasks},
                "return_mean": _r6(mean(mean(float(data.runs[m][s]["eval"]["metaworld"]["return"][t])
                                             for t in data.tasks) for s in data.seeds)),
            },
        }
        if data.routed(m):
            entry["depth_mean"] = _r6(route_depth(data, m).mean)
            entry["modules_used_mean"] = _r6(mean(data.runs[m][s]["routes"]["mean"]["modules_used"]
                                                  for s in data.seeds))
        methods[m] = entry
    st = statistics(data)
    for m, agg in st.pop("aggregates").items():   # the point estimate of the mean is success_mean
        methods[m].update(iqm=agg["iqm"], iqm_low=agg["iqm_low"], iqm_high=agg["iqm_high"],
                          success_mean_low=agg["mean_low"], success_mean_high=agg["mean_high"])
    mw_scores = {m: metaworld_score_array(data, m) for m in data.methods}
    for m, agg in stats.aggregates(mw_scores, key="metaworld-aggregate").items():
        methods[m]["metaworld"].update(iqm=agg["iqm"], iqm_low=agg["iqm_low"], iqm_high=agg["iqm_high"],
                                       success_mean_low=agg["mean_low"], success_mean_high=agg["mean_high"])
    return {"experiment": experiment_setting(data), "methods": methods, "statistics": st}


def compute_timing(data: Data) -> dict[str, Any]:
    methods = {m: _r6(sum(run_wall_time(data.runs[m][s]) for s in data.seeds)) for m in data.methods}
    return {"methods": methods, "wall_time": _r6(sum(methods.values()))}
