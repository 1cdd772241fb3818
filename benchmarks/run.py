"""MTSAM benchmarks: the trainer and the platform against the reference design (see BENCHMARKS.md).

    python benchmarks/run.py --quick            # CPU-sized shapes, p1–p3 (+ peak memory)
    python benchmarks/run.py --full             # ViT-B / ViT-L shapes; on CUDA in bf16, with MFU
    python benchmarks/run.py --quick --sweep    # + p4, the quickstart sweep's efficiency (minutes)

Prints one JSON document and writes it to benchmarks/results/latest.json (``--output``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import emit, memory  # noqa: E402
from benchmarks.layer import bench_p1  # noqa: E402
from benchmarks.reference import reference_backward  # noqa: E402
from benchmarks.steps import (  # noqa: E402
    TASKS,  # noqa: E402
    build_setup,
    ours_backward,
    ours_step,
    reference_step,
    step_flops,
)
from benchmarks.timing import interleaved, paired_figure, summary  # noqa: E402
from mtsam.device import PRECISIONS, pick_device, precision_name  # noqa: E402
from mtsam.variants import VARIANTS  # noqa: E402

TORA = {"type": "tora", "ranks": [32, 32, 4], "dropout": 0.1}  # the reference run's adapter
NYU_HW = [288, 384]
MODES = {
    "tiny": {
        "layers": [{"dim": 96, "side": 16, "tasks": 3, "ranks": [8, 8, 2]}],
        "steps": [{"variant": "tiny", "image_size": 64, "batch": 1, "hw": [48, 64], "adapter": TORA}],
    },
    "quick": {
        "layers": [{"dim": 768, "side": 64, "tasks": 3, "ranks": [32, 32, 4]}],
        "steps": [{"variant": "vit_b_short", "image_size": 256, "batch": 1, "hw": NYU_HW, "adapter": TORA}],
    },
    "full": {
        "layers": [
            {"dim": 768, "side": 64, "tasks": 3, "ranks": [32, 32, 4]},
            {"dim": 1024, "side": 64, "tasks": 3, "ranks": [32, 32, 4]},
        ],
        "steps": [
            {"variant": "vit_b", "image_size": 1024, "batch": 1, "hw": NYU_HW, "adapter": TORA},
            {"variant": "vit_l", "image_size": 1024, "batch": 1, "hw": NYU_HW, "adapter": TORA},
        ],
    },
}
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "latest.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_const", dest="mode", const="quick", help="CPU shapes [default]"
    )
    size.add_argument("--full", action="store_const", dest="mode", const="full", help="ViT-B/ViT-L shapes")
    size.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="smoke-test shapes")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per variant (default 5)")
    p.add_argument("--sweep", action="store_true", help="also run p4 (the quickstart sweep; minutes)")
    p.add_argument("--sweep-samples", type=int, help="p4: number of trials (default: the quickstart's)")
    p.add_argument("--sweep-storage", help="p4: keep the sweeps' Ray/MLflow files here (default: scratch)")
    p.add_argument("--sweep-timeout", type=float, default=3600, help="p4: give up after this many seconds")
    p.add_argument(
        "--only",
        choices=["p1", "steps", "p4", "p7"],
        help="run one part: p1, steps (p2, p3, p6, p7, p8), p4 or p7 (the estimate only: seconds)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--peak-tflops", type=float, help="device bf16 peak TFLOP/s, for MFU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 autocast on CUDA, float32 on CPU (as the trainer's train.precision)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: steadier on a shared machine; see BENCHMARKS.md)",
    )
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file to write ('' = none)")
    p.add_argument("--probe-memory", help=argparse.SUPPRESS)  # internal: one memory probe
    p.add_argument("--probe-spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.mode = args.mode or "quick"
    args.sweep = args.sweep or args.only == "p4"
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.layer_shapes = MODES[args.mode]["layers"]
    args.step_shapes = MODES[args.mode]["steps"]
    return args


def shape_label(spec: dict) -> str:
    height, width = spec["hw"]
    return f"{spec['variant']}@{spec['image_size']}px B={spec['batch']} labels={height}x{width}"


def half_depth(spec: dict) -> dict:
    """The step's adapter on the last half of the encoder blocks only (p8)."""
    return {**spec["adapter"], "blocks": f"last:{VARIANTS[spec['variant']].depth // 2}"}


