"""The GPU check's summary (benchmarks/gpu_check.sh): headline figures of its JSON files.

    python benchmarks/gpu_summary.py full_p1.json full_steps.json full_memory.json

Missing files are reported; exit status 1 unless all three exist and the memory check is met.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADLINES = (
    "p1_tora_over_frozen",
    "p1_materialised_over_factored",
    "p2_step_over_frozen",
    "p3_step_over_reference",
    "p6_agnostic_step_over_tora",
    "p7_memory",
    "p8_half_depth_over_full",
)


def summarize(paths: list[str]) -> tuple[list[str], bool]:
    lines, ok = [], True
    for path in paths:
        if not Path(path).is_file():
            lines.append(f"missing: {path}")
            ok = False
            continue
        doc = json.loads(Path(path).read_text())
        if "shapes" in doc:  # memory_check.py
            for shape, r in doc["shapes"].items():
                lines.append(
                    f"memory {shape}: estimate ÷ measured {r.get('ours_estimate_over_measured')} "
                    f"(checkpointing {r.get('ours_ckpt_estimate_over_measured')}), measured MiB "
                    f"{r.get('measured_mib')}, target {r.get('target')} met={r.get('met')}"
                )
            ok = ok and bool(doc.get("met"))
            continue
        lines.append(json.dumps(doc["meta"]))
        for key in HEADLINES:
            fig = doc.get(key) or {}
            if fig.get("value") is not None:
                lines.append(
                    f"{key}: {fig['value']} ({fig.get('min')}-{fig.get('max')}) "
                    f"target {fig.get('target')} met={fig.get('met')}"
                )
        for shape, layer in doc["details"]["p1"].items():
            lines.append(f"{shape} seconds { ({k: v['median'] for k, v in layer['seconds'].items()}) }")
        for shape, step in doc["details"]["steps"].items():
            lines.append(f"{shape} seconds { ({k: v['median'] for k, v in step['seconds'].items()}) }")
            lines.append(f"  tflops {step['achieved_tflops']} mfu {step['mfu']}")
            p6, p8 = step["p6_agnostic_step_over_tora"], step["p8_half_depth_over_full"]
            lines.append(f"  p6 {p6['value']} p8 {p8['value']}")
    return lines, ok


def main(argv=None) -> int:
    lines, ok = summarize(list(argv if argv is not None else sys.argv[1:]))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
