# report: every method and seed of an experiment side by side, as one self-contained HTML file
# (reports/{experiment}.html) and a small metrics file for `dvc metrics` (metrics/{experiment}.json).


rule report:
    input:
        unpack(report_inputs),
        sources=SOURCES["report"],
    output:
        html="reports/{experiment}.html",
        metrics="metrics/{experiment}.json",
        timing="reports/{experiment}.timing.json",
    params:
        experiment=report_json,
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
        " --timing {output.timing}"
        " > {log} 2>&1"
