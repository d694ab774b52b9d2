"""The d2r files each job runs, found from its imports: the rules list them as inputs, so that
editing a module re-runs exactly the jobs that run it.

`python -m d2r <job>` runs d2r/__init__.py, d2r/__main__.py, d2r/cli.py and d2r/jobs/<job>.py,
and whatever they import from d2r, at the top of a module or inside a function (read from the
source with `ast`, nothing is imported). The CLI imports the job's module by name
(`importlib`), so no job depends on another job's module. Files read as data are listed in DATA.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "d2r"
ROOT = Path(__file__).resolve().parents[2]  # the checkout: paths are relative to it
#: files a module reads as data (not imports)
DATA = {"d2r.config": ["d2r/params.schema.yaml"], "d2r.reporting.paper_table": ["d2r/reporting/published.yaml"]}
#: modules that write and check the jobs' build records (the CLI runs them around every job, and
#: this one lists the code for them), not results: editing them re-runs no job, so they are not
#: followed
BOOKKEEPING = {"d2r.pipeline", "d2r.pipeline.layout", "d2r.pipeline.records", "d2r.pipeline.sources"}


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """d2r.nets.d2r_net -> d2r/nets/d2r_net.py (or a package's __init__.py); None when it is no d2r module."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported(module: str, path: Path, root: Path) -> set[str]:
    """The d2r modules that `module`'s source imports anywhere (`from d2r.x import y` counts
    d2r.x.y when that is a module, else d2r.x; the packages above a module are added by
    `job_sources`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            submodules = {f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}", root)}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in `base` itself
                found.add(base)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def job_sources(job: str, root: Path = ROOT) -> list[str]:
    """Sorted paths, relative to `root`, of every d2r file `python -m d2r <job>` can run."""
    todo = [f"{PACKAGE}.__main__", f"{PACKAGE}.jobs.{job}"]
    if module_path(todo[1], root) is None:
        raise ValueError(f"no job module {todo[1]} in {root}")
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module in BOOKKEEPING:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages run first
        path = module_path(module, root)
        if path is not None:
            todo += imported(module, path, root)
    paths = (module_path(m, root) for m in seen)
    files = {path.relative_to(root).as_posix() for path in paths if path is not None}
    files.update(f for m in seen for f in DATA.get(m, []))
    return sorted(files)
