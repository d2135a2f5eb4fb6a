#!/usr/bin/env bash
# GPU acceptance run in one command (benchmarks/gpu_acceptance.py says what it checks):
#
#   bash benchmarks/gpu_acceptance.sh [--out report.json]          # 1-8 CUDA GPUs, under 8 minutes
#   bash benchmarks/gpu_acceptance.sh --cpu-smoke [--out ...]      # tiny, on CPU ranks (what CI runs)
#   bash benchmarks/gpu_acceptance.sh --help                       # budget, parts, variants, steps
#
# Installs nothing heavy. Python: $PYTHON when set; else the repository's .venv; else a python3
# that already imports torch, deepspeed and transformers (a GPU machine's image plus carried
# wheels); else launch/setup.sh creates .venv. Exit code 0 when every part passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
elif python3 -c "import torch, deepspeed, transformers" >/dev/null 2>&1; then
    py=python3
else
    bash launch/setup.sh
    py=.venv/bin/python
fi
export PYTHONUNBUFFERED=1
exec "$py" benchmarks/gpu_acceptance.py "$@"
