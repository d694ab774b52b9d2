"""Which code produced a result: the git commit of this checkout and whether its tree was clean,
the versions of the software stack and the platform (environment.json, run.json)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


#: results the pipeline itself writes into tracked places: not code, so not "uncommitted changes"
NOT_CODE = (":!metrics", ":!dvc.lock", ":!reports")


def code_version(repo: Path = REPO) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": True when tracked or untracked (not ignored) files other
    than the pipeline's own results differ from the commit}; both None outside a git checkout
    (e.g. an installed package or an unpacked bundle)."""
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(repo, "status", "--porcelain", "--", ".", *NOT_CODE)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


#: distributions whose versions are recorded (the import name may differ; metadata is read).
VERSIONED = ("torch", "mujoco", "metaworld", "gymnasium", "numpy", "snakemake", "dvc", "plotly", "d2r")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        out[name] = package_version(name)
    return out


def platform_info() -> dict[str, Any]:
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
    }
