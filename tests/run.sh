#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs pytest. Extra arguments go to pytest
# (e.g. `bash tests/run.sh -m slow` for the opt-in full-size tests).
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SETUP_DEV=1 source tools/setup_env.sh
# the demo-report test renders the page in headless Chromium (Debian's package)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing chromium for the report test" >&2
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/dev/null 2>&1 \
    || echo "warning: could not install chromium; the report rendering test will fail" >&2
fi
# one pytest worker per core, up to 4 (pytest-xdist); a test file stays on one worker, so that its module fixtures
# (the shortened demo, trained snapshots) are built once. `bash tests/run.sh -n 0` runs in this process alone
workers=$(nproc 2>/dev/null || echo 1)
[ "$workers" -gt 4 ] && workers=4
exec python -m pytest -n "$workers" --dist loadfile "$@"
