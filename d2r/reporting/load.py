"""The results tree of one experiment, read and checked into a `Data` object.

Reads files only, never training code (no torch, no agent, no simulator; the parameters come
typed from d2r.config, which needs none of them):

    params.yaml                                 the experiment's methods, seeds, budget preset
    results/{exp}/environment.json              versions, platform, device, task set (setup job)
    results/{exp}/{method}/seed{s}/run.json     training config (the methods' settings as trained),
                                                parameter counts, wall time
    results/{exp}/{method}/seed{s}/eval_log.jsonl   periodic evaluations during training
    results/{exp}/{method}/seed{s}/eval.json    final evaluation (greedy routes), both protocols
    results/{exp}/{method}/seed{s}/routes.json  routing analysis (analyse job)
    results/{exp}/{method}/seed{s}/videos/      rollout videos of the first seed (render job;
                                                read by d2r.reporting.videos)

A file that is missing or breaks the contract (tasks that differ from environment.json's, a
success rate outside [0, 1]) raises ReportError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from d2r.config import ExperimentConfig, RenderConfig, RunConfig, load_params, run_from_dict
from d2r.runtime import rundir
from d2r.runtime.io import ResultFileError, read_json, read_jsonl
from d2r.runtime.rundir import RunDir


class ReportError(ValueError):
    """A results file is missing or does not follow the contract; the message names it."""


class Data:
    """Everything the report shows, read from the results tree."""

    def __init__(self, experiment: str, config: ExperimentConfig, exp_raw: dict, environment: dict,
                 runs: dict[str, dict[int, dict[str, Any]]], tasks: list[str], render: RenderConfig):
        self.experiment = experiment
        self.config = config                  # the experiment as d2r.config typed it
        self.methods = list(config.methods)
        self.seeds = list(config.seeds)
        self.exp_raw = exp_raw      # the experiment as written in params.yaml: the page shows it verbatim
        self.environment = environment
        self.runs = runs            # runs[method][seed] = {"run", "config", "eval_log", "eval", "routes"}
        self.tasks = tasks
        self.render = render        # d2r.config.RenderConfig of the experiment
        self.videos: dict[str, dict[str, Any]] | None = None   # method -> index.json (d2r.reporting.videos)

    def run_config(self, method: str) -> RunConfig:
        """The method's first run as it was trained (its run.json, typed): the one source of the
        page's method, budget, environment and SAC settings."""
        return self.runs[method][self.seeds[0]]["config"]

    def routed(self, method: str) -> bool:
        return all(self.runs[method][s]["routes"].get("routed", False) for s in self.seeds)

    @property
    def routed_methods(self) -> list[str]:
        return [m for m in self.methods if self.routed(m)]


def check_rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ReportError(f"{where}: expected a success rate in [0, 1], got {value!r}")
    return float(value)


def _read(path: Path) -> Any:
    if not path.exists():
        raise ReportError(f"{path}: missing")
    try:
        return read_json(path)
    except ResultFileError as err:
        raise ReportError(str(err)) from None


def _read_run(files: RunDir, tasks: list[str]) -> dict[str, Any]:
    """One run's files, checked against the task set."""
    log_path = files.eval_log
    if not log_path.exists():
        raise ReportError(f"{log_path}: missing")
    r = {"run": _read(files.run_info), "eval_log": list(read_jsonl(log_path)),
         "eval": _read(files.final_eval), "routes": _read(files.routes)}
    try:
        r["config"] = run_from_dict(r["run"]["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ReportError(f"{files.run_info}: no training config as this version writes it "
                          f"({type(err).__name__}: {err})") from None
    ev, where = r["eval"], files.final_eval
    if list(ev["tasks"]) != tasks:
        raise ReportError(f"{where}: tasks {ev['tasks']} differ from environment.json's {tasks}")
    for t in tasks:
        check_rate(ev["success"][t], f"{where}: success.{t}")
    check_rate(ev["mean_success"], f"{where}: mean_success")
    mw = ev.get("metaworld")
    if not isinstance(mw, dict) or not isinstance(mw.get("success"), dict):
        raise ReportError(f"{where}: no Meta-World protocol results (\"metaworld\"): evaluated by an older "
                          "version; run its evaluate job again")
    for t in tasks:
        check_rate(mw["success"].get(t), f"{where}: metaworld.success.{t}")
    for i, rec in enumerate(r["eval_log"]):
        check_rate(rec["mean_success"], f"{log_path} record {i}: mean_success")
    return r


def load(params_path: str | Path, experiment: str, results: str | Path) -> Data:
    """The experiment's results; raises ParamsError for a bad params.yaml, ReportError for a bad tree."""
    params = load_params(params_path)
    if experiment not in params.experiments:
        raise ReportError(f"{params_path}: no experiment {experiment!r}")
    config = params.experiments[experiment]
    results = Path(results)
    environment = _read(results / rundir.ENVIRONMENT)
    tasks = list(environment["task_set"]["tasks"])
    runs = {m: {s: _read_run(RunDir(rundir.run_path(results, m, s)), tasks) for s in config.seeds}
            for m in config.methods}
    return Data(experiment, config, params.raw["experiments"][experiment], environment, runs, tasks,
                params.render_config(experiment))
