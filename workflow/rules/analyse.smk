# analyse: routing per task (mean depth, modules used, module use, edge frequency) from the
# final evaluation, and how depth and modules used evolved over the periodic evaluations.
# Files only, no torch: about a second per run.


rule analyse:
    input:
        unpack(job_inputs("analyse")),
    output:
        **job_outputs("analyse"),
    log:
        job_log("analyse"),
    benchmark:
        job_benchmark("analyse")
    threads: 1
    resources:
        gpu=0,
    shell:
        "{PYTHON} -m d2r analyse --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --method {wildcards.method} --seed {wildcards.seed}"
        f" --run-dir {RUN_DIR}"
        " --out {output.routes} --record {output.record} > {log} 2>&1"
