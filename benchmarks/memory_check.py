"""Is ``mtsam.memory_plan``'s estimate within ±20 % of the measured peak? (issue 18)

    python benchmarks/memory_check.py --mode full    # on a GPU: ViT-B / ViT-L 1024 px in bf16
    python benchmarks/memory_check.py --mode quick   # on this machine: vit_b_short 256 px, float32

Each shape's step runs in a fresh subprocess (``benchmarks/memory.py``: on CUDA the growth of
``torch.cuda.max_memory_allocated`` over two training steps, on the CPU the RSS high-water mark),
with and without activation checkpointing, next to the estimate of what one step adds over the
loaded model. Prints one JSON document; exit status 1 when a ratio is outside 0.8–1.2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TORA = {"type": "tora", "ranks": [32, 32, 4], "dropout": 0.1}
SHAPES = {
    "tiny": [{"variant": "tiny", "image_size": 64, "batch": 1, "hw": [48, 64], "adapter": TORA}],
    "quick": [{"variant": "vit_b_short", "image_size": 256, "batch": 1, "hw": [288, 384], "adapter": TORA}],
    "full": [
        {"variant": "vit_b", "image_size": 1024, "batch": 1, "hw": [288, 384], "adapter": TORA},
        {"variant": "vit_l", "image_size": 1024, "batch": 1, "hw": [288, 384], "adapter": TORA},
    ],
}


def check(mode: str, device_name: str, precision: str, threads: int = 1) -> dict:
    import torch

    from benchmarks import memory
    from mtsam.device import pick_device

    device = pick_device(device_name, "--device")
    doc: dict = {"mode": mode, "device": device.type, "shapes": {}}
    ok = True
    for spec in SHAPES[mode]:
        label = f"{spec['variant']}@{spec['image_size']}px B={spec['batch']}"
        measured = memory.measure(["ours", "ours_ckpt"], spec, device, threads, precision)
        peak = {k: v.get("peak_mib") for k, v in measured.items()}
        result = memory.estimate_vs_measured(spec, device, precision, peak)
        result["measured_mib"] = peak
        result["errors"] = {k: v["error"] for k, v in measured.items() if "error" in v}
        doc["shapes"][label] = result
        # a tiny model's growth is dominated by allocator noise: reported, not judged
        ok = ok and (mode == "tiny" or result["met"])
    doc["met"] = ok
    if device.type == "cuda":
        doc["gpu"] = torch.cuda.get_device_name(device)
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/memory_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=sorted(SHAPES), default="quick")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--output", default="", help="also write the JSON here")
    args = p.parse_args(argv)
    doc = check(args.mode, args.device, args.precision)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if doc["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
