#!/usr/bin/env bash
# Idempotent setup: apt media tools + Tux Paint stamps, then .venv with mmal installed (editable) from
# pyproject.toml with all its extras, torch (CPU) named first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="tuxpaint-stamps-default oxygen-icon-theme ffmpeg espeak-ng sox chromium chromium-driver"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  $PY -m venv .venv
fi
# One dependency list: pyproject.toml ([project] dependencies and every extra). The stamp is keyed
# on pyproject.toml + this script, so a second run with nothing changed installs nothing.
stamp=.venv/.mmal-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ] || [ ! -x .venv/bin/mmal ]; then
  echo "setup: installing mmal and its dependencies from pyproject.toml (torch 2.13.0 CPU first, in the same command)"
  .venv/bin/pip install -q --upgrade pip
  # torch==2.13.0 is named first so pip takes the local CPU wheel and no CUDA wheels.
  .venv/bin/pip install -q "torch==2.13.0" -e ".[weights,test,bench]"
  rm -f .venv/.mmal-setup-*
  touch "$stamp"
fi
