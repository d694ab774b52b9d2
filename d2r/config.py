"""params.yaml -> typed, frozen configuration objects.

Two passes, both before any work starts:
1. structure: the JSON schema d2r/params.schema.yaml (unknown keys, wrong types, ranges);
2. meaning: names that must exist (tasks, methods, presets), k <= module count, ...
Every problem raises ParamsError whose message names the key path, e.g.
`params.yaml: experiments.smoke.seeds[1]: -3 is less than the minimum of 0`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from d2r.tasks import resolve_tasks

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")


class ParamsError(ValueError):
    """A parameter problem; the message names the key path."""


@dataclass(frozen=True)
class EnvConfig:
    max_episode_steps: int
    reward_version: str
    vector_strategy: str


@dataclass(frozen=True)
class SACConfig:
    gamma: float
    tau: float
    lr: float
    lr_alpha: float
    reward_scale: float
    grad_clip: float
    loss_mask_threshold: float
    bootstrap_on_truncation: bool
    overlap_collection: bool
    update_order: str             # joint (the release: every loss from the pre-step parameters) | sequential
    cuda_graphs: str = "auto"     # auto | on | off: the update without host reads, as a CUDA graph on CUDA
                                  # (d2r.sac.agent.resolve_cuda_graphs); YAML's bare on/off (booleans) accepted

    def __post_init__(self):
        if isinstance(self.cuda_graphs, bool):  # YAML 1.1 reads a bare `on` / `off` as true / false
            object.__setattr__(self, "cuda_graphs", "on" if self.cuda_graphs else "off")


@dataclass(frozen=True)
class BudgetConfig:
    epochs: int
    warmup_epochs: int
    min_replay: int
    updates_per_epoch: int
    batch_per_task: int
    replay_size: int
    eval_every: int
    eval_episodes: int
    checkpoint_every: int


@dataclass(frozen=True)
class ClusterResources:
    """What one Slurm job of a budget preset asks for (params.yaml `cluster:`; profiles/slurm).

    Read only by the Snakemake rules (resources), never by the jobs: editing it re-runs nothing."""

    runtime_min: int              # wall-time limit of a training job, minutes
    eval_runtime_min: int         # of an evaluation job (and setup's), minutes
    mem_mb: int                   # memory of a training / evaluation job
    cpus: int                     # CPU cores of a training job (its threads)
    gpus: int                     # 0 or 1: a run uses at most one device
    gpu_model: str | None = None  # Slurm GPU type (--gpus=<model>:1), e.g. a100; None: any


#: for presets without an entry in `cluster:` when `cluster.default` is not given either
DEFAULT_CLUSTER_RESOURCES = ClusterResources(runtime_min=60, eval_runtime_min=30, mem_mb=4000, cpus=1, gpus=0)


@dataclass(frozen=True)
class RenderConfig:
    """Videos of greedy episodes of the final policy: one per task, for each method's first seed.

    Params.render_config(experiment): params.yaml `render:` with the experiment's own `render:` over
    it. Read by the render job (d2r/video.py), the report and the pipeline (which render jobs);
    never by training or evaluation, so no setting here changes a result."""

    enabled: bool        # false: no render jobs; the report says videos are off
    width: int           # pixels, a multiple of 16 (H.264 macroblocks)
    height: int
    frame_stride: int    # keep every n-th environment step as a frame
    fps: int             # playback frames per second
    camera: str          # a Meta-World camera: corner, corner2, ..., topview, behindGripper, gripperPOV
    shadows: bool        # shadows and reflections (about 4x slower with software rendering)


#: without a `render:` section: no videos
DEFAULT_RENDER = RenderConfig(enabled=False, width=240, height=240, frame_stride=2, fps=25, camera="corner2",
                              shadows=False)


@dataclass(frozen=True)
class MethodConfig:
    name: str
    net: str                      # network kind: a key of d2r.nets.NETS (params.yaml `nets`)
    net_args: dict[str, Any]      # the kind's sizes from `nets`, with the method's overrides
    resrouting: bool = True
    policy_route: str = "replayed"
    route_balance: bool = True
    temperature: float = 1.0
    task_loss_weights: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    benchmark: str
    tasks: tuple[str, ...]        # resolved short task names
    goal_mode: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: str
    budget: BudgetConfig
    final_eval_episodes: int | None       # None: read back from a run.json (d2r.config.run_from_dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)  # over the top-level `train`
    #: episodes per task of Meta-World's own protocol in the final evaluation (metaworld.evaluation;
    #: its default, 50, unless params.yaml says otherwise); None when read back from a run.json
    metaworld_eval_episodes: int | None = 50
    #: seeds trained together by one training job (lockstep, one process, one device); how the
    #: pipeline schedules training, not what it computes: no run depends on it
    seeds_per_job: int = 1
    #: how such a job updates its seeds (d2r.sac.group): auto | stacked (one update of the seeds'
    #: stacked weights, each seed's result its own to float rounding) | sequential (one by one)
    group_update: str = "auto"


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run (experiment, method, seed) depends on."""

    experiment: ExperimentConfig
    method: MethodConfig
    seed: int
    env: EnvConfig
    sac: SACConfig
    device: str

    def training_dict(self) -> dict[str, Any]:
        """What training depends on, as JSON data (the final evaluation's settings excluded)."""
        data = dataclasses.asdict(self)
        data["experiment"].pop("final_eval_episodes")
        data["experiment"].pop("metaworld_eval_episodes")
        data["experiment"].pop("seeds_per_job")
        data["experiment"].pop("group_update")
        return data


