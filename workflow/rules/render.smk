# render: videos of greedy episodes of the final policy, one per task, for each method's first
# seed (params.yaml `render:`, per experiment `experiments.E.render:`), embedded in the report.
# Its own env stream and process: no result changes. Off (render.enabled: false): no render jobs,
# and the report says videos are off. Needs a MuJoCo GL backend: EGL (a GPU) or OSMesa
# (apt-get install -y libosmesa6); without one the job stops with one line saying so.
import dataclasses

from d2r.config import render_config

RENDER = {e: render_config(PARAMS.raw, e, PARAMS_FILE) for e in EXPERIMENTS}


def render_json(w) -> str:
    """What a video depends on besides the model: the experiment's render settings."""
    return fingerprint(dataclasses.asdict(RENDER[w.experiment]))


def video_dirs(w) -> list[str]:
    """The report's videos: results/E/M/seed<first seed>/videos per method, none when off."""
    if not RENDER[w.experiment].enabled:
        return []
    exp = PARAMS.experiment(w.experiment)
    return [f"results/{w.experiment}/{m}/seed{exp.seeds[0]}/videos" for m in exp.methods]


rule render:
    input:
        model="results/{experiment}/{method}/seed{seed}/model.pt",
        run="results/{experiment}/{method}/seed{seed}/run.json",
        sources=SOURCES["render"],
    output:
        videos=directory("results/{experiment}/{method}/seed{seed}/videos"),
    params:
        render=render_json,
    log:
        "logs/{experiment}/{method}/seed{seed}/render.log",
    benchmark:
        "benchmarks/runs/{experiment}/{method}/seed{seed}/render.tsv"
    threads: 1
    resources:
        gpu=0,   # the policy acts on the CPU; EGL, where used, needs no CUDA slot
        runtime=eval_runtime,
        mem_mb=job_mem_mb,
    shell:
        "{PYTHON} -m d2r render --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --method {wildcards.method} --seed {wildcards.seed}"
        " --run-dir results/{wildcards.experiment}/{wildcards.method}/seed{wildcards.seed}"
        " --out {output.videos} > {log} 2>&1"
