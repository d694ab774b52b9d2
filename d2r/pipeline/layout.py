"""The pipeline's jobs, defined once: what each job reads, writes and depends on in params.yaml.

The Snakemake rules take their outputs, inputs, logs and benchmarks from here; each job writes a build record of
what it was made from (d2r.pipeline.records) with the same definitions, its parameters among them; and the
freshness check of every job Snakemake plans compares the two. No torch and no simulator (the Snakefile imports it).

    results/E/environment.json                setup      (record: results/E/records/setup.json)
    results/E/M/seedS/{model.pt, run.json,    train      (record: results/E/M/seedS/records/train.json)
        train_log.jsonl, eval_log.jsonl}
    results/E/M/seedS/eval.json               evaluate
    results/E/M/seedS/routes.json             analyse
    results/E/M/seedS/videos/                 render     (each method's first seed, when enabled)
    reports/E.html, metrics/E.json,           report     (record: results/E/records/report.json)
        reports/E.timing.json, reports/curves/E.csv
    reports/paper.html                        paper      (record: results/records/paper.json)

Each job's log (what it prints) and Snakemake's benchmark of it (wall time, memory) lie beside
the results, in the same places under logs/ and benchmarks/runs/:

    logs/E/M/seedS/<job>.log, benchmarks/runs/E/M/seedS/<job>.tsv     train, evaluate, analyse, render
    logs/E/<job>.log,         benchmarks/runs/E/<job>.tsv             setup, report
    logs/paper.log,           benchmarks/runs/paper.tsv               paper

The paper table is the one job of no experiment: it reads the metrics of every experiment of
params.yaml that has them on disk when it is planned or run (metrics/E.json; none is built for
it), so its inputs are whatever experiments exist.

A job's experiment, method and seed may be Snakemake patterns ("{experiment}", ...): its outputs
are then the rule's output patterns.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from d2r.config import Params
from d2r.runtime import rundir

RESULTS = "results"
LOGS = "logs"                     # each job's log: what it prints
BENCHMARKS = "benchmarks/runs"    # Snakemake's benchmark of each job: wall time, memory
RECORDS = "records"          # each job's build record, beside its outputs (shared by DVC with them)
#: the jobs of one run (experiment, method, seed); setup and report are one per experiment
RUN_JOBS = ("train", "evaluate", "analyse", "render")
PAPER = "paper"       # the paper table, of every experiment that has metrics (no experiment of its own)
JOBS = ("setup", *RUN_JOBS, "report", PAPER)


@dataclass(frozen=True)
class Job:
    name: str
    experiment: str | None = None
    method: str | None = None
    seed: int | str | None = None

    def __post_init__(self):
        if isinstance(self.seed, str) and self.seed.isdigit():  # from a wildcard or the command line
            object.__setattr__(self, "seed", int(self.seed))
        if self.name not in JOBS:
            raise ValueError(f"unknown job {self.name!r}")
        if (self.name in RUN_JOBS) != (self.method is not None and self.seed is not None):
            raise ValueError(f"job {self.name} needs a method and a seed exactly when it is one run's")
        if (self.name == PAPER) != (self.experiment is None):
            raise ValueError(f"job {self.name} needs an experiment exactly when it is not the paper table")

    @property
    def label(self) -> str:
        if self.experiment is None:
            return self.name
        where = self.experiment if self.method is None else f"{self.experiment}/{self.method}/seed{self.seed}"
        return f"{self.name} {where}"

    @property
    def experiment_dir(self) -> str:
        """results/E: the experiment's results (the report reads them all)."""
        return f"{RESULTS}/{self.experiment}"

    @property
    def run_dir(self) -> str:
        return str(rundir.run_path(self.experiment_dir, self.method, self.seed))

    @property
    def record(self) -> str:
        """The job's build record (d2r.pipeline.records)."""
        base = self.run_dir if self.name in RUN_JOBS else RESULTS if self.name == PAPER else self.experiment_dir
        return f"{base}/{RECORDS}/{self.name}.json"

    @property
    def log(self) -> str:
        """What the job prints (its stdout and stderr)."""
        return self._beside_results(LOGS, ".log")

    @property
    def benchmark(self) -> str:
        """Snakemake's benchmark of the job (wall time, memory)."""
        return self._beside_results(BENCHMARKS, ".tsv")

    def _beside_results(self, root: str, suffix: str) -> str:
        """root/E/M/seedS/<job><suffix> for a run's job, root/E/<job><suffix> for an experiment's,
        root/<job><suffix> for the paper table."""
        if self.name in RUN_JOBS:
            root = str(rundir.run_path(f"{root}/{self.experiment}", self.method, self.seed))
        elif self.experiment is not None:
            root = f"{root}/{self.experiment}"
        return f"{root}/{self.name}{suffix}"

    def outputs(self) -> dict[str, str]:
        """The files (render: a directory) the job writes, by name; its record not included."""
        run = self.run_dir if self.name in RUN_JOBS else None
        e = self.experiment
        return {
            "setup": lambda: {"env": f"{RESULTS}/{e}/{rundir.ENVIRONMENT}"},
            "train": lambda: {"model": f"{run}/{rundir.MODEL}", "run": f"{run}/{rundir.RUN_INFO}",
                              "train_log": f"{run}/{rundir.TRAIN_LOG}", "eval_log": f"{run}/{rundir.EVAL_LOG}"},
            "evaluate": lambda: {"eval": f"{run}/{rundir.FINAL_EVAL}"},
            "analyse": lambda: {"routes": f"{run}/{rundir.ROUTES}"},
            "render": lambda: {"videos": f"{run}/{rundir.VIDEOS}"},
            "report": lambda: {"html": f"reports/{e}.html", "metrics": f"metrics/{e}.json",
                               "timing": f"reports/{e}.timing.json", "curves": f"reports/curves/{e}.csv"},
            PAPER: lambda: {"html": "reports/paper.html"},
        }[self.name]()

    def run_job(self, name: str) -> Job:
        return Job(name, self.experiment, self.method, self.seed)


