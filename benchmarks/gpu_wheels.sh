#!/usr/bin/env bash
# Fetch, here (where pip reaches the package index), the wheels that the lent GPU machine's image
# lacks, for its Python 3.12 on x86-64, into .whl/ (git-ignored; the device call carries it).
# The image already has torch, torchvision, numpy, pyyaml, pillow, tqdm, pytest (+ pytest-timeout).
# Versions follow this checkout's .venv, so the GPU runs the code the CPU suite tested.
set -euo pipefail
cd "$(dirname "$0")/.."
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir .whl
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions segment-anything; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$name==$(version "$name")"
done
ls -l .whl