def run_from_dict(data: dict[str, Any]) -> RunConfig:
    """The inverse of RunConfig.training_dict (a run's run.json "config"): the run as it was trained.
    The final evaluation's settings are not part of it (None): they are the evaluate job's.
    Raises TypeError or KeyError for a dict of another layout."""
    exp = dict(data["experiment"])
    exp.update(tasks=tuple(exp["tasks"]), methods=tuple(exp["methods"]), seeds=tuple(exp["seeds"]),
               budget=BudgetConfig(**exp["budget"]), final_eval_episodes=None, metaworld_eval_episodes=None)
    return RunConfig(experiment=ExperimentConfig(**exp), method=MethodConfig(**data["method"]), seed=int(data["seed"]),
                     env=EnvConfig(**data["env"]), sac=SACConfig(**data["sac"]), device=data["device"])


@dataclass(frozen=True)
class Params:
    device: str
    env: EnvConfig
    sac: SACConfig
    methods: dict[str, MethodConfig]
    experiments: dict[str, ExperimentConfig]
    raw: dict[str, Any] = field(repr=False, compare=False)
    # Slurm resources by preset name (and "default"); see cluster_resources().
    cluster: dict[str, ClusterResources] = field(default_factory=dict)
    # Video settings by experiment name; see render_config().
    render: dict[str, RenderConfig] = field(default_factory=dict)

    def cluster_resources(self, preset: str) -> ClusterResources:
        """The Slurm resources of a preset's jobs: `cluster.<preset>`, else `cluster.default`,
        else DEFAULT_CLUSTER_RESOURCES."""
        return self.cluster.get(preset) or self.cluster.get("default") or DEFAULT_CLUSTER_RESOURCES

    def render_config(self, experiment: str) -> RenderConfig:
        """The video settings of an experiment: `render:` with `experiments.<experiment>.render:` over it."""
        return self.render[self.experiment(experiment).name]

    def experiment(self, name: str) -> ExperimentConfig:
        if name not in self.experiments:
            raise ParamsError(f"unknown experiment {name!r}; params.yaml defines: {', '.join(self.experiments)}")
        return self.experiments[name]

    def run(self, experiment: str, method: str, seed: int) -> RunConfig:
        exp = self.experiment(experiment)
        if method not in exp.methods:
            raise ParamsError(f"method {method!r} is not in experiments.{experiment}.methods {list(exp.methods)}")
        if seed not in exp.seeds:
            raise ParamsError(f"seed {seed} is not in experiments.{experiment}.seeds {list(exp.seeds)}")
        sac = dataclasses.replace(self.sac, **exp.train_overrides)
        return RunConfig(exp, self.methods[method], seed, self.env, sac, self.device)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@functools.lru_cache(maxsize=1)
