#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine: the virtual environment with metarec and its
# extras (CPU torch), and the real Prometheus server and docker-compose from Debian for the operations tests.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0 -e '.[test,eval,text]'
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} not installed (needs root and apt-get); the tests that use them will fail" >&2
  fi
fi
