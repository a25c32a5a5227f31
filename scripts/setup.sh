#!/usr/bin/env bash
# Sets up everything the project needs in ./.venv, idempotently: Python packages (PyTorch 2.13.0
# first, so pip never pulls a different build) and, with --test, the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "DreamBot needs Python 3.11 or newer; set PYTHON=/path/to/python3.11 and run again." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
stamp=".venv/.installed$extras"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing DreamBot's Python packages into .venv (first run takes a few minutes)..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".$extras"
  echo "$want" > "$stamp"
fi

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work everywhere).
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing chromium for the browser tests..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "The browser tests need Chromium at /usr/bin/chromium: sudo apt-get install chromium" >&2
  fi
fi
