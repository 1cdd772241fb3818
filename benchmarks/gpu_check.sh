#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared run for a lent GPU machine (BENCHMARKS.md, "On a GPU"):
# the CUDA tests, then `benchmarks/run.py --full` (ViT-B and ViT-L at 1024 px, bf16 autocast, MFU,
# peak memory). Results go to $OUT (the device tool's return folder) or benchmarks/results:
# gpu.txt, cuda_tests.log, <mode>_p1.json/.err, <mode>_steps.json/.err.
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
# p1 and the steps (p2, p3, MFU, peak memory) as two runs, so a slow second part keeps the first's JSON.
for part in p1:120 steps:420; do
  only="${part%%:*}" limit="${part##*:}"
  timeout "$limit" python3 benchmarks/run.py "--$MODE" --only "$only" --repeats 5 \
    --peak-tflops "${PEAK_TFLOPS:-989}" --output "$OUT/${MODE}_$only.json" >/dev/null \
    2> "$OUT/${MODE}_$only.err" || { status=1; echo "gpu_check: $only failed or timed out"; tail -5 "$OUT/${MODE}_$only.err"; }
done
python3 - "$OUT/${MODE}_p1.json" "$OUT/${MODE}_steps.json" <<'PY' || status=1
import json, sys
from pathlib import Path
docs = [json.loads(Path(p).read_text()) for p in sys.argv[1:] if Path(p).is_file()]
for doc in docs:
    print(json.dumps(doc["meta"]))
    for key in ("p1_tora_over_frozen", "p1_materialised_over_factored", "p2_step_over_frozen", "p3_step_over_reference"):
        fig = doc[key]
        if fig.get("value") is not None:
            print(f"{key}: {fig['value']} ({fig.get('min')}-{fig.get('max')}) target {fig.get('target')} met={fig.get('met')}")
    for shape, layer in doc["details"]["p1"].items():
        print(shape, "seconds", {k: v["median"] for k, v in layer["seconds"].items()})
    for shape, step in doc["details"]["steps"].items():
        print(shape, "seconds", {k: v["median"] for k, v in step["seconds"].items()})
        print("  tflops", step["achieved_tflops"], "mfu", step["mfu"])
        print("  peak MiB", {k: v.get("peak_mib") for k, v in step.get("peak_memory", {}).items() if isinstance(v, dict)})
sys.exit(0 if len(docs) == 2 else 1)
PY
exit $status
