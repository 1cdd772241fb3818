#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared run for a lent GPU machine (BENCHMARKS.md, "On a GPU"):
# the CUDA tests, then `benchmarks/run.py --full` (ViT-B and ViT-L at 1024 px, bf16 autocast, MFU,
# p2/p3/p6/p7/p8), then issue 18's memory check: the estimator (mtsam/memory_plan.py) against
# torch.cuda.max_memory_allocated in bf16, with and without activation checkpointing, ±20 %
# (benchmarks/memory_check.py). Results go to $OUT (the device tool's return folder) or
# benchmarks/results: gpu.txt, cuda_tests.log, <mode>_p1.json/.err, <mode>_steps.json/.err,
# <mode>_memory.json/.err.
#   here, once:   bash benchmarks/gpu_wheels.sh          (the packages the GPU image lacks → .whl/)
#   device call:  carry [".whl"], command "bash benchmarks/gpu_check.sh", timeout_s 600
# MODE=tiny runs the same steps at smoke-test shapes (and on CPU, to check this script itself).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
MODE="${MODE:-full}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/mtsam-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/mtsam-site:$PWD"
fi
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if [ "$MODE" != tiny ]; then echo "gpu_check: torch sees no CUDA device" >&2; exit 1; fi
  echo "gpu_check: no CUDA device; MODE=tiny runs on the CPU (the CUDA tests skip)"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  | tee "$OUT/gpu.txt"
status=0
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_adapters.py \
  tests/test_model.py tests/test_encoder.py 2>&1 | tee "$OUT/cuda_tests.log" || status=1
# p1 and the steps (p2, p3, p6, p7, p8, MFU) as separate runs, so a slow later part keeps the earlier
# JSON. The steps skip their peak-memory probes: the memory check below measures ours with and
# without checkpointing, which is what the estimate is judged on.
for part in p1:60 steps:220; do
  only="${part%%:*}" limit="${part##*:}"
  timeout "$limit" python3 benchmarks/run.py "--$MODE" --only "$only" --repeats 5 --no-memory \
    --peak-tflops "${PEAK_TFLOPS:-989}" --output "$OUT/${MODE}_$only.json" >/dev/null \
    2> "$OUT/${MODE}_$only.err" || { status=1; echo "gpu_check: $only failed or timed out"; tail -5 "$OUT/${MODE}_$only.err"; }
done
timeout 150 python3 benchmarks/memory_check.py --mode "$MODE" --output "$OUT/${MODE}_memory.json" >/dev/null \
  2> "$OUT/${MODE}_memory.err" || { status=1; echo "gpu_check: memory check failed, outside ±20 % or timed out"; tail -5 "$OUT/${MODE}_memory.err"; }
python3 benchmarks/gpu_summary.py "$OUT/${MODE}_p1.json" "$OUT/${MODE}_steps.json" "$OUT/${MODE}_memory.json" || status=1
exit $status
