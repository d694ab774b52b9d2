# D2R experiment pipeline: params.yaml -> setup -> train -> evaluate -> analyse (and render) -> report.
# Thin entry point; the rules live in workflow/rules/*.smk and every job is `python -m d2r <job>`.
# What is current is decided from each job's build record, not file times (workflow/rules/common.smk).
#
#   snakemake --cores all reports/smoke.html      # one experiment (the profile profiles/default is used)
#   snakemake -n reports/mt10.html                 # what would run, and why
#
# Parameters come from params.yaml only (the jobs read it too); see README "Pipeline".
import sys

from snakemake.utils import min_version

min_version("9.0")

# Parse-time imports of d2r come from this checkout, as the jobs' `python -m d2r` do.
sys.path.insert(0, str(workflow.basedir))

PARAMS_FILE = "params.yaml"

# The parameters, checked before anything else (YAML syntax, duplicate keys, the JSON schema,
# names and ranges) by d2r.config, as every job checks them: a mistake gives the jobs' one line.
from d2r.config import ParamsError, load_params

try:
    PARAMS = load_params(PARAMS_FILE)
except ParamsError as _err:
    sys.stderr.write(f"error: {_err}\n")
    sys.exit(2)


configfile: PARAMS_FILE


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/setup.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/render.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/paper.smk"


# On a cluster (snakemake --profile profiles/slurm; README "Running on a Slurm cluster"): setup,
# train and evaluate are Slurm jobs; these few-second file-reading jobs run in the Snakemake
# process itself instead of waiting in the queue.
localrules:
    all,
    analyse,
    report,
    paper,


# `gpu` counts GPUs of this machine (profiles/default caps it at 1). On Slurm each job's GPUs are
# on its own node and Slurm does the accounting: a local scope keeps the cap off those jobs.
resource_scopes:
    gpu="local",


rule all:
    """Every experiment's report and metrics (weeks on a CPU: name one target instead)."""
    default_target: True
    input:
        [Job("report", e).outputs()["html"] for e in EXPERIMENTS],
        [Job("report", e).outputs()["metrics"] for e in EXPERIMENTS],


# After a successful run outside DVC: the built experiments recorded in dvc.lock (dvc commit).
include: "workflow/rules/dvc.smk"
