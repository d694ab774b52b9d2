# setup: record versions of python, torch, mujoco, metaworld, ..., resolve the device, and build
# the experiment's task set once, so that a broken install fails at once with a clear message.
# Highest priority: it runs before the training jobs start. Training does not take its output
# as input, so a re-run of setup (say, setup.py edited) does not re-train anything.


rule setup:
    input:
        unpack(job_inputs("setup")),
    output:
        **job_outputs("setup"),
    log:
        job_log("setup"),
    benchmark:
        job_benchmark("setup")
    priority: 100
    threads: 1
    resources:
        gpu=setup_gpus,
        runtime=eval_runtime,
        mem_mb=job_mem_mb,
        gpu_model=gpu_model,
    shell:
        "{PYTHON} -m d2r setup --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --out {output.env} --record {output.record} > {log} 2>&1"
