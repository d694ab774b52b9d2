# analyse: routing per task (mean depth, modules used, module use, edge frequency) from the
# final evaluation, and how depth and modules used evolved over the periodic evaluations.
# Files only, no torch: about a second per run.


rule analyse:
    input:
        eval="results/{experiment}/{method}/seed{seed}/eval.json",
        eval_log="results/{experiment}/{method}/seed{seed}/eval_log.jsonl",
        sources=SOURCES["analyse"],
    output:
        routes="results/{experiment}/{method}/seed{seed}/routes.json",
    log:
        "logs/{experiment}/{method}/seed{seed}/analyse.log",
    benchmark:
        "benchmarks/runs/{experiment}/{method}/seed{seed}/analyse.tsv"
    threads: 1
    resources:
        gpu=0,
    shell:
        "{PYTHON} -m d2r analyse"
        " --run-dir results/{wildcards.experiment}/{wildcards.method}/seed{wildcards.seed}"
        " --out {output.routes} > {log} 2>&1"
