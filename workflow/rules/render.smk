# render: videos of greedy episodes of the final policy, one per task, for each method's first
# seed (params.yaml `render:`, per experiment `experiments.E.render:`), embedded in the report.
# Its own env stream and process: no result changes. Off (render.enabled: false): no render jobs
# (d2r.pipeline.layout.video_jobs), and the report says videos are off. Needs a MuJoCo GL backend: EGL
# (a GPU) or OSMesa (apt-get install -y libosmesa6); without one the job stops with one line.


rule render:
    input:
        unpack(job_inputs("render")),
    output:
        **job_outputs("render"),
    log:
        job_log("render"),
    benchmark:
        job_benchmark("render")
    threads: 1
    resources:
        gpu=0,   # the policy acts on the CPU; EGL, where used, needs no CUDA slot
        runtime=eval_runtime,
        mem_mb=job_mem_mb,
    shell:
        "{PYTHON} -m d2r render --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --method {wildcards.method} --seed {wildcards.seed}"
        f" --run-dir {RUN_DIR}"
        " --out {output.videos} --record {output.record} > {log} 2>&1"
