#!/usr/bin/env bash
# The test command: sets everything up, checks style, then runs the whole test suite.
#   ./test.sh            everything
#   ./test.sh -k layers  extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
.venv/bin/ruff check dreamcore bot tests benchmarks scripts
.venv/bin/python -m pytest "$@"