def _load_schema() -> dict[str, Any]:
    """The schema file, completed from its network kinds: each is named there once (its entry of
    sizes under `nets`), and here becomes required in `nets` and a choice of a method's `net`."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    nets = schema["properties"]["nets"]
    kinds = [k for k in nets["properties"] if k != "init"]
    nets["required"] = [*nets["required"], *kinds]
    schema["properties"]["methods"]["additionalProperties"]["properties"]["net"] = {"enum": kinds}
    return schema


def schema() -> dict[str, Any]:
    """The JSON schema params.yaml is checked against (a copy)."""
    return copy.deepcopy(_load_schema())


def net_kinds() -> tuple[str, ...]:
    """The network kinds params.yaml knows (each has its sizes in `nets`), in the schema's order;
    read without torch. d2r.nets.NETS builds them (tests/test_baselines.py checks the two agree)."""
    return tuple(_load_schema()["properties"]["methods"]["additionalProperties"]["properties"]["net"]["enum"])


def _strict_integer(checker, instance) -> bool:
    # JSON Schema counts 6.0 as an integer; a count of 6.0 would reach range() as a float.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def _check_keys(node: Any, path: list, source: str) -> None:
    """Every mapping key is a string (YAML reads `1:` or `on:` as a number or a boolean)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise ParamsError(f"{source}: {_key_path(path)}: key {key!r} is not a string (quote it)")
            _check_keys(value, [*path, key], source)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_keys(value, [*path, i], source)


