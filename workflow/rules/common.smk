# Helpers shared by the rules: wildcard constraints, each job's outputs and inputs (d2r.pipeline.layout,
# the one definition of the results layout) and whether what is already there is current
# (d2r.pipeline.records). PARAMS, the checked params.yaml, comes from the Snakefile.
#
# What re-runs what is decided from content, not from file times or Snakemake's .snakemake/
# records (which a clone, a `dvc pull` or a DVC experiment's temporary workspace does not have):
# every job writes a build record of its parameters, code, inputs and outputs, and before a job is
# planned its record is compared with today's params.yaml, code and files (d2r.pipeline.records.Freshness).
# An outdated job is forced (with one line saying why); a current one is left alone whatever the
# file times say: every input is `ancient`, and profiles/default sets `rerun-triggers: mtime`, so
# Snakemake's own records add nothing. A dry run (-n) shows that plan and changes no file.
import re
import shlex
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from d2r.pipeline.layout import PAPER, RUN_JOBS, Job, group_benchmark, group_label, group_log, seed_groups
from d2r.pipeline.layout import inputs as pipeline_inputs
from d2r.pipeline.records import Freshness
from d2r.pipeline.sources import job_sources

# PARAMS: the checked params.yaml (Snakefile). The jobs read params.yaml themselves, so
# `--config`/`--configfile` overrides would not reach them.
if PARAMS.raw != config:
    raise WorkflowError(
        f"the Snakemake config differs from {PARAMS_FILE}; the jobs read {PARAMS_FILE} itself, so "
        "--config/--configfile overrides are not supported: edit params.yaml "
        "(or use `dvc exp run -S key=value`)"
    )

EXPERIMENTS = list(PARAMS.experiments)
# The interpreter running Snakemake runs the jobs too. Used in the commands directly, not as a
# param: moving the virtualenv must not re-run anything. Likewise params.yaml is not an input
# (any edit would re-run every job); each job's build record holds the part it reads.
PYTHON = shlex.quote(sys.executable)


# An experiment is never named "paper" (d2r.config refuses it): reports/paper.html is the paper table's.
wildcard_constraints:
    experiment=r"(?!paper(?![A-Za-z0-9_-]))[A-Za-z0-9][A-Za-z0-9_-]*",
    method=r"[a-z0-9][a-z0-9-]*",
    seed=r"\d+",


# ---------------------------------------------------------------------------------------------
# The d2r files each job runs, found from the imports of d2r/jobs/<job>.py by d2r.pipeline.sources:
# inputs of its rule, and in its build record.

SOURCES = {job: job_sources(job) for job in ("setup", *RUN_JOBS, "report", PAPER)}


# ---------------------------------------------------------------------------------------------
# Outputs, inputs, logs and benchmarks of each rule, and the directories its command names, from
# d2r.pipeline.layout.


def job_of(name: str, wildcards) -> Job:
    """The job a rule runs for these wildcards (or, with the rule's own patterns, its outputs)."""
    if name in RUN_JOBS:
        return Job(name, wildcards.experiment, wildcards.method, wildcards.seed)
    if name == PAPER:
        return Job(PAPER)
    return Job(name, wildcards.experiment)


PATTERNS = SimpleNamespace(experiment="{experiment}", method="{method}", seed="{seed}")


def job_outputs(name: str) -> dict:
    """A rule's outputs: the job's files (d2r.pipeline.layout) and its build record."""
    return job_outputs_of(job_of(name, PATTERNS))


def job_outputs_of(job: Job) -> dict:
    outputs = {**job.outputs(), "record": job.record}
    if job.name == "render":
        outputs["videos"] = directory(outputs["videos"])
    return outputs


def job_log(name: str) -> str:
    """A rule's log: what its job prints."""
    return job_of(name, PATTERNS).log


def job_benchmark(name: str) -> str:
    """A rule's benchmark: Snakemake's measurement of its job (wall time, memory)."""
    return job_of(name, PATTERNS).benchmark


# The same patterns in a rule's shell command: results/E/M/seedS (one run's directory) and results/E.
SHELL_PATTERNS = SimpleNamespace(experiment="{wildcards.experiment}", method="{wildcards.method}",
                                 seed="{wildcards.seed}")
RUN_DIR = job_of("train", SHELL_PATTERNS).run_dir
EXPERIMENT_DIR = job_of("report", SHELL_PATTERNS).experiment_dir


