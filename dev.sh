#!/usr/bin/env bash
# mpmlab's one entry point for people and CI. Sets up everything it needs on first use:
#   ./dev.sh run [mpmlab options]   start the dashboard with the embedded server core
#   ./dev.sh test [pytest options]  lint (ruff), type-check (mypy, strict), then run the test suite
#                                   (tests/unit alone, or -m unit, is the fast layer: seconds)
#   ./dev.sh bench NAME             run a benchmark from bench/
#   ./dev.sh setup                  only install (Python venv, npm packages, Debian test packages)
#   ./dev.sh lock                   refresh requirements.lock (every Python package, pinned with hashes)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
# Debian packages the tests and benchmarks use (real peers: Apache, nginx, lighttpd, wrk, ...).
SYSTEM_PACKAGES=(apache2 nginx lighttpd wrk slowhttptest prometheus-apache-exporter chromium docker-compose)
SYSTEM_COMMANDS=(apache2 nginx lighttpd wrk slowhttptest prometheus-apache-exporter chromium docker-compose)

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return
    fi
  done
  echo "mpmlab needs Python 3.11 or newer" >&2; exit 1
}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$(pick_python)" -m venv "$VENV"
  fi
  # Every package comes from requirements.lock, pinned with its hashes (transitive ones included);
  # then mpmlab itself, editable, with nothing more. Reinstall when either file changed.
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ] \
     || [ requirements.lock -nt "$VENV/.installed" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
    touch "$VENV/.installed"
  fi
}

setup_npm() {
  if ! command -v npm >/dev/null; then echo "mpmlab needs Node.js and npm" >&2; exit 1; fi
  if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
    npm ci --no-audit --no-fund --loglevel=error
    touch node_modules/.installed
  fi
  # Front-end libraries are served from static/vendor, copied from node_modules (never committed).
  "$VENV/bin/python" -m mpmlab.vendor
}

setup_system() {
  local missing=()
  for i in "${!SYSTEM_COMMANDS[@]}"; do
    command -v "${SYSTEM_COMMANDS[$i]}" >/dev/null || [ -x "/usr/sbin/${SYSTEM_COMMANDS[$i]}" ] \
      || missing+=("${SYSTEM_PACKAGES[$i]}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages for the tests: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need these Debian packages: ${missing[*]} (run as root, or install them)" >&2
    [ "${CI:-}" = true ] && exit 1
  fi
}

lock() {
  # pip-compile (pip-tools) resolves pyproject.toml's pins and extras to every transitive package
  # with the hashes of its files; run in a throwaway virtualenv, so the project's stays as it is.
  local tools=.venv-lock
  [ -x "$tools/bin/pip-compile" ] || { "$(pick_python)" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check pip-tools==7.6.2; }
  "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
    --no-emit-find-links --extra test --extra locust --extra bench -o requirements.lock pyproject.toml
  echo "requirements.lock refreshed: review the diff, run ./dev.sh test, commit both files" >&2
}

cmd=${1:-run}; shift || true
case "$cmd" in
  setup) setup_python; setup_npm; setup_system ;;
  lock) lock ;;
  run) setup_python; setup_npm; exec "$VENV/bin/mpmlab" "$@" ;;
  test)
    setup_python; setup_npm; setup_system
    # Any finding fails the run before a test starts (configuration in pyproject.toml).
    "$VENV/bin/ruff" check mpmcore mpmlab tests bench
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) setup_python; setup_npm; setup_system; name=${1:?benchmark name}; shift; exec "$VENV/bin/python" "bench/bench_$name.py" "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
