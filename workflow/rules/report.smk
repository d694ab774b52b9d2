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
        "logs/{experiment}/report.log",
    benchmark:
        "benchmarks/runs/{experiment}/report.tsv"
    threads: 1
    resources:
        gpu=0,
    shell:
        "{PYTHON} -m d2r report --params {PARAMS_FILE} --experiment {wildcards.experiment}"
        " --results results/{wildcards.experiment} --out {output.html} --metrics {output.metrics}"
        " --timing {output.timing} --curves {output.curves} --videos {input.videos}"
        " --record {output.record} > {log} 2>&1"
