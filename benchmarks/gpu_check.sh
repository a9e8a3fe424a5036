#!/usr/bin/env bash
# The GPU check: full-size SD1.5 (512 px) and SDXL (1024 px) LoRA training with random weights, in fp16 and bf16,
# AdamW8bit, accumulation 2, sampling, stop and resume, Generate with the LoRA (pytest -m gpu); then seconds per
# step and peak VRAM (benchmarks/bench_gpu.py). A few minutes on one H100/H200-class GPU.
#
# For a GPU machine without network that has PyTorch, accelerate, transformers, peft, safetensors, pillow and
# opencv: put the wheels it lacks in a wheelhouse first, on a machine with network, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl diffusers bitsandbytes
# then run, from the repository root there:   benchmarks/gpu_check.sh [WHEELHOUSE]   (default: .whl)
# Output: test results and a table; with $OUT set, the log and bench_gpu.json are written there too.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-.whl}
PY=${PYTHON:-python3}
SITE=${TMPDIR:-/tmp}/kohya-lite-gpu-site
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "==> installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF' || exit 1
import importlib, sys
need = ["torch", "diffusers", "transformers", "accelerate", "safetensors", "bitsandbytes", "cv2", "PIL", "tqdm", "pytest"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
if missing:
    sys.exit(f"gpu_check: missing {', '.join(missing)}: add their wheels to the wheelhouse")
PYEOF
LOG=${OUT:-${TMPDIR:-/tmp}}/gpu_check.log
{
  echo "==> pytest -m gpu"
  "$PY" -m pytest -q -m gpu -s -p no:cacheprovider tests/test_gpu.py; status=$?
  echo "==> benchmarks/bench_gpu.py"
  "$PY" benchmarks/bench_gpu.py --json "${OUT:-${TMPDIR:-/tmp}}/bench_gpu.json" || status=1
  exit $status
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
