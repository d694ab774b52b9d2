# Resources of the jobs: GPU slots, threads, and what a Slurm job asks for (PARAMS and
# cluster settings from params.yaml; the rules name these functions in `threads:`/`resources:`).
from snakemake.exceptions import WorkflowError

from d2r.runtime.devices import gpu_present

# ---------------------------------------------------------------------------------------------
# Devices, threads, GPU resource.


# resources: gpu = 1 for a job that will use CUDA (device cuda, or auto on a machine with a GPU),
# 0 otherwise (CPU-only machine or device cpu). The profile caps the sum at 1: one such job on
# a GPU at a time. --resources gpu=S lets S runs hold a GPU at once; each job claims the least
# used GPU of the machine itself (d2r.runtime.devices.claim_device), so S = M x (number of GPUs) runs M
# on every GPU.
# (On Slurm see below: gpu is then the preset's, and its scope is local (Snakefile), so the cap
# does not hold back jobs that Slurm places on other nodes' GPUs.)
GPU_PER_JOB = 1 if PARAMS.device == "cuda" or (PARAMS.device == "auto" and gpu_present()) else 0
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
