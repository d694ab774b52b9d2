"""Property-based tests (hypothesis) of params validation: every mutation of the shipped
params.yaml that makes it invalid raises ParamsError, and nothing else, with a message that names
the mutated key path; mutations that keep it valid parse. And the CLI stops on a bad file before
touching anything: exit status 2, one line naming the key, the run directory byte-identical.

Mutations: delete a key anywhere (required -> named with its parent path; an optional switch ->
still valid; a named method/preset -> the experiment that references it is named), insert an
unknown key anywhere, replace a leaf by a value of the wrong type, negative or zero counts and
other impossible numbers, unknown method/task/preset/net/benchmark names, top_k > num_modules.
"""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d2r.config import ParamsError, parse_params, schema
from d2r.envs import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
SCHEMA = schema()   # as d2r.config checks it (the network kinds filled in)
SOURCE = "params.yaml"
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- the document and its schema -------------------------------------------------------------
def walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))


def fmt(path) -> str:
    """A key path as d2r.config writes it: experiments.smoke.seeds[1]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def subschema(path) -> dict:
    """The schema that applies at `path`; a method's net_args entries use nets.<kind>'s."""
    if len(path) >= 4 and path[0] == "methods" and path[2] == "net_args":
        return subschema(("nets", RAW["methods"][path[1]]["net"], *path[3:]))
    schema = SCHEMA
    for part in path:
        schema = resolve(schema)
        if isinstance(part, int):
            branches = [b for b in schema.get("oneOf", [schema]) if "items" in b]  # tasks: "all" or a list
            schema = branches[0]["items"] if branches else {}
        elif part in schema.get("properties", {}):
            schema = schema["properties"][part]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return {}
    return resolve(schema)


NODES = list(walk(RAW))
KEY_PATHS = [p for p, _ in NODES if p and isinstance(p[-1], str)]
DICT_PATHS = [p for p, n in NODES if isinstance(n, dict)]
LEAF_PATHS = [p for p, n in NODES if not isinstance(n, (dict, list))]
NUMBER_PATHS = [p for p, n in NODES if isinstance(n, (int, float)) and not isinstance(n, bool)]
KNOWN_KEYS = {k for p in KEY_PATHS for k in p if isinstance(k, str)} | {
    k for _, s in walk(SCHEMA) if isinstance(s, dict) for k in s.get("properties", {})}
D2R_METHODS = [m for m, spec in RAW["methods"].items() if spec["net"] == "d2r"]


def get(raw, path):
    for part in path:
        raw = raw[part]
    return raw


def with_value(path, value):
    raw = copy.deepcopy(RAW)
    get(raw, path[:-1])[path[-1]] = value
    return raw


def without(path):
    raw = copy.deepcopy(RAW)
    del get(raw, path[:-1])[path[-1]]
    return raw


def parse_error(raw) -> str:
    """The ParamsError message of `raw`; any other exception propagates and fails the test."""
    with pytest.raises(ParamsError) as err:
        parse_params(raw, SOURCE)
    return str(err.value)


def assert_names(message: str, path) -> None:
    assert message.startswith(f"{SOURCE}: {fmt(path)}: "), f"expected key path {fmt(path)!r}: {message}"
    assert "\n" not in message


def referenced_by(kind: str, name: str):
    """The first place (in parse order) that refers to method/preset `name`, or None."""
    for exp, spec in RAW["experiments"].items():
        if kind == "methods" and name in spec["methods"]:
            return ("experiments", exp, "methods", spec["methods"].index(name))
        if kind == "presets" and spec["preset"] == name:
            return ("experiments", exp, "preset")
    if kind == "presets" and name in RAW.get("cluster", {}):  # cluster: resources per preset name
        return ("cluster", name)
    return None


def test_shipped_params_parse():
    parse_params(copy.deepcopy(RAW), SOURCE)


# ---- deletions -------------------------------------------------------------------------------
@pytest.mark.slow
@SETTINGS
@given(st.sampled_from(KEY_PATHS))
def test_deleting_a_key(path):
    check_deletion(path)


@pytest.mark.slow
def test_deleting_each_key():
    """The same property over every key of the file (a finite set: all of it, not a sample)."""
    for path in KEY_PATHS:
        check_deletion(path)


def check_deletion(path) -> None:
    parent, key = path[:-1], path[-1]
    raw = without(path)
    if key in subschema(parent).get("required", []):
        message = parse_error(raw)
        assert_names(message, parent)
        assert f"'{key}' is a required property" in message
    elif parent in (("methods",), ("presets",)) and referenced_by(parent[0], key):
        message = parse_error(raw)
        assert_names(message, referenced_by(parent[0], key))
        assert f"unknown {parent[0][:-1]} '{key}'" in message
    else:  # an optional switch, an unused method or preset, one experiment of several: still valid
        parse_params(raw, SOURCE)


@pytest.mark.parametrize("section", list(RAW))
def test_missing_section_is_named(section):
    if section not in SCHEMA["required"]:  # an optional section
        parse_params(without((section,)), SOURCE)
        return
    message = parse_error(without((section,)))
    assert message == f"{SOURCE}: (top level): '{section}' is a required property"


# ---- unknown keys ----------------------------------------------------------------------------
new_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True).filter(lambda k: k not in KNOWN_KEYS)
scalar = st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans(), st.none(),
                   st.floats(allow_nan=False, allow_infinity=False))


@SETTINGS
@given(st.sampled_from(DICT_PATHS), new_key, scalar)
def test_inserting_an_unknown_key(parent, key, value):
    raw = copy.deepcopy(RAW)
    get(raw, parent)[key] = value
    assert_names(parse_error(raw), (*parent, key))


# ---- wrong types -----------------------------------------------------------------------------
VALUES = {
    "integer": st.integers(-10**6, 10**6),
    "integral float": st.integers(-100, 100).map(float),
    "float": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not float(x).is_integer()),
    "string": st.text(max_size=6),
    "boolean": st.booleans(),
    "null": st.none(),
    "list": st.lists(st.integers(), max_size=2),
    "mapping": st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2),
}
ALLOWED = {"integer": {"integer"}, "number": {"integer", "integral float", "float"}, "string": {"string"},
           "boolean": {"boolean"}}


def wrong_values(path) -> st.SearchStrategy:
    schema = subschema(path)
    if "enum" in schema:  # strings, and for cuda_graphs YAML's bare on / off (booleans)
        ok = {"boolean" if isinstance(v, bool) else "string" for v in schema["enum"]}
    elif "oneOf" in schema:  # tasks: "all" or a list of names
        ok = {"string", "list"}
    else:
        ok = ALLOWED[schema["type"]]
    return st.one_of(*(s for kind, s in VALUES.items() if kind not in ok))


@SETTINGS
@given(st.data())
def test_leaf_of_the_wrong_type(data):
    path = data.draw(st.sampled_from(LEAF_PATHS))
    value = data.draw(wrong_values(path))
    assert_names(parse_error(with_value(path, value)), path)


# ---- impossible numbers ----------------------------------------------------------------------
def impossible_numbers(path) -> st.SearchStrategy:
    schema, current = subschema(path), get(RAW, path)
    number = st.integers if isinstance(current, int) else (
        lambda lo, hi: st.floats(lo, hi, allow_nan=False, exclude_max=False))
    options = [number(-10**6, -1)]  # negative: never valid here
    if schema.get("minimum", 0) > 0 or "exclusiveMinimum" in schema:
        options.append(st.just(0 if isinstance(current, int) else 0.0))
    if "maximum" in schema:
        options.append(number(schema["maximum"] + 1, schema["maximum"] + 10**6))
    return st.one_of(*options)


@SETTINGS
@given(st.data())
def test_negative_zero_or_too_large_numbers(data):
    path = data.draw(st.sampled_from(NUMBER_PATHS))
    value = data.draw(impossible_numbers(path))
    assert_names(parse_error(with_value(path, value)), path)


# ---- unknown names ---------------------------------------------------------------------------
unknown_name = st.from_regex(r"zz[a-z0-9-]{0,8}", fullmatch=True)
EXPERIMENTS = list(RAW["experiments"])


@SETTINGS
@given(st.sampled_from(EXPERIMENTS), st.data(), unknown_name)
def test_unknown_method_in_an_experiment(exp, data, name):
    i = data.draw(st.integers(0, len(RAW["experiments"][exp]["methods"]) - 1))
    path = ("experiments", exp, "methods", i)
    message = parse_error(with_value(path, name))
    assert_names(message, path)
    assert f"unknown method '{name}'" in message


@SETTINGS
@given(st.sampled_from(EXPERIMENTS), st.data(), st.one_of(unknown_name, st.sampled_from(
    [t for t in BENCHMARKS["MT50"] if t not in BENCHMARKS["MT10"]])))
def test_unknown_task_in_an_experiment(exp, data, name):
    spec = RAW["experiments"][exp]
    if name in BENCHMARKS[spec["benchmark"]]:
        return  # a real task of this benchmark
    tasks = list(BENCHMARKS[spec["benchmark"]]) if spec["tasks"] == "all" else list(spec["tasks"])
    i = data.draw(st.integers(0, len(tasks)))
    tasks.insert(i, name)
    message = parse_error(with_value(("experiments", exp, "tasks"), tasks))
    assert_names(message, ("experiments", exp, "tasks", i))
    assert f"unknown task '{name}'" in message


@SETTINGS
@given(st.sampled_from(
    [("experiments", e, "preset") for e in EXPERIMENTS] + [("experiments", e, "benchmark") for e in EXPERIMENTS]
    + [("methods", m, "net") for m in RAW["methods"]] + [("experiments", e, "goal_mode") for e in EXPERIMENTS]
    + [("device",), ("env", "reward_version"), ("env", "vector_strategy")]), unknown_name)
def test_unknown_preset_net_benchmark_or_choice(path, name):
    assert_names(parse_error(with_value(path, name)), path)


# ---- top_k > num_modules ---------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 100), st.one_of(st.none(), st.sampled_from(D2R_METHODS)), st.booleans())
def test_top_k_larger_than_num_modules(excess, method, shrink_modules):
    raw = copy.deepcopy(RAW)
    nets = raw["nets"]["d2r"]
    if method is None:  # in nets.d2r itself
        top_k, modules = nets["num_modules"] + excess, nets["num_modules"]
        nets["top_k"] = top_k
        path = ("nets", "d2r", "top_k")
    elif shrink_modules:  # a method's override of num_modules below the shared top_k
        nets["top_k"] = top_k = 2 + excess
        nets["num_modules"] = max(nets["num_modules"], top_k)
        raw["methods"][method].setdefault("net_args", {})["num_modules"] = modules = top_k - 1
        path = ("methods", method, "net_args", "num_modules")
    else:  # a method's override of top_k
        modules = nets["num_modules"]
        raw["methods"][method].setdefault("net_args", {})["top_k"] = top_k = modules + excess
        path = ("methods", method, "net_args", "top_k")
    message = parse_error(raw)
    assert_names(message, path)
    assert f"top_k {top_k} is larger than num_modules {modules}" in message


def test_non_string_keys_are_named():
    raw = copy.deepcopy(RAW)
    raw["experiments"][5] = raw["experiments"]["smoke"]
    assert parse_error(raw) == f"{SOURCE}: experiments: key 5 is not a string (quote it)"


# ---- the command line: stops before any job starts, touches nothing --------------------------
def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mutation, expected", [
    (lambda raw: raw["train"].update(learning_rate=0.1), "train.learning_rate: unknown key"),
    (lambda raw: raw["presets"]["smoke"].update(epochs="six"), "presets.smoke.epochs: 'six' is not of type"),
    (lambda raw: raw.pop("nets"), "(top level): 'nets' is a required property"),
    (lambda raw: raw["experiments"]["smoke"]["methods"].append("ppo"),
     "experiments.smoke.methods[2]: unknown method 'ppo'"),
])
def test_cli_refuses_bad_params_before_touching_the_run(tmp_path, mutation, expected):
    raw = copy.deepcopy(RAW)
    mutation(raw)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"  # an existing run: checkpoints, logs, model
    (run / "checkpoints").mkdir(parents=True)
    for name, data in {"checkpoints/ckpt-0000002.pt": b"\x00weights" * 100,
                       "checkpoints/ckpt-0000002.json": b'{"epoch": 2}', "train_log.jsonl": b'{"epoch": 1}\n',
                       "model.pt": b"model"}.items():
        (run / name).write_bytes(data)
    before = snapshot(run)
    proc = subprocess.run([sys.executable, "-m", "d2r", "train", "--params", str(bad), "--experiment", "smoke",
                           "--method", "d2r", "--seed", "0", "--out", str(run), "--threads", "1"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[-1], "one line, no traceback"
    assert proc.stderr.startswith(f"error: {bad}: {expected}"), proc.stderr
    assert snapshot(run) == before