def bench_steps(spec: dict, args, device: torch.device) -> dict:
    """p2, p3, p6, p8 on one shape, interleaved: ToRA step; the frozen model doing the same stacked
    encoder work (p2); the reference design (p3); no adapter with the shared trunk (p6); ToRA on
    the last half of the blocks (p8)."""
    shape = (spec["variant"], spec["image_size"])
    data = (spec["batch"], spec["hw"], device)
    ours = build_setup(*shape, spec["adapter"], *data, precision=args.precision)
    frozen = build_setup(*shape, {"type": "none"}, *data, precision=args.precision, stacked=True)
    agnostic = build_setup(*shape, {"type": "none"}, *data, precision=args.precision)
    half = build_setup(*shape, half_depth(spec), *data, precision=args.precision)
    flops = {
        "ours": step_flops(ours_backward, ours),
        "frozen": step_flops(ours_backward, frozen),
        "reference": step_flops(reference_backward, ours),
        "agnostic": step_flops(ours_backward, agnostic),
        "half": step_flops(ours_backward, half),
    }
    variants = {
        "ours": lambda: ours_step(ours),
        "frozen": lambda: ours_step(frozen),
        "reference": lambda: reference_step(ours),
        "agnostic": lambda: ours_step(agnostic),
        "half": lambda: ours_step(half),
    }
    times, cpu = interleaved(variants, args.repeats, device, warmup=1)
    label = shape_label(spec)
    measured = (times, cpu if device.type == "cpu" else {})
    medians = {k: summary(v)["median"] for k, v in times.items()}
    throughput = {k: round(flops[k] / medians[k] / 1e12, 4) for k in flops}
    result = {
        "shape": label,
        "p2_step_over_frozen": paired_figure(measured, "ours", "frozen", 1.10, False, shape=label),
        "p3_step_over_reference": paired_figure(measured, "ours", "reference", 0.75, False, shape=label),
        "p6_agnostic_step_over_tora": paired_figure(measured, "agnostic", "ours", 0.45, False, shape=label),
        "p8_half_depth_over_full": paired_figure(measured, "half", "ours", 0.75, False, shape=label),
        "flop_ratios": {
            "p6_agnostic_over_tora": round(flops["agnostic"] / flops["ours"], 3),
            "p8_half_over_full": round(flops["half"] / flops["ours"], 3),
        },
        "seconds": {k: summary(v) for k, v in times.items()},
        "gflop_per_step": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "achieved_tflops": throughput,
        "mfu": {k: round(v / args.peak_tflops, 4) for k, v in throughput.items()}
        if args.peak_tflops
        else None,
        "trainable_params": {
            "ours": ours.model.parameter_summary()["trainable"],
            "frozen": frozen.model.parameter_summary()["trainable"],
            "half": half.model.parameter_summary()["trainable"],
        },
    }
    if not args.no_memory:
        designs = ["ours", "ours_ckpt", "reference", "none"]
        mem = memory.measure(designs, spec, device, args.threads, args.precision)
        peak = {k: v.get("peak_mib") for k, v in mem.items()}
        if peak.get("ours") and peak.get("reference"):
            mem["reference_over_ours"] = round(peak["reference"] / peak["ours"], 3)
        if peak.get("ours") and peak.get("ours_ckpt"):
            mem["checkpointing_over_not"] = round(peak["ours_ckpt"] / peak["ours"], 3)
        mem["estimate"] = memory.estimate_vs_measured(spec, device, args.precision, peak)
        result["peak_memory"] = mem
    return result


