"""Small file helpers: every output is written atomically (temporary file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class CheckpointError(RuntimeError):
    """A checkpoint or model file that cannot or must not be loaded; the message names the file.
    (Defined here, beside the other file errors, so that the CLI can name it without torch.)"""


class ResultFileError(ValueError):
    """A results file that exists but cannot be read as what it should be; the message names it."""


class WriteError(OSError):
    """A file that could not be written (disk full, quota, I/O error), naming it."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(err.errno, f"cannot write {path}: {err.strerror or err}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(path, err) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # disk full, quota, I/O error: the old file is untouched
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_text(path: str | Path, text: str) -> None:
    """Append `text` to a log file; a failed write names the file (a torn last line is ignored by
    read_jsonl)."""
    try:
        with open(path, "a") as f:
            f.write(text)
            f.flush()
    except OSError as err:
        raise WriteError(Path(path), err) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dump_json(data: Any) -> str:
    """Canonical JSON text: sorted keys, so the same data gives the same bytes."""
    return json.dumps(data, sort_keys=True, indent=1, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, dump_json(data))


def read_json(path: str | Path) -> Any:
    """A JSON file's data; a file that is not JSON (truncated, edited) raises ResultFileError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultFileError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines log; a torn last line (a crash mid-write) is ignored."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return


class JsonlLog:
    """A JSON-lines log kept in memory too: the checkpoints carry its records, and a resumed run
    rewrites the file from them (whatever became of the file)."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []

    def restore(self, records: list[dict]) -> None:
        """Start from `records` (those of the checkpoint resumed from): the file is rewritten."""
        self.records = list(records)
        atomic_write_bytes(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records).encode())

    def append(self, record: dict) -> None:
        self.records.append(record)
        append_text(self.path, json.dumps(record, sort_keys=True) + "\n")
