# train: one (experiment, method, seed). Resumes from results/.../checkpoints/ after a crash
# (the checkpoints are internal: not a declared output, not shared by DVC). Its build record
# holds RunConfig.training_dict(): everything training depends on, so a change of any of it
# re-runs this job; final_eval_episodes is not in it (evaluate's parameter).
#
# seeds_per_job S > 1 (an experiment's setting): one job trains S seeds of a method together, in
# lockstep in one process on one device (d2r.sac.group), each seed's files exactly where its solo
# job writes them. Snakemake outputs share their wildcards, so such a job's rule is written out
# for its seeds: one rule per group, named train-<experiment>-<method>-seeds<a>-<b>... (`snakemake
# --list-rules`). Each seed keeps its own build record: changing seeds_per_job alone re-runs
# nothing that is complete. On Slurm a group job asks for S times a run's runtime and memory.

SOLO_EXPERIMENTS = [e for e in EXPERIMENTS if PARAMS.experiment(e).seeds_per_job == 1]


rule train:
    wildcard_constraints:
        experiment=one_of(SOLO_EXPERIMENTS),  # the others train by groups (below)
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


for _experiment, _method, _seeds in train_groups():
    _w = SimpleNamespace(experiment=_experiment)  # the wildcards the resource functions read

    rule:
        name:
            group_rule_name(_experiment, _method, _seeds)
        input:
            unpack(group_inputs(_experiment, _method, _seeds)),
        output:
            **group_outputs(_experiment, _method, _seeds),
        log:
            group_log(_experiment, _method, _seeds),
        benchmark:
            group_benchmark(_experiment, _method, _seeds)
        threads: lambda w, x=_w: train_threads(x)
        resources:
            gpu=lambda w, x=_w: job_gpus(x),
            runtime=lambda w, x=_w, n=len(_seeds): n * train_runtime(x),
            mem_mb=lambda w, x=_w, n=len(_seeds): n * job_mem_mb(x),
            cpus_per_task=lambda w, x=_w: train_cpus(x),
            gpu_model=lambda w, x=_w: gpu_model(x),
        params:
            seeds=" ".join(f"--seed {s}" for s in _seeds),
            # the job fills in {seed} per seed (a function: Snakemake would take it for a wildcard)
            out=lambda w, e=_experiment, m=_method: shlex.quote(Job("train", e, m, "{seed}").run_dir),
            record=lambda w, e=_experiment, m=_method: shlex.quote(Job("train", e, m, "{seed}").record),
        shell:
            f"{{PYTHON}} -m d2r train --params {{PARAMS_FILE}} --experiment {_experiment} --method {_method}"
            " {params.seeds} --out {params.out} --record {params.record} > {log} 2>&1"