def bench_p7(head_step: dict) -> dict:
    """p7: estimated saved-for-backward bytes, ViT-L 1024 px T = 3 batch 1 bf16, checkpointing
    on ÷ off; plus the measured CPU (or CUDA) peaks of the first step shape."""
    from mtsam.memory_plan import GIB, estimate_memory

    args = ("vit_l", TASKS, TORA, 1024, 1, tuple(NYU_HW), "bf16")
    off, on = estimate_memory(*args), estimate_memory(*args, activation_checkpointing=True)
    out = {
        "value": round(on.saved_for_backward / off.saved_for_backward, 3),
        "target": "<= 0.15",
        "met": on.saved_for_backward / off.saved_for_backward <= 0.15,
        "shape": "vit_l@1024px B=1 T=3 bf16 (estimated, meta device)",
        "saved_for_backward_gib": {
            "off": round(off.saved_for_backward / GIB, 2),
            "on": round(on.saved_for_backward / GIB, 2),
        },
        "activations_incl_recompute_ratio": round(on.activations / off.activations, 3),
        "peak_total_gib": {"off": round(off.total / GIB, 2), "on": round(on.total / GIB, 2)},
        "peak_total_ratio": round(on.total / off.total, 3),
    }
    mem = head_step.get("peak_memory") or {}
    out["measured"] = {
        "shape": head_step.get("shape"),
        "checkpointing_over_not": mem.get("checkpointing_over_not"),
        "estimate_over_measured": (mem.get("estimate") or {}).get("estimate_over_measured"),
    }
    return out


def meta(args, device: torch.device) -> dict:
    info = {
        "mode": args.mode,
        "repeats": args.repeats,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "device_type": device.type,
        "precision": precision_name(device, args.precision),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if args.mode == "tiny":
        info["note"] = "smoke-test shapes: overhead-dominated, not comparable with the targets"
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device, "--device")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if args.probe_memory:
        spec = json.loads(args.probe_spec)
        print(json.dumps(memory.probe(args.probe_memory, spec, device, args.precision)))
        return 0
    if args.mode == "full" and device.type == "cpu":
        print("note: --full on CPU runs ViT-B/ViT-L at 1024 px: minutes per step", file=sys.stderr)
    doc = {"meta": meta(args, device)}
    layers = bench_p1(args, device) if args.only in (None, "p1") else {}
    steps = {}
    if args.only in (None, "steps"):
        steps = {shape_label(s): bench_steps(s, args, device) for s in args.step_shapes}
    head_layer = next(iter(layers.values()), {})
    head_step = next(iter(steps.values()), {})
    skipped = {"value": None, "reason": f"not run (--only {args.only})"}
    doc["p1_tora_over_frozen"] = head_layer.get("tora_over_frozen", skipped)
    doc["p1_materialised_over_factored"] = head_layer.get("materialised_over_factored", skipped)
    doc["p2_step_over_frozen"] = head_step.get("p2_step_over_frozen", skipped)
    doc["p3_step_over_reference"] = head_step.get("p3_step_over_reference", skipped)
    doc["p6_agnostic_step_over_tora"] = head_step.get("p6_agnostic_step_over_tora", skipped)
    doc["p7_memory"] = bench_p7(head_step) if args.only in (None, "steps", "p7") else skipped
    doc["p8_half_depth_over_full"] = head_step.get("p8_half_depth_over_full", skipped)
    if args.sweep:
        from benchmarks.sweep import bench_p4

        doc["p4_sweep_efficiency"] = bench_p4(args)
    else:
        doc["p4_sweep_efficiency"] = {"value": None, "target": ">= 0.9", "reason": "not run (pass --sweep)"}
    doc["peak_memory"] = {k: v.get("peak_memory") for k, v in steps.items()}
    doc["details"] = {"p1": layers, "steps": steps}
    if hasattr(os, "getloadavg"):
        doc["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    emit(doc, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
