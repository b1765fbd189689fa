#!/usr/bin/env bash
# Installs what weft's tests and standalone node need on a fresh machine, idempotently:
# the Python SDK's dependencies (jinja2, pytest; pendulum and jsonschema for the Airflow
# compatibility layer), bubblewrap for the task sandbox, the
# wasm32 target the web UI's bundle is compiled for, and Chromium with ChromeDriver for the
# browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import jinja2' 2>/dev/null || python3 -m pip install --quiet 'jinja2>=3.1'
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install --quiet 'pytest>=7'
python3 -c 'import pendulum' 2>/dev/null || python3 -m pip install --quiet 'pendulum>=3,<4'
python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install --quiet 'jsonschema>=4'
bash deploy/install-sandbox-deps.sh >/dev/null

# The web UI's WASM bundle (web-leptos/build compiles it for this target).
if command -v rustup >/dev/null 2>&1 \
    && ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown >/dev/null
fi

# The browser tests (web-leptos/browser-tests) drive headless Chromium through ChromeDriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
    || [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
    else
        echo "chromium and chromedriver are missing and apt-get is not available: install them with your package manager" >&2
        exit 1
    fi
fi
