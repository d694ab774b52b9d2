# After a successful run, record each experiment whose report this run built in DVC's lock file
# (`dvc commit --force experiment@E`: runs nothing, stores the outputs in DVC's cache), so that
# the tree is always in the state `dvc status`, `dvc push` and `dvc exp run` expect. Without this
# a tree Snakemake built has no hash info in dvc.lock, and `dvc exp run` deletes its results
# before running (DVC checks the workspace out from dvc.lock first). Not when DVC itself runs
# Snakemake (`dvc repro`, `dvc exp run`: DVC_STAGE is set, and DVC records the stage itself), not
# in a dry run, and only for an experiment whose report is current once the run is over (a run
# that built only part of it records nothing).
import os
import subprocess

import yaml

from d2r.pipeline.layout import Job


def dvc_experiments() -> set[str]:
    """The experiments of this run's plan that have a stage in dvc.yaml (`experiment@E`); none when
    DVC runs Snakemake or there is no DVC repository here."""
    if "DVC_STAGE" in os.environ or not os.path.isdir(".dvc") or not REPORTS:
        return set()
    try:
        stages = yaml.safe_load(open("dvc.yaml"))["stages"]["experiment"]["foreach"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return set()
    return REPORTS & set(stages) if isinstance(stages, list) else set()


def record_in_dvc() -> None:
    experiments = dvc_experiments()
    if not experiments:
        return
    after = Freshness(PARAMS)   # the digests as the run left them
    for experiment in sorted(experiments):
        if after.outdated(Job("report", experiment)):
            continue
        stage = f"experiment@{experiment}"
        proc = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", stage],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            sys.stderr.write(f"recorded {stage} in dvc.lock (dvc commit): `dvc push {stage}` shares it\n")
        else:
            sys.stderr.write(f"note: could not record {stage} in dvc.lock; run `dvc commit --force {stage}` "
                             f"before `dvc exp run` or `dvc push`: {(proc.stderr or proc.stdout).strip()}\n")


def warn_if_unrecorded() -> None:
    """After a failed run: an experiment DVC has no record of would lose its results, checkpoints
    included, to `dvc exp run`, which checks the workspace out from dvc.lock first."""
    experiments = dvc_experiments()
    if not experiments:
        return
    try:
        locked = set((yaml.safe_load(open("dvc.lock")) or {}).get("stages", {}))
    except (OSError, yaml.YAMLError, AttributeError):
        locked = set()
    for experiment in sorted(experiments):
        stage = f"experiment@{experiment}"
        if stage not in locked and os.path.isdir(Job("report", experiment).experiment_dir):
            sys.stderr.write(f"note: {stage} is not recorded in dvc.lock yet: finish it with the same command "
                             f"(or `dvc repro {stage}`) before any `dvc exp run`, which would delete its results\n")


onsuccess:
    record_in_dvc()


onerror:
    warn_if_unrecorded()