def job_inputs(name: str):
    """A rule's input function: the job's sources and the files it reads; an outdated job is
    forced on the way. Their times decide nothing (see the top of this file), so they are
    `ancient`, but for the outputs of a job that will run (outdated, or forced by --forcerun):
    Snakemake then re-runs this job after that one (it does not carry a job's re-run over ancient
    inputs, and skips the forced flag of a job below one that re-runs)."""

    def inputs(wildcards) -> dict:
        job = job_of(name, wildcards)
        rebuild_if_outdated(job)
        if name == PAPER:   # the metrics as they are: in its record, not Snakemake inputs (paper.smk)
            return {"sources": ancient(SOURCES[name])}
        files = {key: [path(before, output) for before, output in items]
                 for key, items in pipeline_inputs(job, PARAMS).items()}
        return {"sources": ancient(SOURCES[name]), **files}

    def path(before: Job, output: str):
        file = before.outputs()[output]
        return file if outdated(before) or forced(before) else ancient(file)

    return inputs


# ---------------------------------------------------------------------------------------------
# Freshness: each job of the plan against its build record.

FRESHNESS = Freshness(PARAMS)
SAID: set = set()           # jobs whose reason was printed (an input function may run twice)
REPORTS: set = set()        # experiments whose report is in this run's plan (see the Snakefile's onsuccess)


def outdated(job: Job) -> bool:
    """Inside a cluster job (`--mode remote`) the submitting Snakemake has decided already."""
    return workflow.is_main_process and FRESHNESS.outdated(job)


def rebuild_if_outdated(job: Job) -> None:
    """Force the job when its outputs are not what today's parameters, code and inputs make,
    saying why in one line. Not a job never built (its missing outputs make it run), nor one that
    reads the outputs of an outdated job (it runs after that one: its inputs are not ancient).
    Inside a cluster job (`--mode remote`) the submitting Snakemake has decided already."""
    if not workflow.is_main_process:
        return
    if job.name == "report":
        REPORTS.add(job.experiment)
    why, root_cause = FRESHNESS.verdict(job)
    if why is None or not root_cause:
        return
    if job not in SAID:
        SAID.add(job)
        sys.stderr.write(f"outdated: {job.label}: {why}\n")
    force(job.record)


def forced_sets() -> tuple[set, set]:
    """The DAG's forced files and rules (--forcerun, and ours), from within its construction.
    Snakemake has no public API for them: they are used as Snakemake 9.27.1 (pinned) keeps them,
    and a Snakemake without them stops here (tests/test_pipeline.py and test_dvc.py check plans)."""
    dag = getattr(workflow, "_dag", None)
    files, rules = getattr(dag, "forcefiles", None), getattr(dag, "forcerules", None)
    if not isinstance(files, set) or not isinstance(rules, set):
        raise WorkflowError(
            "cannot mark an outdated result for rebuilding: this Snakemake keeps no DAG.forcefiles "
            "set (the pipeline is written for snakemake==9.27.1; see workflow/rules/common.smk)"
        )
    return files, rules


def force(output: str) -> None:
    """Snakemake's --forcerun for the job that writes `output`."""
    forced_sets()[0].add(output)


def forced(job: Job) -> bool:
    """Whether the user forced the job (--forcerun a rule or one of its files, --forceall)."""
    files, rules = forced_sets()
    return job.name in {rule.name for rule in rules} or not files.isdisjoint([*job.outputs().values(), job.record])


# ---------------------------------------------------------------------------------------------
# Training by groups of seeds (seeds_per_job > 1; workflow/rules/train.smk).


def one_of(names) -> str:
    """A wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def train_groups():
    """(experiment, method, seeds) of every training job that trains several seeds."""
    return [(e, m, seeds) for e in EXPERIMENTS if PARAMS.experiment(e).seeds_per_job > 1
            for m in PARAMS.experiment(e).methods for seeds in seed_groups(PARAMS, e)]


def group_rule_name(experiment: str, method: str, seeds) -> str:
    return f"train-{experiment}-{method}-{group_label(seeds)}"


def group_outputs(experiment: str, method: str, seeds) -> dict:
    """Every seed's training outputs and build record, named seed<s>_<name>."""
    return {f"seed{s}_{key}": path for s in seeds
            for key, path in job_outputs_of(Job("train", experiment, method, s)).items()}


def group_inputs(experiment: str, method: str, seeds):
    """The union of the seeds' inputs (each seed's freshness checked on the way)."""
    solo = job_inputs("train")

    def inputs(wildcards) -> dict:
        merged: dict = {}
        for s in seeds:
            for key, files in solo(SimpleNamespace(experiment=experiment, method=method, seed=str(s))).items():
                merged.setdefault(key, [])
                merged[key] += [f for f in (files if isinstance(files, list) else [files]) if f not in merged[key]]
        return merged

    return inputs
