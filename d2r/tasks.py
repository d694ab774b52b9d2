"""Meta-World's task names and sizes, without importing the simulator.

The configuration (d2r.config) resolves task lists with these, so reading params.yaml, the
Snakefile and the report never import mujoco or metaworld. The tuples are Meta-World 3's
MT10_V3 / MT50_V3 in its order, without the "-v3" suffix; tests/test_envs.py keeps them equal
to Meta-World's own.
"""

from __future__ import annotations

MT10_TASKS: tuple[str, ...] = (
    "reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
    "peg-insert-side", "window-open", "window-close",
)
MT50_TASKS: tuple[str, ...] = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown", "button-press-topdown-wall",
    "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push", "dial-turn",
    "disassemble", "door-close", "door-lock", "door-open", "door-unlock", "hand-insert", "drawer-close",
    "drawer-open", "faucet-open", "faucet-close", "hammer", "handle-press-side", "handle-press",
    "handle-pull-side", "handle-pull", "lever-pull", "pick-place-wall", "pick-out-of-hole", "pick-place",
    "plate-slide", "plate-slide-side", "plate-slide-back", "plate-slide-back-side", "peg-insert-side",
    "peg-unplug-side", "soccer", "stick-push", "stick-pull", "push", "push-wall", "push-back", "reach",
    "reach-wall", "shelf-place", "sweep-into", "sweep", "window-open", "window-close",
)
BENCHMARKS: dict[str, tuple[str, ...]] = {"MT10": MT10_TASKS, "MT50": MT50_TASKS}

STATE_DIM = 39   # Meta-World's observation (goal observable); the one-hot task id follows it
ACTION_DIM = 4
GOAL_MODES = ("fixed", "random")

_SUFFIX = "-v3"


def short_name(name: str) -> str:
    """``"reach-v3"`` -> ``"reach"``; names without the suffix are returned unchanged."""
    name = name.strip()
    return name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name


def full_name(name: str) -> str:
    """``"reach"`` -> ``"reach-v3"`` (Meta-World's name)."""
    return short_name(name) + _SUFFIX


def resolve_tasks(benchmark: str, tasks: list[str] | str | None = None) -> list[str]:
    """Short task names of ``benchmark`` to run.

    ``tasks`` None or ``"all"``: the whole benchmark in Meta-World's order. Otherwise a list or a
    comma-separated string of names, with or without ``-v3``; each must belong to the benchmark.
    The user's order is kept. Unknown or repeated names raise ``ValueError``.
    """
    key = str(benchmark).strip().upper()
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; valid: {sorted(BENCHMARKS)}")
    valid = BENCHMARKS[key]
    if tasks is None:
        return list(valid)
    if isinstance(tasks, str):
        if tasks.strip().lower() == "all":
            return list(valid)
        names = [t for t in (s.strip() for s in tasks.split(",")) if t]
    else:
        names = [str(t) for t in tasks]
    if not names:
        raise ValueError(f"no tasks given for {key}; valid: {', '.join(valid)}")
    out: list[str] = []
    for raw in names:
        name = short_name(raw)
        if name not in valid:
            raise ValueError(
                f"unknown task {raw!r} for {key}; valid tasks: {', '.join(valid)}"
            )
        if name in out:
            raise ValueError(f"task {raw!r} given twice")
        out.append(name)
    return out
