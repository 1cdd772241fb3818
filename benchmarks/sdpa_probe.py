"""Would ``F.scaled_dot_product_attention`` help SAM's attention here? (issue 18, not adopted)

SAM's ``Attention`` builds the attention map explicitly and adds its decomposed relative-position
term. The same computation through SDPA passes that term as an additive float mask. This probe
checks that outputs and input gradients agree and compares, per block shape, the bytes saved for
backward (``saved_tensors_hooks``) and forward + backward time, interleaved:

    python benchmarks/sdpa_probe.py [--repeats 4]

On the CPU a mask that needs a gradient (it depends on q) sends SDPA to its math kernel, which
saves what the explicit version saves; see BENCHMARKS.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos

SHAPES = [  # (dim, heads, side, batch): a ViT-B 14×14 window ×48 (T=3, 1024 px would be ×75), a global 64×64
    (768, 12, 14, 48),
    (768, 12, 64, 1),
]


def sdpa_forward(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = x.shape
    qkv = attn.qkv(x).reshape(b, h * w, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, C)
    r_q = q.reshape(b, attn.num_heads, h, w, -1)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, attn.rel_pos_h))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, attn.rel_pos_w))
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, attn.num_heads, h * w, h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # default scale = head_dim^-0.5
    return attn.proj(out.view(b, attn.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1))


def saved_bytes(fn) -> tuple[torch.Tensor, int]:
    seen, total = set(), [0]

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


def probe(dim: int, heads: int, side: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    attn = Attention(dim, heads, use_rel_pos=True, input_size=(side, side))
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    x = torch.randn(batch, side, side, dim, requires_grad=True)
    g = torch.randn(batch, side, side, dim)
    fns = {"explicit": lambda: attn(x), "sdpa": lambda: sdpa_forward(attn, x)}
    res, times = {}, {k: [] for k in fns}
    for name, fn in fns.items():
        out, saved = saved_bytes(fn)
        out.backward(g)
        res[name] = (out.detach(), x.grad.clone(), saved)
        x.grad = None
    for r in range(repeats):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            start = time.perf_counter()
            fns[name]().backward(g)
            times[name].append(time.perf_counter() - start)
            x.grad = None
    ratios = sorted(a / b for a, b in zip(times["sdpa"], times["explicit"]))
    return {
        "shape": f"dim {dim}, {heads} heads, {side}x{side} tokens, batch {batch}",
        "max_abs_diff": {"out": float((res["sdpa"][0] - res["explicit"][0]).abs().max()),
                         "grad": float((res["sdpa"][1] - res["explicit"][1]).abs().max())},
        "saved_mib": {k: round(v[2] / 2**20, 1) for k, v in res.items()},
        "sdpa_over_explicit_time": {"median": round(ratios[len(ratios) // 2], 3),
                                    "min": round(ratios[0], 3), "max": round(ratios[-1], 3)},
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/sdpa_probe.py", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps([probe(*s, args.repeats) for s in SHAPES], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
