#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs pytest. Extra arguments go to pytest
# (e.g. `bash tests/run.sh -m slow` for the opt-in full-size tests).
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/setup_env.sh
exec python -m pytest "$@"
