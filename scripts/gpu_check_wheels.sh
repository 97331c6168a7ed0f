#!/usr/bin/env bash
# Fetch the wheels scripts/gpu_check.sh needs into .whl/, for a GPU machine that cannot reach a
# package index. Run it where pip works, from the repository root, then bring .whl/ along.
#
#   bash scripts/gpu_check_wheels.sh          # for CPython 3.12 on x86-64 Linux (the default)
#   PY_VERSION=3.11 bash scripts/gpu_check_wheels.sh
set -euo pipefail

PY_VERSION=${PY_VERSION:-3.12}
PLATFORMS=(manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64
           manylinux_2_28_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64)

[ -f pyproject.toml ] || { echo "run me from the repository root" >&2; exit 2; }
# The project's runtime dependencies, as pyproject.toml lists them, plus its build backend.
mapfile -t requirements < <(python3 - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
extras = project["project"]["optional-dependencies"]  # gpu_check.sh installs [sampler,embedded]
needed = project["project"]["dependencies"] + extras["sampler"] + extras["embedded"]
print("\n".join(needed + project["build-system"]["requires"]))
PY
)
args=()
for platform in "${PLATFORMS[@]}"; do args+=(--platform "$platform"); done
timeout 300 python3 -m pip download -q --only-binary=:all: --implementation cp \
  --python-version "$PY_VERSION" "${args[@]}" -d .whl "${requirements[@]}"
du -sh .whl
