#!/usr/bin/env bash
# Set up the environment and run the checks: ruff, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q --durations=20 "$@"
