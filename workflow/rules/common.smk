# Helpers shared by the rules: wildcard constraints, the d2r sources each job runs, and the
# parameters each job depends on (PARAMS, the checked params.yaml, comes from the Snakefile).
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
import shutil
from glob import glob

from snakemake.exceptions import WorkflowError

from d2r.config import fingerprint

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
# Devices, threads, GPU resource.


def _cuda_present() -> bool:
    """A cheap guess, without importing torch, of whether this machine has an NVIDIA GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


# resources: gpu = 1 for a job that will use CUDA (device cuda, or auto on a machine with a GPU),
# 0 otherwise (CPU-only machine or device cpu). The profile caps the sum at 1: one such job on
# the GPU at a time. To share the GPU between N runs: --resources gpu=N (a run uses cuda:0).
# (On Slurm see below: gpu is then the preset's, and its scope is local (Snakefile), so the cap
# does not hold back jobs that Slurm places on other nodes' GPUs.)
GPU_PER_JOB = 1 if PARAMS.device == "cuda" or (PARAMS.device == "auto" and _cuda_present()) else 0
# threads: on a CPU one thread per training run gives the most throughput per core (independent
# runs fill the cores); on a GPU a second thread keeps environment stepping off the critical
# path. Snakemake exports OMP_NUM_THREADS etc. = threads to the job. Override: --set-threads train=4.
TRAIN_THREADS = 2 if GPU_PER_JOB else 1


# ---------------------------------------------------------------------------------------------
# Slurm (`snakemake --profile profiles/slurm`, snakemake-executor-plugin-slurm): setup, train and
# evaluate each run as one Slurm job asking for what params.yaml `cluster:` gives the
# experiment's budget preset (runtime, mem_mb, threads = cpus, gpu); analyse and report are
# `localrules` (Snakefile): seconds of reading files, run by the submitting Snakemake itself.
#
# On Slurm a job's GPU request is the preset's `gpus` (the submitting machine, often a login
# node without a GPU, says nothing about the compute nodes); on one machine it is GPU_PER_JOB.
# Resources are evaluated when the DAG is built, by the submitting Snakemake (executor "slurm":
# sbatch --gpus/--cpus-per-task) and again by the Snakemake inside each Slurm job (executor
# "slurm-jobstep": srun --gpus/--cpus-per-task), from the same params.yaml: the same values.
# A dry run (-n) runs the "dryrun" executor and so shows the one-machine gpu and threads.
CLUSTER_EXECUTORS = ("slurm", "slurm-jobstep")


def on_cluster() -> bool:
    plugin = workflow.executor_plugin
    return plugin is not None and plugin.name in CLUSTER_EXECUTORS


def cluster_resources(w):
    """params.yaml `cluster:` entry of the experiment's preset (d2r.config.ClusterResources)."""
    return PARAMS.cluster_resources(PARAMS.experiment(w.experiment).preset)


def job_gpus(w) -> int:
    """GPUs of a train / evaluate job: the preset's on Slurm (none with device cpu), else GPU_PER_JOB."""
    if not on_cluster():
        return GPU_PER_JOB
    if PARAMS.device == "cpu":
        return 0
    preset, gpus = PARAMS.experiment(w.experiment).preset, cluster_resources(w).gpus
    if PARAMS.device == "cuda" and gpus == 0:
        raise WorkflowError(
            f"params.yaml: device is cuda, but cluster.{preset}.gpus (or cluster.default.gpus) is 0: "
            f"the Slurm jobs of experiment {w.experiment} would get no GPU (set gpus: 1, or device: auto)"
        )
    return gpus


def setup_gpus(w) -> int:
    """setup only looks at the device: none on one machine; on Slurm the GPU its runs will have."""
    return job_gpus(w) if on_cluster() else 0


def train_threads(w) -> int:
    """TRAIN_THREADS on one machine; on Slurm the preset's `cpus` (the job's cores)."""
    return cluster_resources(w).cpus if on_cluster() else TRAIN_THREADS


def train_cpus(w):
    """Slurm --cpus-per-task of a training job (None on one machine: no such resource).

    Not left to `threads`: the submitting Snakemake caps threads at its own machine's cores
    (profile `cores: all`), the Snakemake inside the job at the node's, and both must ask the same."""
    return cluster_resources(w).cpus if on_cluster() else None


def gpu_model(w):
    """Slurm GPU type (sbatch --gpus=<model>:N) for jobs that get a GPU, when the preset names one."""
    return cluster_resources(w).gpu_model if on_cluster() and job_gpus(w) else None


def train_runtime(w) -> int:
    return cluster_resources(w).runtime_min


def eval_runtime(w) -> int:
    return cluster_resources(w).eval_runtime_min


def job_mem_mb(w) -> int:
    return cluster_resources(w).mem_mb


# ---------------------------------------------------------------------------------------------
# d2r sources each job runs (listed as its inputs, so that editing one re-runs the job).

_CORE = ["d2r/__init__.py", "d2r/__main__.py", "d2r/cli.py", "d2r/config.py", "d2r/io.py",
         "d2r/params.schema.yaml"]
# Training and evaluation import most of the package: all of it except the downstream jobs
# (the report's package d2r/report/ and its job d2r/jobs/report.py are not in these globs).
_NOT_TRAINING = {"d2r/analyse.py"}
_PACKAGE = sorted(set(glob("d2r/*.py") + glob("d2r/nets/*.py") + _CORE) - _NOT_TRAINING)
# The report job: its entry point and the d2r.report package (besides d2r.config and d2r.io, in _CORE).
_REPORT = ["d2r/jobs/__init__.py", "d2r/jobs/report.py"] + [
    f"d2r/report/{name}.py" for name in ("__init__", "load", "stats", "metrics", "figures", "html", "videos", "page")]

SOURCES = {
    "setup": sorted(set(_CORE + ["d2r/setup.py", "d2r/envs.py", "d2r/provenance.py"])),
    "train": _PACKAGE,
    "evaluate": _PACKAGE,
    "analyse": sorted(set(_CORE + ["d2r/analyse.py"])),
    "report": sorted(set(_CORE + _REPORT)),
}
for _step, _files in SOURCES.items():
    _missing = [f for f in _files if not os.path.exists(f)]
    if _missing:
        raise WorkflowError(f"d2r sources of the {_step} job are missing: {', '.join(_missing)}")


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


# ---------------------------------------------------------------------------------------------
# Rollout videos (issue 17): d2r/render.py runs in the render job only (workflow/rules/render.smk):
# it is not a source of training or evaluation, so editing it re-runs no training. Render runs the
# training package (agent, nets, envs).
_RENDER_ONLY = ["d2r/render.py"]
for _step in ("train", "evaluate"):
    SOURCES[_step] = [f for f in SOURCES[_step] if f not in _RENDER_ONLY]
SOURCES["render"] = sorted(set(SOURCES["train"] + _RENDER_ONLY))
_missing = [f for f in _RENDER_ONLY if not os.path.exists(f)]
if _missing:
    raise WorkflowError(f"d2r sources of the render job are missing: {', '.join(_missing)}")
