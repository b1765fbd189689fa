#!/usr/bin/env bash
# Installs what the task sandbox needs (bubblewrap). Idempotent: does nothing when `bwrap` is
# already on PATH, so CI and developers can run it on every start.
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
    echo "bubblewrap already installed: $(command -v bwrap)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "bwrap is missing and apt-get is not available: install bubblewrap with your package manager" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y bubblewrap
echo "bubblewrap installed: $(command -v bwrap)"