def _schema_error(err: jsonschema.ValidationError, source: str, prefix: tuple = ()) -> ParamsError:
    """One line naming the key path (`prefix` + the error's path) of a schema violation."""
    path, message = [*prefix, *err.absolute_path], err.message
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = err.schema.get("properties", {})
        unknown = [k for k in err.instance if k not in known]
        path.append(unknown[0])
        message = "unknown key" + (f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else "") + (
            f"; known keys: {', '.join(known)}" if known else "")
    elif err.validator == "type" and isinstance(err.instance, str) and _is_number(err.instance):
        # YAML 1.1 reads 3e-4 (no dot in the mantissa) as text, not as a number; or it was quoted
        fixed = _with_dot(err.instance)
        message += (f" (YAML reads {err.instance} as text: write {fixed})" if fixed != err.instance
                    else " (a number in quotes is text: remove the quotes)")
    elif "propertyNames" in err.schema_path:  # a name that breaks the naming rule: name it in the path
        path.append(err.instance)
        if err.validator == "pattern":
            message = f"invalid name {err.instance!r} (names must match {err.validator_value})"
    return ParamsError(f"{source}: {_key_path(path)}: {message}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _with_dot(text: str) -> str:
    """3e-4 -> 3.0e-4: a form YAML reads as a number."""
    mantissa, e, exponent = text.lower().partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text


def _relevance(err: jsonschema.ValidationError):
    # jsonschema's ranking, except that "non-unique elements" yields to an element's own error
    # (seeds [1.0, 1]: the wrong type of seeds[0] is the problem, not the duplicate it makes).
    return err.validator != "uniqueItems", jsonschema.exceptions.relevance(err)


def _check_schema(raw: Any, source: str) -> None:
    _check_keys(raw, [], source)
    validator = _Validator(_load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise _schema_error(jsonschema.exceptions.best_match(errors, key=_relevance), source)


def _check_net_args(name: str, kind: str, net_args: dict, overrides: dict, source: str) -> None:
    """A method's sizes (the kind's, with its overrides) against the schema of nets.<kind>."""
    schema = _load_schema()
    sub = {"$defs": schema.get("$defs", {}), **schema["properties"]["nets"]["properties"][kind]}
    err = jsonschema.exceptions.best_match(_Validator(sub).iter_errors(net_args))
    if err is not None:
        key = err.absolute_path[0] if err.absolute_path else None
        prefix = ["methods", name, "net_args"] if key in overrides else ["nets", kind]
        raise _schema_error(err, source, tuple(prefix))


def _check_top_k(net_args: dict, path: list[str], source: str) -> None:
    if net_args["top_k"] > net_args["num_modules"]:
        raise ParamsError(
            f"{source}: {_key_path(path)}: top_k {net_args['top_k']} is larger than num_modules "
            f"{net_args['num_modules']}"
        )


def _method(name: str, raw_method: dict, nets: dict, source: str) -> MethodConfig:
    # nets.init is every kind's default; nets.<kind> and the method's net_args may override it
    net_args = {"init": nets["init"], **copy.deepcopy(nets[raw_method["net"]])}
    overrides = raw_method.get("net_args", {})
    allowed = set(net_args) | ({"fixed_depth"} if raw_method["net"] == "d2r" else set())
    for key in overrides:
        if key not in allowed:
            raise ParamsError(
                f"{source}: methods.{name}.net_args.{key}: unknown key for net {raw_method['net']!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )
    net_args.update(overrides)
    _check_net_args(name, raw_method["net"], net_args, overrides, source)
    if raw_method["net"] == "d2r":
        key = "top_k" if "top_k" in overrides else "num_modules"
        _check_top_k(net_args, ["methods", name, "net_args", key] if key in overrides else ["nets", "d2r", "top_k"],
                     source)
    fields = {k: v for k, v in raw_method.items() if k not in ("net", "net_args")}
    return MethodConfig(name=name, net=raw_method["net"], net_args=net_args, **fields)


def _experiment(name: str, raw_exp: dict, params: dict, methods: dict, source: str) -> ExperimentConfig:
    where = f"{source}: experiments.{name}"
    if name == "paper":   # reports/paper.html is the paper table's (d2r.pipeline.layout)
        raise ParamsError(f"{where}: the name 'paper' is taken by the paper table (reports/paper.html): rename it")
    try:
        tasks = tuple(resolve_tasks(raw_exp["benchmark"], raw_exp["tasks"]))
    except ValueError as err:
        at = ".tasks"
        if isinstance(raw_exp["tasks"], list):  # name the first entry that fails
            at += next(f"[{i}]" for i in range(len(raw_exp["tasks"]))
                       if not _resolves(raw_exp["benchmark"], raw_exp["tasks"][: i + 1]))
        raise ParamsError(f"{where}{at}: {err}") from None
    for i, method in enumerate(raw_exp["methods"]):
        if method not in methods:
            raise ParamsError(f"{where}.methods[{i}]: unknown method {method!r} (known: {', '.join(methods)})")
    if raw_exp["preset"] not in params["presets"]:
        raise ParamsError(
            f"{where}.preset: unknown preset {raw_exp['preset']!r} (known: {', '.join(params['presets'])})"
        )
    budget = BudgetConfig(**params["presets"][raw_exp["preset"]])
    return ExperimentConfig(
        name=name,
        benchmark=raw_exp["benchmark"],
        tasks=tasks,
        goal_mode=raw_exp["goal_mode"],
        methods=tuple(raw_exp["methods"]),
        seeds=tuple(raw_exp["seeds"]),
        preset=raw_exp["preset"],
        budget=budget,
        final_eval_episodes=raw_exp["final_eval_episodes"],
        train_overrides=dict(raw_exp.get("train", {})),
        metaworld_eval_episodes=raw_exp.get("metaworld_eval_episodes", 50),
        seeds_per_job=raw_exp.get("seeds_per_job", 1),
        group_update=raw_exp.get("group_update", "auto"),
    )


def _resolves(benchmark: str, tasks: list) -> bool:
    try:
        resolve_tasks(benchmark, tasks)
    except ValueError:
        return False
    return True


def _cluster(raw: dict, source: str) -> dict[str, ClusterResources]:
    """`cluster:` (optional): an entry per preset name, or `default` for presets without one."""
    cluster = raw.get("cluster") or {}
    for name in cluster:
        if name != "default" and name not in raw["presets"]:
            raise ParamsError(
                f"{source}: cluster.{name}: unknown preset {name!r} (known: {', '.join(raw['presets'])}; "
                "or default)"
            )
    return {name: ClusterResources(**entry) for name, entry in cluster.items()}


def _render(raw: dict) -> dict[str, RenderConfig]:
    """Each experiment's video settings: the defaults, `render:` over them, the experiment's `render:` over that."""
    top = {**dataclasses.asdict(DEFAULT_RENDER), **(raw.get("render") or {})}
    return {name: RenderConfig(**{**top, **(exp.get("render") or {})}) for name, exp in raw["experiments"].items()}


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping (as read from YAML) and build the typed configuration."""
    _check_schema(raw, source)
    _check_top_k(raw["nets"]["d2r"], ["nets", "d2r", "top_k"], source)
    methods = {name: _method(name, m, raw["nets"], source) for name, m in raw["methods"].items()}
    experiments = {name: _experiment(name, e, raw, methods, source) for name, e in raw["experiments"].items()}
    return Params(
        device=raw["device"],
        env=EnvConfig(**raw["env"]),
        sac=SACConfig(**raw["train"]),
        methods=methods,
        experiments=experiments,
        raw=raw,
        cluster=_cluster(raw, source),
        render=_render(raw),
    )


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)):
                continue  # (a non-string key is refused later, naming its path)
            if key in seen:
                raise ParamsError(f"line {line}: duplicate key {key!r} (first given at line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _yaml_error(err: yaml.YAMLError) -> str:
    """One line: where (line, column) and what, from PyYAML's several."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML: {where}{problem}" + (f" ({context})" if context else "")


def read_params_file(path: str | Path) -> Any:
    """params.yaml as plain data: YAML errors and duplicate keys raise ParamsError naming the line."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: {_yaml_error(err)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_params_file(path), str(path))
