#!/usr/bin/env bash
# Installs what task isolation needs: bubblewrap for the full sandbox, and a Python that a task
# user can run (Debian's /usr/bin/python3 with jinja2, which the task runner renders templates
# with): a Python under root's home, as pyenv installs it, is out of a task user's reach.
# Idempotent: installs only what is missing, so CI and developers can run it on every start.
set -euo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import jinja2' >/dev/null 2>&1; then
    missing+=(python3 python3-jinja2)
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "task isolation dependencies already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${missing[*]} and apt-get is not available: install them with your package manager" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y "${missing[@]}"
echo "installed: ${missing[*]}"
