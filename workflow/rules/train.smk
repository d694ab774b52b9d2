# train: one (experiment, method, seed). Resumes from results/.../checkpoints/ after a crash
# (the checkpoints are internal: not a declared output, not shared by DVC). Its build record
# holds RunConfig.training_dict(): everything training depends on, so a change of any of it
# re-runs this job; final_eval_episodes is not in it (evaluate's parameter).


rule train:
    input:
        unpack(job_inputs("train")),
    output:
        **job_outputs("train"),
    log:
        job_log("train"),
    benchmark:
        job_benchmark("train")
    threads: train_threads
    resources:
        gpu=job_gpus,
        # Slurm (profiles/slurm) reads these; from params.yaml `cluster:` of the preset.
        runtime=train_runtime,
        mem_mb=job_mem_mb,
        cpus_per_task=train_cpus,
        gpu_model=gpu_model,
    shell:
        "{PYTHON} -m d2r train --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --method {wildcards.method} --seed {wildcards.seed}"
        f" --out {RUN_DIR}"
        " --record {output.record} > {log} 2>&1"
