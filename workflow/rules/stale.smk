# Nothing built from a missing file stays standing. Snakemake does not rebuild a missing
# intermediate (a deleted eval.json, the outputs of a job that failed, which Snakemake deletes)
# while what was built from it looks up to date: `snakemake reports/E.html` would say "Nothing to
# be done" and the report keep showing numbers whose files are gone. So, before the DAG is built,
# every file some rule here would build from a missing one (directly or through other files) is
# removed, saying so; the ordinary target command then rebuilds the missing file and everything
# after it. Included last: it reads the rules' own inputs and outputs, for every experiment's runs.
import re
import shutil
from types import SimpleNamespace

import snakemake.io


def unconstrained(path) -> str:
    """An output pattern without its wildcard constraints: {seed,\\d+} -> {seed}."""
    return re.sub(r"\{(\w+),[^{}]*\}", r"{\1}", str(path))


def input_function(item):
    """The input function an item of rule.input stands for, or None for a file pattern (read as
    Snakemake's own rules.py does; snakemake is pinned)."""
    if isinstance(item, snakemake.io._IOFile):
        return item._file.callable if item.is_callable() else None
    if isinstance(item, snakemake.io.AnnotatedString):
        return item.callable
    return item if callable(item) else None


def rule_inputs(rule, wildcards) -> list[str]:
    """The rule's input files for these wildcards (its input functions called, as Snakemake would)."""
    files = []
    for item in rule.input:
        function = input_function(item)
        value = function(wildcards) if function else item.format(**vars(wildcards))
        if isinstance(value, dict):
            value = list(value.values())
        for v in value if isinstance(value, list) else [value]:
            files.extend(v if isinstance(v, list) else [v])
    return [str(f) for f in files]


def files_built_from() -> dict[str, list[str]]:
    """Every file a rule builds for the experiments' runs -> the files it is built from."""
    jobs = []
    for experiment in EXPERIMENTS:
        exp = PARAMS.experiment(experiment)
        jobs.append(dict(experiment=experiment))
        jobs += [dict(experiment=experiment, method=m, seed=str(s)) for m in exp.methods for s in exp.seeds]
    built: dict[str, list[str]] = {}
    for rule in workflow.rules:
        outputs = [unconstrained(o) for o in rule.output]
        names = {n for o in outputs for n in re.findall(r"\{(\w+)\}", o)}
        for values in jobs:
            if not outputs or names != set(values):
                continue
            wildcards = SimpleNamespace(**values)
            inputs = rule_inputs(rule, wildcards)
            for out in outputs:
                built[out.format(**values)] = inputs
    return built


def remove_what_missing_files_built() -> None:
    if not _has_records():  # not a tree Snakemake built (a fresh clone, before or after `dvc pull`)
        return
    built = files_built_from()
    cause: dict[str, str] = {}  # stale file -> the missing file it was (indirectly) built from
    changed = True
    while changed:  # to a fixed point: stale files make what was built from them stale too
        changed = False
        for out, inputs in built.items():
            if out in cause or not os.path.exists(out):
                continue
            for f in inputs:
                if f in built and (f in cause or not os.path.exists(f)):
                    cause[out] = cause.get(f, f)
                    changed = True
                    break
    by_cause: dict[str, list[str]] = {}
    for out, missing in cause.items():
        by_cause.setdefault(missing, []).append(out)
    for missing, outs in by_cause.items():
        for out in outs:
            shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
        sys.stderr.write(f"note: {missing} is missing: removed what was built from it ({', '.join(sorted(outs))}), "
                         "so that it is rebuilt\n")


remove_what_missing_files_built()


# After a failed run too: a job that failed had its outputs deleted by Snakemake, and what was
# built from them before must not stay standing until the next command.
onerror:
    remove_what_missing_files_built()
