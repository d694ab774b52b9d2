#!/usr/bin/env bash
# The GPU check in one command, for a bare GPU machine (Python 3.12 and torch with CUDA, but no mujoco,
# metaworld, gymnasium or jsonschema): installs the packages from ./wheels (built on a machine with
# network by benchmarks/gpu_wheels.sh) into a temporary folder, then runs benchmarks/gpu_check.py (its
# docstring lists the steps; 6 minutes, its --budget), which writes its table, JSON and logs to --out
# (default: $OUT, else benchmarks/runs/gpu_check) after every step and prints the table last.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --cpu      # dry run on a CPU (small sizes), to check the script
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NEEDED="import mujoco, metaworld, gymnasium, jsonschema, yaml"
if ! "$PY" -c "$NEEDED" 2>/dev/null; then  # a bare machine: install them from wheels/
  compgen -G "wheels/*.whl" >/dev/null || { echo "error: no wheels/: build it with benchmarks/gpu_wheels.sh" >&2; exit 1; }
  SITE=$(mktemp -d /tmp/d2r-site.XXXXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" wheels/*.whl || {
    echo "error: installing wheels/ failed" >&2; exit 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "$NEEDED" || { echo "error: a package is still missing after installing wheels/" >&2; exit 1; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
