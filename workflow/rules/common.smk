# Helpers shared by the rules: wildcard constraints, the d2r sources each job runs, and the
# parameters each job depends on (PARAMS, the checked params.yaml, comes from the Snakefile).
# Devices, threads and Slurm resources: resources.smk.
#
# What re-runs what. Snakemake's own triggers, nothing custom:
# - params: each rule's `params:` holds exactly what its job depends on in params.yaml
#   (train: RunConfig.training_dict() as JSON; evaluate: final_eval_episodes; ...), so a changed
#   parameter re-runs the jobs that read it, and what comes after them;
# - input: the d2r source files a job runs are inputs, so editing one re-runs the jobs that run it
#   (Snakemake compares checksums of small inputs, so a checkout that only changes file times
#   re-runs nothing);
# - code: the rule's command.
# These triggers use Snakemake's records in .snakemake/ and file times. A fresh clone after
# `dvc pull` has neither records nor meaningful file times: there, run once
#     snakemake --touch --forceall reports/<experiment>.html
# (marks the pulled results as up to date and writes the records; see README "Sharing results").
import os
import shlex

from snakemake.exceptions import WorkflowError

from d2r.config import fingerprint
from d2r.sources import job_sources

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
# (any edit would re-run every job); each rule's `params:` holds the part its job reads.
PYTHON = shlex.quote(sys.executable)


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    method=r"[a-z0-9][a-z0-9-]*",
    seed=r"\d+",


# Results without Snakemake's records: most likely a fresh clone after `dvc pull`.
def _has_records() -> bool:
    return os.path.isdir(".snakemake/metadata") and any(os.scandir(".snakemake/metadata"))


if not _has_records() and any(
    os.path.exists(f"results/{e}/environment.json") for e in EXPERIMENTS
):
    sys.stderr.write(
        "note: results/ holds outputs but .snakemake/ has no records of them (a fresh clone after "
        "`dvc pull`?). If `dvc status` says they are up to date, run once\n"
        "    snakemake --touch --forceall reports/<experiment>.html\n"
        "so that Snakemake takes them as up to date (DVC does not keep file times).\n"
    )


# ---------------------------------------------------------------------------------------------
# The d2r files each job runs (its inputs, so that editing one re-runs the jobs that run it),
# found from the imports of d2r/jobs/<job>.py by d2r.sources: nothing kept by hand.

SOURCES = {job: job_sources(job) for job in ("setup", "train", "evaluate", "analyse", "render", "report")}


# ---------------------------------------------------------------------------------------------
# Parameters of each job (each rule's `params:`).


def training_json(w) -> str:
    """RunConfig.training_dict() as canonical JSON text: everything training depends on."""
    return fingerprint(PARAMS.run(w.experiment, w.method, int(w.seed)).training_dict())


def setup_json(w) -> str:
    exp = PARAMS.experiment(w.experiment)
    return fingerprint({"benchmark": exp.benchmark, "tasks": list(exp.tasks), "goal_mode": exp.goal_mode,
                        "env": config["env"], "device": PARAMS.device})


def final_eval_episodes(w) -> int:
    PARAMS.run(w.experiment, w.method, int(w.seed))  # a clear error for an unknown method or seed
    return PARAMS.experiment(w.experiment).final_eval_episodes


def report_json(w) -> str:
    """The experiment's section of params.yaml and its methods' (the report shows them)."""
    raw = config["experiments"][PARAMS.experiment(w.experiment).name]
    return fingerprint({"experiment": raw, "methods": {m: config["methods"][m] for m in raw["methods"]}})


# ---------------------------------------------------------------------------------------------
# Inputs of the report: every run of the experiment.


def experiment_runs(experiment: str) -> list[str]:
    exp = PARAMS.experiment(experiment)
    return [f"results/{experiment}/{m}/seed{s}" for m in exp.methods for s in exp.seeds]


def report_inputs(w) -> dict:
    runs = experiment_runs(w.experiment)
    return {
        "env": f"results/{w.experiment}/environment.json",
        "runs": [f"{d}/run.json" for d in runs],
        "eval_logs": [f"{d}/eval_log.jsonl" for d in runs],
        "evals": [f"{d}/eval.json" for d in runs],
        "routes": [f"{d}/routes.json" for d in runs],
    }
