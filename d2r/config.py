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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

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
class MethodConfig:
    name: str
    net: str                      # network kind: d2r | mtsac | mhsac | moe | softmod
    net_args: dict[str, Any]      # the kind's sizes from `nets`, with the method's overrides
    resrouting: bool = True
    policy_route: str = "replayed"
    route_balance: bool = True
    temperature: float = 1.0
    task_loss_weights: bool = True

    @property
    def routed(self) -> bool:
        return self.net == "d2r"


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
    final_eval_episodes: int


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
        return data


@dataclass(frozen=True)
class Params:
    device: str
    env: EnvConfig
    sac: SACConfig
    methods: dict[str, MethodConfig]
    experiments: dict[str, ExperimentConfig]
    raw: dict[str, Any] = field(repr=False, compare=False)

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
        return RunConfig(exp, self.methods[method], seed, self.env, self.sac, self.device)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _check_schema(raw: Any, source: str) -> None:
    validator = jsonschema.Draft202012Validator(_load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        where = _key_path(err.absolute_path)
        message = err.message
        if err.validator == "additionalProperties":
            message = message.replace("Additional properties are not allowed", "unknown key")
        raise ParamsError(f"{source}: {where}: {message}")


def _method(name: str, raw_method: dict, nets: dict, source: str) -> MethodConfig:
    net_args = copy.deepcopy(nets[raw_method["net"]])
    overrides = raw_method.get("net_args", {})
    allowed = set(net_args) | ({"fixed_depth"} if raw_method["net"] == "d2r" else set())
    for key in overrides:
        if key not in allowed:
            raise ParamsError(
                f"{source}: methods.{name}.net_args.{key}: unknown key for net {raw_method['net']!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )
    net_args.update(overrides)
    if raw_method["net"] == "d2r" and net_args["top_k"] > net_args["num_modules"]:
        raise ParamsError(
            f"{source}: methods.{name}: top_k {net_args['top_k']} is larger than num_modules "
            f"{net_args['num_modules']}"
        )
    fields = {k: v for k, v in raw_method.items() if k not in ("net", "net_args")}
    return MethodConfig(name=name, net=raw_method["net"], net_args=net_args, **fields)


def _experiment(name: str, raw_exp: dict, params: dict, methods: dict, source: str) -> ExperimentConfig:
    from d2r.envs import resolve_tasks  # lazy: keeps `--help` fast

    where = f"{source}: experiments.{name}"
    try:
        tasks = tuple(resolve_tasks(raw_exp["benchmark"], raw_exp["tasks"]))
    except ValueError as err:
        raise ParamsError(f"{where}.tasks: {err}") from None
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
    )


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping (as read from YAML) and build the typed configuration."""
    _check_schema(raw, source)
    methods = {name: _method(name, m, raw["nets"], source) for name, m in raw["methods"].items()}
    experiments = {name: _experiment(name, e, raw, methods, source) for name, e in raw["experiments"].items()}
    return Params(
        device=raw["device"],
        env=EnvConfig(**raw["env"]),
        sac=SACConfig(**raw["train"]),
        methods=methods,
        experiments=experiments,
        raw=raw,
    )


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, str(path))


def run_from_json(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from RunConfig.training_dict() plus final_eval_episodes (checkpoint metadata)."""
    data = copy.deepcopy(data)
    exp = data["experiment"]
    exp["budget"] = BudgetConfig(**exp["budget"])
    exp["tasks"], exp["methods"], exp["seeds"] = tuple(exp["tasks"]), tuple(exp["methods"]), tuple(exp["seeds"])
    exp.setdefault("final_eval_episodes", 1)
    return RunConfig(
        experiment=ExperimentConfig(**exp),
        method=MethodConfig(**data["method"]),
        seed=data["seed"],
        env=EnvConfig(**data["env"]),
        sac=SACConfig(**data["sac"]),
        device=data["device"],
    )


def fingerprint(data: Any) -> str:
    """Stable text of JSON data, for comparing configurations."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
