#!/usr/bin/env bash
# Quick start: set up and run the whole product on embedded defaults
# (Temporal dev server with UI, SQLite, demo shop, local mailbox, worker, API, demo tenant).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/flywheel dev "$@"
