#!/usr/bin/env bash
# Set up and run the whole test suite. Database tests run on SQLite, and on PostgreSQL too when
# FLYWHEEL_TEST_POSTGRES_URL is set (.ci/run sets it to the local server). Browser tests drive
# Debian's chromium, installed here when missing (root) .
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser tests (apt-get)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
