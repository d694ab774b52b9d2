"""The package's structure: imports run one way, each job's sources are what it imports, and
the parameters read without the simulator.

Layers, each importing only itself and those before it (LAYERS): the parameters (d2r.config,
d2r.tasks) -> run plumbing (d2r/runtime/) -> the pipeline's bookkeeping (d2r/pipeline/) -> Meta-World
and the networks (d2r.envs, d2r/nets/) -> multi-task SAC (d2r/sac/) -> what the downstream jobs
compute (d2r.analysis, d2r.video, d2r.benchmark, d2r/reporting/) -> the jobs (d2r/jobs/, each
job's add_arguments/run) -> the CLI. The import graph has no cycle and no module name is used twice.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from d2r.pipeline import sources

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("setup", "train", "evaluate", "analyse", "render", "report", "paper", "bench")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted((ROOT / "d2r").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _graph() -> dict[str, set[str]]:
    return {name: sources.imported(name, path, ROOT) for name, path in _modules().items()}


def test_no_import_cycle_in_the_package():
    graph = _graph()
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


LAYERS = [("d2r", "d2r.config", "d2r.tasks"), ("d2r.runtime",), ("d2r.pipeline",), ("d2r.envs", "d2r.nets"),
          ("d2r.sac",), ("d2r.analysis", "d2r.video", "d2r.benchmark", "d2r.reporting"), ("d2r.jobs",),
          ("d2r.cli", "d2r.__main__")]


def _layer(module: str) -> int:
    for number, names in reversed(list(enumerate(LAYERS))):
        if any(module == n or (n != "d2r" and module.startswith(n + ".")) for n in names):
            return number
    pytest.fail(f"{module} is in no layer of LAYERS")


def test_imports_point_to_the_same_layer_or_one_below():
    upward = [f"{name} -> {dep}" for name, deps in _graph().items() for dep in deps if _layer(dep) > _layer(name)]
    assert not upward, f"imports upward: {upward}"


def test_no_module_name_is_used_twice():
    names: dict[str, list[str]] = {}
    for name in _modules():
        names.setdefault(name.rpartition(".")[2], []).append(name)
    twice = {short: full for short, full in names.items() if len(full) > 1}
    assert not twice, f"module names used twice: {twice}"


def test_library_modules_do_not_import_the_jobs_or_the_cli():
    for name, deps in _graph().items():
        if name in ("d2r.cli", "d2r.__main__") or name.startswith("d2r.jobs"):
            continue
        upward = sorted(d for d in deps if d in ("d2r.cli", "d2r.__main__") or d.startswith("d2r.jobs"))
        assert not upward, f"{name} imports {upward}"


def test_the_cli_knows_every_job_module_and_no_other():
    from d2r.cli import JOBS as CLI_JOBS

    assert {module for module, _ in CLI_JOBS.values()} == {f"d2r.jobs.{j}" for j in JOBS}
    on_disk = {p.stem for p in (ROOT / "d2r" / "jobs").glob("*.py")} - {"__init__", "arguments"}
    assert on_disk == set(JOBS)


@pytest.mark.parametrize("job", JOBS)
def test_job_sources_hold_every_d2r_file_the_job_imports(job):
    """What the job really loads (its module and what that imports at once) is among the
    sources the rules list; the static list may hold more (imports inside functions)."""
    code = ("import json, sys, d2r.cli, d2r.jobs." + job + "; "
            "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
            "if n.split('.')[0] == 'd2r' and getattr(m, '__file__', None))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = {Path(f).resolve().relative_to(ROOT).as_posix() for f in json.loads(out.stdout.splitlines()[-1])}
    listed = set(sources.job_sources(job))
    # the build-record modules run around every job but decide no result: no job's sources
    bookkeeping = {sources.module_path(m).relative_to(ROOT).as_posix() for m in sources.BOOKKEEPING}
    assert not listed & bookkeeping
    loaded -= bookkeeping
    assert loaded <= listed, f"{job} loads {sorted(loaded - listed)} that its sources leave out"
    assert f"d2r/jobs/{job}.py" in listed and "d2r/cli.py" in listed


def test_the_cli_offers_a_build_record_for_every_pipeline_job():
    from d2r import cli
    from d2r.pipeline import layout as pipeline

    assert sorted(cli.PIPELINE_JOBS) == sorted(pipeline.JOBS)


def test_job_sources_separate_the_jobs():
    train, setup, report = (set(sources.job_sources(j)) for j in ("train", "setup", "report"))
    assert {"d2r/nets/module_stack.py", "d2r/sac/agent.py", "d2r/params.schema.yaml"} <= train
    # the benchmark, the reference network and the downstream jobs are not training's sources
    assert not {f for f in train if f.startswith(("d2r/reporting", "d2r/benchmark", "d2r/nets/reference", "d2r/video"))}
    assert not {f for f in setup if f.startswith(("d2r/nets", "d2r/sac/agent", "d2r/sac/training"))}
    assert not {f for f in report if f.startswith(("d2r/nets", "d2r/sac/agent", "d2r/envs", "d2r/sac/training"))}
    with pytest.raises(ValueError, match="no job module"):
        sources.job_sources("no-such-job")


def test_reading_the_parameters_imports_no_simulator_and_no_torch():
    code = ("import sys; from d2r.config import load_params; p = load_params('params.yaml'); "
            "assert p.experiment('mt10').tasks[0] == 'reach'; "
            "print(sorted(m for m in ('mujoco', 'metaworld', 'gymnasium', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_test_file_imports_another():
    """Tests share helpers through tests/helpers.py and conftest.py's fixtures, never by importing
    a test file (which would collect its tests twice, and hide where a helper lives)."""
    tests = Path(__file__).parent
    test_files = {p.stem for p in tests.glob("test_*.py")}
    found = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in test_files]
    assert not found, "test files import test files (move what they share to tests/helpers.py): " + "; ".join(found)
