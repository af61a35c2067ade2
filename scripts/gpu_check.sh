#!/usr/bin/env bash
# pdiff's GPU check, for a machine with a CUDA GPU, Python 3.12 and torch but none of pdiff's other
# packages, and no network (../shared/GPU-NOTES.md):
#   bash scripts/gpu_check.sh fetch   # here, with network: wheels for Python 3.12 into .gpu-wheels/ (~5 MB)
#   bash scripts/gpu_check.sh run     # there: install them under /tmp, run the GPU tier and the benchmarks
# `run` runs the GPU tier, benchmarks/gpu.py (p-diff's reference job) and benchmarks/gpu_rung.py (the
# 10^6 rung's flow_pca and token designs trained in bf16 and sampled on CUDA, on a synthetic zoo of the
# rung's layout), and prints the rung's table last; it exits non-zero if a test or a benchmark fails.
# With the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".gpu-wheels"], timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PY=${PYTHON:-python3}
# What the GPU machine lacks (its python has torch, numpy, scipy, scikit-learn, safetensors, matplotlib,
# rich, tqdm, pytest, psutil, ninja). W&B is not needed: pdiff imports it only for logger=wandb.
BINARY=(hydra-core==1.3.8 omegaconf==2.3.1 PyYAML submitit==1.5.4 cloudpickle einops hjson msgpack py-cpuinfo
        "pydantic>=2,<3" pydantic-core annotated-types typing-inspection typing-extensions)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3 deepspeed==0.19.8)  # built here as pure-Python wheels

fetch() {
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$WHEELS" "${BINARY[@]}"
  # pydantic pins one pydantic-core: fetch exactly that one
  rm -f "$WHEELS"/pydantic_core-*.whl
  core=$(unzip -p "$WHEELS"/pydantic-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p')
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$WHEELS" \
    "pydantic-core==$core"
  DS_BUILD_OPS=0 "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHEELS" "${SOURCE_ONLY[@]}"
  du -sh "$WHEELS"
  ls "$WHEELS"
}

run() {
  local site=/tmp/pdiff-gpu-site
  rm -rf "$site" && "$PY" -m pip install --quiet --no-index --no-deps --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PDIFF_REQUIRE_GPU=1 PDIFF_QUIET=1 WANDB_MODE=disabled
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  status=0
  "$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -rA 2>&1 | tail -25 || status=$?
  (cd benchmarks && "$PY" gpu.py --out "${OUT:-/tmp}/gpu.json") || status=$?
  (cd benchmarks && "$PY" gpu_rung.py --device cuda --out "${OUT:-/tmp}/gpu_rung.json") || status=$?
  return $status
}

case "${1:-}" in
  fetch) fetch ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu_check.sh fetch|run" >&2; exit 2 ;;
esac
