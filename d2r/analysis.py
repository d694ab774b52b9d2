"""Routing per task for one run, from files only (the `analyse` job, d2r/jobs/analyse.py).

Reads ``{run_dir}/eval.json`` (final evaluation, greedy routes) and ``{run_dir}/eval_log.jsonl``
(periodic evaluations during training) and writes ``routes.json``. Never imports training
code (no torch): the numbers were computed by the evaluation job, this module selects, checks
and arranges them.

Routed methods (D2R and its variants)::

    {"routed": true, "experiment": ..., "method": ..., "seed": ..., "episodes": n,
     "tasks": [task, ...],                    # the run's task order
     "num_modules": N,
     "per_task": {task: {"depth_mean": float,            # mean route depth (spec: Depth)
                         "depth_hist": {"<depth>": count},
                         "modules_used_mean": float,      # mean number of modules used
                         "module_use": [N floats],        # fraction of steps module i is used
                         "edge_frequency": [[N x N]]}},   # row n-1 = node n (row N-1 = output)
     "mean": {"depth": float, "modules_used": float},     # unweighted mean over tasks
     "evolution": {"epoch": [...], "env_steps": [...],    # periodic evaluations in training
                   "depth": {task: [...]}, "modules_used": {task: [...]}}}

Non-routed methods: ``{"routed": false, "experiment": ..., "method": ..., "seed": ...}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from d2r.runtime.io import read_json, read_jsonl
from d2r.runtime.rundir import RunDir


class AnalyseError(ValueError):
    """An input file does not follow the contract; the message names the file and the key."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnalyseError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _task_routes(routes: dict[str, Any], task: str, where: str) -> dict[str, Any]:
    if task not in routes:
        raise AnalyseError(f"{where}: no routes for task {task!r}")
    r = routes[task]
    where = f"{where}.{task}"
    module_use = [_number(v, f"{where}.module_use[{i}]") for i, v in enumerate(r["module_use"])]
    n = len(module_use)
    edges = r["edge_frequency"]
    if len(edges) != n or any(len(row) != n for row in edges):
        raise AnalyseError(f"{where}.edge_frequency: expected {n} rows of {n} columns (N = len(module_use))")
    edge_frequency = [[_number(v, f"{where}.edge_frequency[{i}][{j}]") for j, v in enumerate(row)]
                      for i, row in enumerate(edges)]
    hist = {str(int(k)): int(v) for k, v in r.get("depth_hist", {}).items()}
    return {
        "depth_mean": _number(r["depth_mean"], f"{where}.depth_mean"),
        "depth_hist": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "modules_used_mean": _number(r["modules_used_mean"], f"{where}.modules_used_mean"),
        "module_use": module_use,
        "edge_frequency": edge_frequency,
    }


def evolution(records: list[dict[str, Any]], tasks: list[str], where: str) -> dict[str, Any]:
    """Depth and modules used per task at each periodic evaluation that reports them."""
    out: dict[str, Any] = {"epoch": [], "env_steps": [], "depth": {t: [] for t in tasks},
                           "modules_used": {t: [] for t in tasks}}
    for i, rec in enumerate(records):
        if "depth" not in rec:
            continue
        for key in ("depth", "modules_used"):
            missing = [t for t in tasks if t not in rec.get(key, {})]
            if missing:
                raise AnalyseError(f"{where} record {i}: {key} lacks tasks {missing}")
        out["epoch"].append(int(rec["epoch"]))
        out["env_steps"].append(int(rec["env_steps"]))
        for t in tasks:
            out["depth"][t].append(_number(rec["depth"][t], f"{where} record {i}: depth.{t}"))
            out["modules_used"][t].append(_number(rec["modules_used"][t], f"{where} record {i}: modules_used.{t}"))
    return out


def analyse(run_dir: str | Path) -> dict[str, Any]:
    files = RunDir(run_dir)
    eval_path, log_path = files.final_eval, files.eval_log
    ev = read_json(eval_path)
    head = {"experiment": ev["experiment"], "method": ev["method"], "seed": ev["seed"]}
    if not ev.get("routed", False):
        return {"routed": False, **head}
    tasks = list(ev["tasks"])
    if "routes" not in ev:
        raise AnalyseError(f"{eval_path}: routed is true but there is no 'routes'")
    per_task = {t: _task_routes(ev["routes"], t, f"{eval_path}: routes") for t in tasks}
    sizes = {len(r["module_use"]) for r in per_task.values()}
    if len(sizes) != 1:
        raise AnalyseError(f"{eval_path}: tasks disagree on the number of modules: {sorted(sizes)}")
    records = list(read_jsonl(log_path)) if log_path.exists() else []
    return {
        "routed": True,
        **head,
        "episodes": ev.get("episodes"),
        "tasks": tasks,
        "num_modules": sizes.pop(),
        "per_task": per_task,
        "mean": {
            "depth": sum(r["depth_mean"] for r in per_task.values()) / len(tasks),
            "modules_used": sum(r["modules_used_mean"] for r in per_task.values()) / len(tasks),
        },
        "evolution": evolution(records, tasks, str(log_path)),
    }
