#!/usr/bin/env bash
# Builds wheels/ for benchmarks/gpu_check.sh: the packages a bare GPU machine (Python 3.12, x86-64
# manylinux, torch with CUDA, numpy, scipy, pyyaml, tqdm, imageio, tensorboard, absl-py, etils, attrs,
# cloudpickle, typing-extensions already there) lacks, at the versions pyproject.toml pins and, for their
# dependencies, the versions of this project's environment. Run it on a machine with network:
#   bash benchmarks/gpu_wheels.sh      # -> wheels/ (~46 MB, ignored by git; the device tool's carry list)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip download -q --no-deps --only-binary=:all: -d wheels \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  mujoco==3.3.0 metaworld==3.1.1 gymnasium==1.4.0 jsonschema==4.26.0 \
  glfw==2.11.0 pyopengl==3.1.10 farama-notifications==0.0.6 \
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
du -sh wheels
