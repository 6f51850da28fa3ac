#!/usr/bin/env bash
# Sourced by the launch scripts: runs from the repository root in the project's environment, with the helpers below.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/setup_env.sh

# require_vars NAME...: exit 2 with one line naming the first empty variable and how to set it.
require_vars() {
  local v
  for v in "$@"; do
    if [ -z "${!v}" ]; then
      echo "error: $v is empty; set it at the top of $0 or in the environment (e.g. $v=... bash $0)" >&2
      exit 2
    fi
  done
}

# split_extra_args "$EXTRA_ARGS": fills OTHER (every other argument) and appends the --set pairs to SETS, so that the
# caller passes them all after a single --set (argparse's --set takes every token up to the next option).
split_extra_args() {
  local tok in_set=0
  local -a extra
  # shellcheck disable=SC2206
  extra=($1)
  OTHER=()
  for tok in "${extra[@]}"; do
    if [ "$tok" = "--set" ]; then
      in_set=1
    elif [ "$in_set" = 1 ] && [[ "$tok" != --* ]]; then
      SETS+=("$tok")
    else
      in_set=0
      OTHER+=("$tok")
    fi
  done
}

# run_logged LOG_FILE CMD...: with FOREGROUND=1 run in the foreground, output to the terminal and LOG_FILE, and exit
# with the command's status; otherwise start it with nohup and follow the log.
run_logged() {
  local log_file="$1"
  shift
  if [ "${FOREGROUND:-0}" = 1 ]; then
    "$@" 2>&1 | tee "$log_file"
    exit "${PIPESTATUS[0]}"
  fi
  nohup "$@" > "$log_file" 2>&1 &
  sleep 1
  tail -f "$log_file"
}
