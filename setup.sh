#!/usr/bin/env bash
# kohya-lite setup: creates .venv and installs everything the app needs.
#   ./setup.sh          the app (torch, diffusers, gradio, ...)
#   ./setup.sh --dev    the app plus the test tools (pytest, Playwright, Debian's Chromium)
# Re-running is fast: nothing is reinstalled unless pyproject.toml, constraints.txt or this script changed.
# Versions come from constraints.txt (what CI tested). TORCH_SPEC overrides the torch requirement (default
# torch==2.13.0; on Linux that wheel runs on NVIDIA GPUs too). Where `nvidia-smi` works, WD14 captioning gets
# onnxruntime-gpu instead of onnxruntime.
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (use --dev or nothing)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup.sh: Python 3.10+ is needed; install it and run ./setup.sh again." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
VPY=.venv/bin/python

stamp_of() { cat pyproject.toml constraints.txt setup.sh | sha256sum | cut -c1-16; echo "dev=$1"; }
STAMP=.venv/.kohya-lite-setup
want=$(stamp_of "$DEV")
have=$(cat "$STAMP" 2>/dev/null || true)

if [ "$want" != "$have" ] && ! { [ "$DEV" = 0 ] && [ "$(stamp_of 1)" = "$have" ]; }; then
  if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    spec=${TORCH_SPEC:-torch==2.13.0}  # on Linux the default index's torch is the CUDA build
    echo "==> installing $spec"
    "$VPY" -m pip install -q "$spec"
  fi
  wd14="wd14"; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1 && wd14="wd14-gpu"
  extras="$wd14"; [ "$DEV" = 1 ] && extras="$wd14,dev"
  echo "==> installing kohya-lite[$extras] and its dependencies"
  "$VPY" -m pip install -q -c constraints.txt -e ".[$extras]"
  echo "$want" > "$STAMP"
else
  echo "==> .venv is up to date"
fi

if [ "$DEV" = 1 ] && [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for the browser tests"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "setup.sh: browser tests need Chromium; set CHROMIUM_PATH to its binary." >&2
  fi
fi
echo "==> ready"
