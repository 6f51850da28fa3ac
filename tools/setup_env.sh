#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment in .venv.
# Source it: `source tools/setup_env.sh`. Installs requirements.txt, and requirements-dev.txt too when SETUP_DEV=1
# (tests/run.sh); re-installs only when the requirement files changed.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="$_root/.venv"
_pth=single_stage_wseg_root.pth
if [ "${SETUP_DEV:-0}" = 1 ]; then _req="$_root/requirements-dev.txt"; _stamp="$_venv/.requirements-dev.sha256"
else _req="$_root/requirements.txt"; _stamp="$_venv/.requirements.sha256"; fi
_want="$(cat "$_root/requirements.txt" "$_req" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$_venv/bin/python" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "[setup] installing $(basename "$_req") into $_venv (first time: a few minutes)" >&2
  _py="${PYTHON:-python3}"
  if ! "$_py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python >= 3.11 is required by the pinned packages (numpy 2.4); $_py is" \
      "$("$_py" --version 2>&1 || echo missing): set PYTHON=/path/to/python3.11" >&2; return 1 2>/dev/null || exit 1
  fi
  [ -x "$_venv/bin/python" ] || "$_py" -m venv "$_venv" || { echo "error: could not create $_venv" >&2; return 1 2>/dev/null || exit 1; }
  if ! "$_venv/bin/pip" install -q --disable-pip-version-check -r "$_req" >&2; then
    echo "error: pip could not install $(basename "$_req") into $_venv; see the messages above" >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "$_want" > "$_stamp"
fi
# The repository root on the venv's import path: `python tools/x.py` and `python bench/x.py` (whose own folder is
# what Python puts first) import the project, also with .venv/bin/python unactivated. A .venv that is a symlink may
# serve several checkouts and could name only one; there PYTHONPATH below, of this shell, names the root.
if [ ! -L "$_venv" ]; then
  for _site in "$_venv"/lib/python3*/site-packages; do
    [ "$(cat "$_site/$_pth" 2>/dev/null)" = "$_root" ] || echo "$_root" 2>/dev/null > "$_site/$_pth" || true
  done
fi
export PATH="$_venv/bin:$PATH"
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
unset _root _venv _pth _stamp _want _py _req _site
