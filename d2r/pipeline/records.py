"""Build records: what each job's outputs were made from, and whether they still are current.

Every pipeline job writes, after it succeeded, a record beside its outputs (d2r.pipeline.layout: e.g.
results/E/M/seedS/records/train.json): the parameters it depended on, a SHA-256 of each source
file it runs, of each input file it read and of each output it wrote. Whether a result is current
is then decided from content alone: a result is outdated when its record is missing or unreadable,
an output is not the file its job wrote (edited, truncated), its parameters or code differ from
today's, it was made from other inputs, or a job it was made from is outdated. File times and
Snakemake's .snakemake/ records play no part, so a clone after `dvc pull`, a DVC experiment's
temporary workspace and the original tree give the same verdicts. The records travel with the
results (DVC outputs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from d2r.config import Params
from d2r.pipeline.layout import PAPER, Job, input_files, job_params, upstream
from d2r.pipeline.sources import ROOT, job_sources
from d2r.runtime.io import atomic_write_json, dump_json

FORMAT = 1          # a record of another format is outdated: its job runs again


def file_digest(path: str | Path) -> str | None:
    """SHA-256 of a file, or of a directory's files (names and contents; atomic-write leftovers and
    the time stamp Snakemake puts in a directory output after its job are not content); None when
    it does not exist."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        files = (p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
                 and p.name != ".snakemake_timestamp")
        for f in sorted(files):
            h.update(f"{f.relative_to(path).as_posix()}\0{file_digest(f)}\n".encode())
        return h.hexdigest()
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def code_digests(job_name: str) -> dict[str, str | None]:
    """Each d2r source file the job runs (d2r.pipeline.sources) -> its SHA-256."""
    return {path: file_digest(ROOT / path) for path in job_sources(job_name)}


def _as_json(data: Any) -> Any:
    """JSON data as it reads back from a record (tuples become lists)."""
    return json.loads(dump_json(data))


def _input_paths(job: Job, params: Params) -> list[str]:
    return [f for group in input_files(job, params).values() for f in group]


def made_from(job: Job, params: Params) -> dict[str, Any]:
    """What the job's outputs are made from, now: its parameters, code and input files."""
    files = _input_paths(job, params)
    return {"format": FORMAT, "job": job.label, "params": _as_json(job_params(job, params)),
            "code": code_digests(job.name), "inputs": {f: file_digest(f) for f in files}}


def write_record(job: Job, made: dict[str, Any]) -> None:
    """After the job succeeded: `made` (taken before it ran) with the digests of its outputs."""
    atomic_write_json(job.record, {**made, "outputs": {f: file_digest(f) for f in job.outputs().values()}})


class RecordError(ValueError):
    """A record that exists but cannot be read; the message names the file."""


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record, or None when there is none."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: unreadable record ({err})") from None
    if not isinstance(record, dict) or not {"params", "code", "inputs", "outputs"} <= record.keys():
        raise RecordError(f"{path}: not a build record")
    return record


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def _changes(old: dict, new: dict, show: int = 3) -> str:
    """`a.b: 1 -> 2, c: 3 -> (none)` for the keys that differ (the first `show`, then a count)."""
    old, new = _flatten(old), _flatten(new)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "(none)") != new.get(k, "(none)"))
    text = ", ".join(f"{k}: {json.dumps(old.get(k, '(none)'))} -> {json.dumps(new.get(k, '(none)'))}"
                     for k in keys[:show])
    return text + (f" and {len(keys) - show} more" if len(keys) > show else "")


def _names(paths: list[str], show: int = 3) -> str:
    return ", ".join(paths[:show]) + (f" and {len(paths) - show} more" if len(paths) > show else "")


class Freshness:
    """Verdicts on the jobs of one tree against today's params.yaml and code (digests cached)."""

    def __init__(self, params: Params):
        self.params = params
        self._digests: dict[str, str | None] = {}
        self._code: dict[str, dict[str, str | None]] = {}
        self._verdicts: dict[Job, tuple[str | None, bool]] = {}

    def digest(self, path: str) -> str | None:
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def outdated(self, job: Job) -> bool:
        return self.verdict(job)[0] is not None

    def verdict(self, job: Job) -> tuple[str | None, bool]:
        """(why the job's outputs are not current, or None; whether that reason is worth a line:
        not for a job never built, nor one outdated only because a job before it is)."""
        if job not in self._verdicts:
            self._verdicts[job] = self._judge(job)
        return self._verdicts[job]

    def _judge(self, job: Job) -> tuple[str | None, bool]:
        # The paper table is of the metrics as they are (d2r.pipeline.layout): whether their reports are
        # current is not its concern, only whether they are the files it read (below).
        before_jobs = [] if job.name == PAPER else upstream(job, self.params)
        for before in before_jobs:   # the root cause is said there
            if self.outdated(before):
                return f"made from the outputs of {before.label}, which is outdated", False
        outputs = list(job.outputs().values())
        try:
            record = read_record(job.record)
        except RecordError as err:
            return f"{err}", True
        if record is None:
            present = [f for f in outputs if self.digest(f) is not None]
            if not present:
                return "not built yet", False
            return f"{present[0]} has no build record ({job.record}): made before records or interrupted", True
        if record.get("format") != FORMAT:
            return f"{job.record}: a record of another format", True
        changed = [f for f in outputs if record["outputs"].get(f) != self.digest(f)]
        if changed:
            what = "missing" if self.digest(changed[0]) is None else "not the file its job wrote (edited or damaged since)"
            return f"{changed[0]} is {what}", True
        params = _as_json(job_params(job, self.params))
        if record["params"] != params:
            return f"made with other parameters ({_changes(record['params'], params)})", True
        if job.name not in self._code:
            self._code[job.name] = code_digests(job.name)
        code = self._code[job.name]
        if record["code"] != code:
            files = sorted(f for f in code.keys() | record["code"].keys() if code.get(f) != record["code"].get(f))
            return f"made by other code ({_names(files)} changed)", True
        files = _input_paths(job, self.params)
        if sorted(record["inputs"]) != sorted(files):
            return "made from another set of inputs", True
        changed = [f for f in files if record["inputs"][f] != self.digest(f)]
        if changed:
            return f"made from other inputs ({_names(changed)} changed since)", True
        return None, False
