#!/usr/bin/env bash
# The main command: sets everything up, then runs DreamBot with its web page (http://127.0.0.1:8080/).
#   ./run.sh                          the bot and its page (reads ./dreambot.toml if there is one)
#   ./run.sh status | cancel JOB | schedule list | worker   other `dreambot` commands (init writes an example configuration)
#   ./run.sh dream IN -o OUT ...      the engine's own `dreamcore` command, for one photo at a time
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if [ $# -eq 0 ]; then
  exec .venv/bin/dreambot serve
fi
case "$1" in
  serve | status | cancel | init | worker | schedule | --config) exec .venv/bin/dreambot "$@" ;;
  *) exec .venv/bin/dreamcore "$@" ;;
esac
