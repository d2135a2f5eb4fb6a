#!/usr/bin/env bash
# The main job: set up, then run the whole pipeline on the bundled Korean sample, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
exec .venv/bin/python launch/demo.py "$@"
