# report: every method and seed of an experiment side by side, as one self-contained HTML file
# (reports/{experiment}.html), a small metrics file for `dvc metrics` (metrics/{experiment}.json)
# and the learning curves for `dvc plots` (reports/curves/{experiment}.csv). The rollout videos
# (render.smk) are inputs when render is enabled for the experiment.


rule report:
    input:
        unpack(job_inputs("report")),
    output:
        **job_outputs("report"),
    log:
        job_log("report"),
    benchmark:
        job_benchmark("report")
    threads: 1
    resources:
        gpu=0,
    shell:
        "{PYTHON} -m d2r report --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        f" --results {EXPERIMENT_DIR}"
        " --out {output.html} --metrics {output.metrics}"
        " --timing {output.timing} --curves {output.curves} --videos {input.videos}"
        " --record {output.record} > {log} 2>&1"
