#!/usr/bin/env bash
# Create .venv (Python 3.11) and install Flywheel with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY="$candidate"; break
  fi
done
if [ -z "$PY" ]; then
  echo "Flywheel needs Python 3.11 (python3.11 or python3 must be 3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.flywheel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # The CPU build of torch first (the local embedding model needs it); a plain resolve could
  # otherwise pick a multi-GB CUDA build. /opt/wheels holds it on machines that ship it.
  find_links=()
  [ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
  .venv/bin/python -m pip install --quiet "${find_links[@]}" "torch==2.13.0"
  .venv/bin/python -m pip install --quiet "${find_links[@]}" -e '.[test]'
  touch "$stamp"
fi
