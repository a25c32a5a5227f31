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

# A C++ compiler builds the engine's CPU kernels on first use (dreamcore/native.py); without one,
# dreams on the CPU take PyTorch's slower path.
if ! command -v g++ >/dev/null && ! command -v c++ >/dev/null && [ -z "${CXX:-}" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing g++ for the engine's fast CPU kernels..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; } ||
      echo "Could not install g++: dreams on the CPU will be slower." >&2
  else
    echo "No C++ compiler: dreams on the CPU will be slower (sudo apt-get install g++ to speed them up)." >&2
  fi
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

# The scale-out tests (tests/test_celery*.py) start a private Redis of their own: Debian's redis-server.
if [ "${1:-}" = "--test" ] && ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing redis-server for the scale-out tests..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "The scale-out tests need redis-server: sudo apt-get install redis-server" >&2
  fi
fi
