#!/usr/bin/env bash
# The main command: sets everything up, then runs DreamBot's engine.
#   ./run.sh                        dreams a sample photo into out/dream.png
#   ./run.sh dream IN -o OUT ...    any `dreamcore` command (./run.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if [ $# -eq 0 ]; then
  mkdir -p out
  .venv/bin/dreamcore dream tests/data/chelsea.png -o out/dream.png
  echo "Open out/dream.png. Dream your own photo: ./run.sh dream PHOTO -o out/mine.png [--preset deep]" >&2
else
  exec .venv/bin/dreamcore "$@"
fi
