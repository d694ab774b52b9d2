# evaluate: final rollouts of the trained policy with greedy routes and deterministic actions,
# final_eval_episodes episodes per task: per-task success and return, and the routes taken.
# Changing final_eval_episodes re-runs this job (and analyse, report), not training.


rule evaluate:
    input:
        unpack(job_inputs("evaluate")),
    output:
        **job_outputs("evaluate"),
    log:
        job_log("evaluate"),
    benchmark:
        job_benchmark("evaluate")
    threads: 1
    resources:
        gpu=job_gpus,
        runtime=eval_runtime,
        mem_mb=job_mem_mb,
        gpu_model=gpu_model,
    shell:
        "{PYTHON} -m d2r evaluate --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --method {wildcards.method} --seed {wildcards.seed}"
        f" --run-dir {RUN_DIR}"
        " --out {output.eval} --record {output.record} > {log} 2>&1"
