#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared run for a lent GPU machine (BENCHMARKS.md, "On a GPU"):
# the CUDA tests, then `benchmarks/run.py --full` (ViT-B and ViT-L at 1024 px, bf16 autocast, MFU,
# peak memory). Results go to $OUT (the device tool's return folder) or benchmarks/results.
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
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_adapters.py \
  tests/test_model.py 2>&1 | tee "$OUT/cuda_tests.log" || status=1
timeout 420 python3 benchmarks/run.py "--$MODE" --repeats 5 --peak-tflops "${PEAK_TFLOPS:-989}" \
  --output "$OUT/$MODE.json" >/dev/null 2> "$OUT/$MODE.err" || { status=1; tail -20 "$OUT/$MODE.err"; }
python3 - "$OUT/$MODE.json" <<'PY' || status=1
import json, sys
doc = json.load(open(sys.argv[1]))
print(json.dumps(doc["meta"]))
for key in ("p1_tora_over_frozen", "p1_materialised_over_factored", "p2_step_over_frozen", "p3_step_over_reference"):
    fig = doc[key]
    print(f"{key}: {fig.get('value')} ({fig.get('min')}-{fig.get('max')}) target {fig.get('target')} met={fig.get('met')}")
for shape, step in doc["details"]["steps"].items():
    print(shape, "tflops", step["achieved_tflops"], "mfu", step["mfu"])
    print("  peak MiB", {k: v.get("peak_mib") for k, v in step.get("peak_memory", {}).items() if isinstance(v, dict)})
PY
exit $status
