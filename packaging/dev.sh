#!/usr/bin/env bash
# Thin wrapper for scripts and habits: the set-up lives in packaging/dev.py (runs on every OS).
#   bash packaging/dev.sh app|test|setup|cli [ARGS]
set -euo pipefail
exec python3 "$(dirname "$0")/dev.py" "$@"
