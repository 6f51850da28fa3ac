#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment in .venv.
# Source it: `source tools/setup_env.sh`. Re-installs only when requirements.txt changed.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="$_root/.venv"
_stamp="$_venv/.requirements.sha256"
_want="$(sha256sum "$_root/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$_venv/bin/python" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "[setup] installing the environment into $_venv (first time: a few minutes)" >&2
  _py="${PYTHON:-python3}"
  if ! "$_py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: Python >= 3.10 is required (set PYTHON=/path/to/python3)" >&2; return 1 2>/dev/null || exit 1
  fi
  [ -x "$_venv/bin/python" ] || "$_py" -m venv "$_venv" || { echo "error: could not create $_venv" >&2; return 1 2>/dev/null || exit 1; }
  if ! "$_venv/bin/pip" install -q --disable-pip-version-check -r "$_root/requirements.txt" >&2; then
    echo "error: pip could not install requirements.txt into $_venv; see the messages above" >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "$_want" > "$_stamp"
fi
export PATH="$_venv/bin:$PATH"
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
unset _root _venv _stamp _want _py