def runs(params: Params, experiment: str) -> list[Job]:
    """The training jobs of an experiment, methods in order, then seeds."""
    exp = params.experiment(experiment)
    return [Job("train", experiment, m, s) for m in exp.methods for s in exp.seeds]


def video_jobs(params: Params, experiment: str) -> list[Job]:
    """The render jobs the report embeds: each method's first seed; none when videos are off."""
    if not params.render_config(experiment).enabled:
        return []
    exp = params.experiment(experiment)
    return [Job("render", experiment, m, exp.seeds[0]) for m in exp.methods]


def inputs(job: Job, params: Params) -> dict[str, list[tuple[Job, str]]]:
    """What a job reads from other jobs, by name: (the job that writes it, its output's name)."""
    if job.name in ("setup", "train"):
        return {}
    if job.name in ("evaluate", "render"):
        train = job.run_job("train")
        return {"model": [(train, "model")], "run": [(train, "run")]}
    if job.name == "analyse":
        return {"eval": [(job.run_job("evaluate"), "eval")], "eval_log": [(job.run_job("train"), "eval_log")]}
    if job.name == PAPER:
        return {"metrics": [(r, "metrics") for r in existing_reports(params)]}
    trains = runs(params, job.experiment)
    return {
        "env": [(Job("setup", job.experiment), "env")],
        "runs": [(t, "run") for t in trains],
        "eval_logs": [(t, "eval_log") for t in trains],
        "evals": [(t.run_job("evaluate"), "eval") for t in trains],
        "routes": [(t.run_job("analyse"), "routes") for t in trains],
        "videos": [(r, "videos") for r in video_jobs(params, job.experiment)],
    }


def existing_reports(params: Params) -> list[Job]:
    """The report jobs of params.yaml's experiments whose metrics are on disk now (paths are relative
    to the checkout, where the jobs run), in params.yaml's order: what the paper table reads."""
    reports = [Job("report", e) for e in params.experiments]
    return [r for r in reports if os.path.isfile(r.outputs()["metrics"])]


def input_files(job: Job, params: Params) -> dict[str, list[str]]:
    return {name: [j.outputs()[out] for j, out in items] for name, items in inputs(job, params).items()}


def upstream(job: Job, params: Params) -> list[Job]:
    """The jobs whose outputs this job reads, each once."""
    found: dict[Job, None] = {}
    for items in inputs(job, params).values():
        found.update((j, None) for j, _ in items)
    return list(found)


def job_params(job: Job, params: Params) -> dict[str, Any]:
    """Exactly what the job depends on in params.yaml (in its build record): a change re-runs it."""
    if job.name == "setup":
        exp = params.experiment(job.experiment)
        return {"benchmark": exp.benchmark, "tasks": list(exp.tasks), "goal_mode": exp.goal_mode,
                "env": dataclasses.asdict(params.env), "device": params.device}
    if job.name == "train":
        return params.run(job.experiment, job.method, int(job.seed)).training_dict()
    if job.name == "evaluate":
        params.run(job.experiment, job.method, int(job.seed))  # a clear error for an unknown method or seed
        exp = params.experiment(job.experiment)
        return {"final_eval_episodes": exp.final_eval_episodes, "metaworld_eval_episodes": exp.metaworld_eval_episodes}
    if job.name == "analyse":
        return {}
    if job.name == "render":
        return dataclasses.asdict(params.render_config(job.experiment))
    if job.name == PAPER:
        return {}        # it reads the metrics files only (and d2r/reporting/published.yaml, as its code)
    # report: the experiment as written (the page shows it verbatim), its methods' entries (the
    # page reads their settings from run.json, an input: these only re-run it with training) and videos
    # (not seeds_per_job nor group_update: how training is scheduled changes no result)
    raw = params.raw["experiments"][params.experiment(job.experiment).name]
    raw = {key: value for key, value in raw.items() if key not in ("seeds_per_job", "group_update")}
    return {"experiment": raw, "methods": {m: params.raw["methods"][m] for m in raw["methods"]},
            "videos": params.render_config(job.experiment).enabled}


def group_label(seeds) -> str:
    """seeds0-1: a training job of several seeds, in its rule's name and its log's folder."""
    return "seeds" + "-".join(str(s) for s in seeds)


def group_log(experiment: str, method: str, seeds) -> str:
    """What a training job of several seeds prints (one log for the group)."""
    return f"{LOGS}/{experiment}/{method}/{group_label(seeds)}/train.log"


def group_benchmark(experiment: str, method: str, seeds) -> str:
    return f"{BENCHMARKS}/{experiment}/{method}/{group_label(seeds)}/train.tsv"


def seed_groups(params: Params, experiment: str) -> list[tuple[int, ...]]:
    """The experiment's seeds as its training jobs take them: `seeds_per_job` at a time, in order."""
    exp = params.experiment(experiment)
    size = exp.seeds_per_job
    return [tuple(exp.seeds[i:i + size]) for i in range(0, len(exp.seeds), size)]


def experiment_jobs(params: Params, experiment: str) -> list[Job]:
    """Every job the experiment's report is built from, the report last."""
    trains = runs(params, experiment)
    jobs = [Job("setup", experiment), *trains]
    jobs += [t.run_job(name) for name in ("evaluate", "analyse") for t in trains]
    return [*jobs, *video_jobs(params, experiment), Job("report", experiment)]
