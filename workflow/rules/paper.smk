# paper: the results table in the paper's shape (reports/paper.html): every experiment of
# params.yaml that has metrics (metrics/E.json) beside published numbers (d2r/reporting/published.yaml).
#
# It takes the metrics as they are, so asking for the table never trains or re-evaluates anything:
# they are in its build record (rebuilt when one changes or appears) but not given to
# Snakemake as inputs, which would bring every experiment up to date first (days of training).
# Build an experiment's report first (`snakemake --cores all reports/mt10.html`), then the table.


rule paper:
    input:
        unpack(job_inputs("paper")),
    output:
        **job_outputs("paper"),
    log:
        job_log("paper"),
    benchmark:
        job_benchmark("paper")
    threads: 1
    resources:
        gpu=0,
    shell:
        "{PYTHON} -m d2r paper --params {PARAMS_FILE} --out {output.html} --record {output.record} > {log} 2>&1"
