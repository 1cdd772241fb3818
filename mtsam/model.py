"""MTSAM: SAM's image encoder (with task-aware adapters), per-channel no-mask embeddings and one
mask decoder per task. The prompt encoder is gone in function: only its random-Fourier image
positional encoding and its no-mask vector survive.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn

from .adapters import AdaptedLinear, TaskRouting, is_shared_adapter_param
from .encoder import encoder_layout, first_adapted_block, run_encoder
from .tasks import apply_head
from .variants import PIXEL_MEAN, PIXEL_STD

# Head applied to each task's raw decoder output, by task name; unknown tasks get "identity".
DEFAULT_HEADS = {"semantic": "log_softmax", "depth": "identity", "normal": "l2_normalize"}


def decode_channels(decoder: MaskDecoder, emb: torch.Tensor, pe: torch.Tensor, dense: torch.Tensor):
    """Run a SAM mask decoder once per (image, output channel), batched, keeping mask token 0.

    emb: (B, D, h, w) image embeddings; pe: (1, D, h, w); dense: (C, D) no-mask rows.
    Returns low-res maps (B, C, 4h, 4w). Equivalent to ``decoder.predict_masks`` per image with an
    empty sparse prompt (C, 0, D) and dense prompt ``dense`` broadcast over the grid.
    """
    b, d, h, w = emb.shape
    c = dense.shape[0]
    src = (emb.unsqueeze(1) + dense[None, :, :, None, None]).reshape(b * c, d, h, w)
    pos = pe.expand(b * c, -1, -1, -1)
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = tokens.unsqueeze(0).expand(b * c, -1, -1)
    hs, src = decoder.transformer(src, pos, tokens)
    src = src.transpose(1, 2).reshape(b * c, d, h, w)
    upscaled = decoder.output_upscaling(src)  # (B·C, D/8, 4h, 4w)
    hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1, :])  # (B·C, D/8)
    masks = (hyper.unsqueeze(1) @ upscaled.flatten(2)).squeeze(1)
    return masks.view(b, c, *upscaled.shape[-2:])


class MTSAM(nn.Module):
    """Multi-task SAM.

    Args:
        image_encoder: SAM ``ImageEncoderViT`` (adapters already injected, if any).
        pe_layer: SAM's ``PositionEmbeddingRandom`` for the image grid.
        no_mask_embed: (D,) SAM's no-mask vector; copied into one row per output channel.
        no_mask_jitter: std of seeded Gaussian noise added to each row, relative to the vector's
            std (0 = the paper: all rows equal); ``jitter_seed`` seeds it.
        decoder: SAM ``MaskDecoder``; deep-copied once per task.
        tasks: task name → output channels, in output order.
        heads: task name → head ("log_softmax" | "identity" | "l2_normalize").
        normalize: "sam" (SAM's pixel mean/std on the 0–255 scale) or "none" (feed [0, 1]).
        routing: the ``TaskRouting`` the encoder's adapters read.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        pe_layer: PositionEmbeddingRandom,
        no_mask_embed: torch.Tensor,
        decoder: MaskDecoder,
        tasks: Mapping[str, int],
        heads: Mapping[str, str] | None = None,
        normalize: str = "sam",
        routing: TaskRouting | None = None,
        freeze_prefix_norms: bool = False,
        no_mask_jitter: float = 0.0,
        jitter_seed: int = 0,
        train_neck_norms: bool = True,
    ) -> None:
        super().__init__()
        if normalize not in ("sam", "none"):
            raise ValueError(f"normalize must be 'sam' or 'none', got {normalize!r}")
        self.image_encoder = image_encoder
        self.pe_layer = pe_layer
        self.task_names = list(tasks)
        self.channels = {t: int(c) for t, c in tasks.items()}
        self.heads = {t: (heads or {}).get(t, DEFAULT_HEADS.get(t, "identity")) for t in self.task_names}
        offsets, start = {}, 0
        for t in self.task_names:
            offsets[t] = (start, start + self.channels[t])
            start += self.channels[t]
        self.row_slices = offsets
        # One no-mask row per output channel of all tasks, each initialised from SAM's vector.
        rows = no_mask_embed.detach().reshape(1, -1).repeat(start, 1).clone()
        if no_mask_jitter > 0:
            # Not in the paper (off by default): equal rows make a task's channels start identical
            # (normals = ±(1,1,1)/√3, one class everywhere) and a short run never separates them.
            gen = torch.Generator().manual_seed(jitter_seed)
            noise = torch.randn(rows.shape, generator=gen, dtype=rows.dtype)
            rows += no_mask_jitter * no_mask_embed.detach().float().std() * noise
        self.no_mask = nn.Parameter(rows)
        self.decoders = nn.ModuleDict({t: copy.deepcopy(decoder) for t in self.task_names})
        self.normalize = normalize
        self.routing = routing or TaskRouting()
        self.freeze_prefix_norms = freeze_prefix_norms
        self.train_neck_norms = train_neck_norms
        self.activation_checkpointing = False
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.build_config: dict = {}  # filled by build_mtsam; makes adapter checkpoints self-describing
        self.mark_trainable()

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    # ----------------------------------------------------------------------------- parameters
    def mark_trainable(self) -> None:
        """Adapter factors, encoder norms, the no-mask table and task decoders train; the rest is frozen.

        With ``freeze_prefix_norms`` the norms of the blocks before the first adapted block (all
        blocks without adapters) stay frozen too, so that prefix runs without autograd. Without
        ``train_neck_norms`` the neck's two LayerNorm2d stay frozen: the reference trains encoder
        parameters whose *name* contains "norm", and those are named ``neck.1`` / ``neck.3``.
        """
        for p in self.parameters():
            p.requires_grad_(False)
        for module in self.image_encoder.modules():
            if isinstance(module, AdaptedLinear):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)
            elif "LayerNorm" in type(module).__name__:
                for p in module.parameters():
                    p.requires_grad_(True)
        if self.freeze_prefix_norms:
            for block in self.image_encoder.blocks[: first_adapted_block(self.image_encoder)]:
                for p in block.parameters():
                    p.requires_grad_(False)
        neck = getattr(self.image_encoder, "neck", None)
        if not self.train_neck_norms and neck is not None:
            for module in neck.modules():
                if "LayerNorm" in type(module).__name__:
                    module.requires_grad_(False)
        self.no_mask.requires_grad_(True)
        for p in self.decoders.parameters():
            p.requires_grad_(True)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {
            "adapter": [],
            "encoder_norms": [],
            "no_mask": [self.no_mask],
        }
        for module in self.image_encoder.modules():
            if isinstance(module, AdaptedLinear):
                groups["adapter"] += list(module.parameters(recurse=False))
            elif "LayerNorm" in type(module).__name__:
                groups["encoder_norms"] += [p for p in module.parameters() if p.requires_grad]
        groups["decoders"] = list(self.decoders.parameters())
        return groups

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters every task's loss reaches (for gradient-based task weighting)."""
        shared = []
        for module in self.image_encoder.modules():
            if isinstance(module, AdaptedLinear):
                shared += [
                    p for n, p in module.named_parameters(recurse=False) if is_shared_adapter_param(n, module)
                ]
            elif "LayerNorm" in type(module).__name__:
                shared += list(module.parameters())
        return [p for p in shared if p.requires_grad]

    def parameter_summary(self) -> dict[str, int]:
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        summary = {
            "total": count(self.parameters()),
            "trainable": count(p for p in self.parameters() if p.requires_grad),
        }
        summary.update({k: count(v) for k, v in self.parameter_groups().items()})
        summary["frozen"] = summary["total"] - summary["trainable"]
        return summary

    # ----------------------------------------------------------------------------- forward
    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) in [0, 1] → (B, 3, S, S): longest side resized to S, normalised, padded."""
        h, w = images.shape[-2:]
        scale = self.image_size / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        x = images
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
        if self.normalize == "sam":
            x = (x * 255.0 - self.pixel_mean) / self.pixel_std
        x = F.pad(x, (0, self.image_size - nw, 0, self.image_size - nh))
        return x, (nh, nw)

    def postprocess(self, masks: torch.Tensor, resized: tuple[int, int], out_hw: tuple[int, int]):
        """Low-res maps → padded input size, crop the padding, resize to the label resolution."""
        x = F.interpolate(
            masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        x = x[..., : resized[0], : resized[1]]
        return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)

    def set_activation_checkpointing(self, enabled: bool = True) -> MTSAM:
        """Recompute each encoder block in backward instead of keeping its activations
        (``torch.utils.checkpoint``, non-reentrant): same losses and gradients, far less memory."""
        self.activation_checkpointing = bool(enabled)
        return self

    def encoder_layout(self) -> dict:
        """depth, adapted_blocks, branch_block (None: task-agnostic), graph_free_blocks."""
        return encoder_layout(self.image_encoder)

    def encode(self, images: torch.Tensor, task_index: torch.Tensor | int) -> torch.Tensor:
        """Encoder pass with the adapters routed by ``task_index`` (int or per-sample tensor)."""
        return run_encoder(
            self.image_encoder, images, self.routing, task_index, 1, self.activation_checkpointing
        )[0]

    def encode_tasks(self, images: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        """Preprocessed images (B, 3, S, S) → one embedding per task, (T, B, C, h, w).

        Blocks before the first task-specific adapter run once per image; from there the tokens
        are stacked task-major ([task0: img0..imgB-1, task1: img0..], index = task position).
        """
        ids = torch.tensor([self.task_names.index(t) for t in tasks], device=images.device)
        index = ids.repeat_interleave(images.shape[0])  # task-major, matches the repeat in run_encoder
        return run_encoder(
            self.image_encoder, images, self.routing, index, len(tasks), self.activation_checkpointing
        )

    def decode(self, task: str, emb: torch.Tensor, resized, out_hw) -> torch.Tensor:
        start, stop = self.row_slices[task]
        pe = self.pe_layer(emb.shape[-2:]).unsqueeze(0).to(emb.dtype)
        masks = decode_channels(self.decoders[task], emb, pe, self.no_mask[start:stop].to(emb.dtype))
        return apply_head(self.heads[task], self.postprocess(masks.float(), resized, out_hw))

    def forward(self, images: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        """images: (B, 3, H, W) floats in [0, 1] → {task: (B, C_t, H, W)} with heads applied.

        All requested tasks share ONE encoder pass (``encode_tasks``): a shared trunk up to the
        first task-specific block, then the tasks stacked task-major and split back the same way.
        """
        tasks = tasks or self.task_names
        hw = tuple(images.shape[-2:])
        x, resized = self.preprocess(images)
        emb = self.encode_tasks(x, tasks)
        return {t: self.decode(t, emb[i], resized, hw) for i, t in enumerate(tasks)}

    def forward_task(self, images: torch.Tensor, task: str) -> torch.Tensor:
        """Single-task forward (baselines, inference): (B, 3, H, W) → (B, C_t, H, W)."""
        x, resized = self.preprocess(images)
        emb = self.encode(x, self.task_names.index(task))
        return self.decode(task, emb, resized, tuple(images.shape[-2:]))
