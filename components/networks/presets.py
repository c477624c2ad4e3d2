"""Network presets as data: preset name -> {key: value}. Every key is also an optional override on the
network's spec (``None`` = take the preset's value).

Per-level lists are written finest level first, for the largest supported grid (512 / stem factor);
a network at a smaller grid uses their *last* entries, so one preset serves every resolution and the
capacity stays at 16 x 16 (simple diffusion Sec. 4, "scale at 16 x 16"). The U-Net has one level per
resolution from the grid down to ``bottom_resolution``; the U-ViT has one convolutional level per
resolution above ``transformer_resolution``.

``tiny`` is for tests, ``small`` for CPU studies at 64 px, ``base`` / ``large`` are paper-like GPU sizes
(the same shape as the paper's Fig. 8 models, not their exact widths; see docs/networks.md for sizes).
"""

from __future__ import annotations

from typing import Any

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "widths": (16, 16, 16, 16, 32, 32),  # channels per level, finest first (512 .. 16)
        "blocks": (1, 1, 1, 1, 1, 1),  # ResBlocks per level on the way down (and up)
        "bottom_resolution": 16,  # lowest level (and the middle block), feature-map side
        "attn_resolutions": (16,),  # self-attention after the ResBlocks at these sides
        "head_channels": 16,  # channels per attention head
        "emb_channels": 64,  # width of the logSNR / class embedding
    },
    "small": {
        "widths": (16, 16, 16, 16, 32, 64),
        "blocks": (1, 1, 1, 1, 1, 2),
        "bottom_resolution": 16,
        "attn_resolutions": (16,),
        "head_channels": 32,
        "emb_channels": 128,
    },
    "base": {
        "widths": (64, 128, 128, 256, 512, 768),
        "blocks": (1, 1, 2, 2, 2, 8),
        "bottom_resolution": 16,
        "attn_resolutions": (16,),
        "head_channels": 64,
        "emb_channels": 768,
    },
    "large": {
        "widths": (128, 128, 256, 512, 1024, 1536),
        "blocks": (2, 2, 2, 2, 2, 12),
        "bottom_resolution": 16,
        "attn_resolutions": (16,),
        "head_channels": 128,
        "emb_channels": 1536,
    },
}

UVIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "widths": (16, 16, 16, 16, 32),  # conv levels above the transformer, finest first (512 .. 32)
        "blocks": (1, 1, 1, 1, 1),  # ResBlocks per conv level on the way down (and up)
        "transformer_resolution": 16,  # feature-map side of the transformer stack
        "depth": 2,  # transformer blocks
        "width": 64,  # transformer channels
        "heads": 2,
        "mlp_ratio": 2.0,  # MLP hidden = mlp_ratio * width
        "emb_channels": 64,
    },
    "small": {
        "widths": (16, 16, 16, 16, 32),
        "blocks": (1, 1, 1, 1, 1),
        "transformer_resolution": 16,
        "depth": 4,
        "width": 96,
        "heads": 3,
        "mlp_ratio": 2.0,
        "emb_channels": 128,
    },
    "base": {
        "widths": (64, 128, 128, 256, 512),
        "blocks": (1, 1, 2, 2, 2),
        "transformer_resolution": 16,
        "depth": 12,
        "width": 768,
        "heads": 12,
        "mlp_ratio": 4.0,
        "emb_channels": 768,
    },
    "large": {
        "widths": (128, 128, 256, 512, 768),
        "blocks": (2, 2, 2, 2, 2),
        "transformer_resolution": 16,
        "depth": 28,
        "width": 1536,
        "heads": 24,
        "mlp_ratio": 4.0,
        "emb_channels": 1536,
    },
}
