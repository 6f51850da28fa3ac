#!/usr/bin/env bash
# Every benchmark, each against its baseline in bench/baselines/, printing ratios and writing bench/results/*.json.
# usage: bash bench/all.sh   (on 2 CPU cores: well under 10 minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/setup_env.sh
mkdir -p bench/results
status=0
for b in pamr eval crf infer infer_loop data train_step; do
  echo "=== bench/$b.py"
  if ! python "bench/$b.py"; then
    echo "bench/$b.py FAILED" >&2
    status=1
  fi
done
exit $status
