#!/usr/bin/env bash
# Install amg-reid and its dependencies into the Python environment given as $1 (default: the active python).
# One script for the Makefile and docker/Dockerfile, so both install the same way.
# torch/torchvision are pinned here (pyproject.toml keeps loose ranges): these two lie on our machines' disk, and
# PyPI's torchvision does not import beside the CPU-only torch 2.13.0 that is also there.
set -euo pipefail
PY=${1:-python3}
EXTRAS=${2:-}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
"$PY" -m pip install --upgrade --quiet pip
# shellcheck disable=SC2086
"$PY" -m pip install --quiet ${PIP_NO_CACHE:+--no-cache-dir} $TORCH_SPEC
# editable for development (make); a regular install for images (EDITABLE=0)
if [ "${EDITABLE:-1}" = 1 ]; then
  "$PY" -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
else
  "$PY" -m pip install --quiet --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"
fi
