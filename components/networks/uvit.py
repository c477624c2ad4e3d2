"""U-ViT after simple diffusion Fig. 8: the U-Net's convolutional levels above the transformer
resolution (ResBlocks with U-Net skips, average-pool down, nearest + conv up), and at the transformer
resolution (default 16 x 16) a stack of transformer blocks joined by residual connections only.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.networks.blocks import Backbone, ResBlock, TransformerBlock, Upsample
from components.networks.presets import UVIT_PRESETS
from components.networks.spec import DropoutPlacement, NetworkSpec, halvings, last

Positive = Annotated[int, Field(gt=0)]


class UViTModel(Backbone):
    """The U-ViT body. ``sides``: conv levels above the transformer, finest first (may be empty when the
    stem's grid is already at or below the transformer resolution); ``tokens_side``: the transformer's
    feature-map side."""

    def __init__(
        self,
        *,
        stem: nn.Module,
        stem_channels: int,
        sides: list[int],
        tokens_side: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: float,
        emb_channels: int,
        num_classes: int,
        dropout: DropoutPlacement,
    ):
        super().__init__(stem, stem_channels, emb_channels, num_classes)
        ch = widths[0] if sides else width
        self.conv_in = nn.Conv2d(stem_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips = []
        for side, w, n in zip(sides, widths, blocks, strict=True):
            level = nn.ModuleList()
            for _ in range(n):
                level.append(ResBlock(ch, w, emb_channels, dropout.rate_at(side), side))
                ch = w
                skips.append(ch)
            self.down.append(level)
        self.proj_in = nn.Linear(ch, width)
        self.pos_emb = nn.Parameter(torch.zeros(1, tokens_side * tokens_side, width))  # [1, N, W]
        rate = dropout.rate_at(tokens_side)
        self.transformer = nn.ModuleList(
            [TransformerBlock(width, heads, mlp_ratio, emb_channels, rate, tokens_side) for _ in range(depth)]
        )
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, ch)
        self.up = nn.ModuleList()  # coarsest conv level first
        self.upsample = nn.ModuleList()  # one per conv level, from the level below it
        for side, w, n in reversed(list(zip(sides, widths, blocks, strict=True))):
            self.upsample.append(Upsample(ch, w))
            ch = w
            level = nn.ModuleList()
            for _ in range(n):
                level.append(ResBlock(ch + skips.pop(), w, emb_channels, dropout.rate_at(side), side))
                ch = w
            self.up.append(level)
        self.make_head(ch)
        self.initialize_weights()

    def body(self, h: Tensor, emb: Tensor) -> Tensor:
        h = self.conv_in(h)  # [B, C0, g, g]
        skips = []
        for level in self.down:
            for block in level:
                h = block(h, emb)
                skips.append(h)
            h = F.avg_pool2d(h, 2)
        b, c, s, _ = h.shape  # s = tokens_side
        x = self.proj_in(h.flatten(2).transpose(1, 2)) + self.pos_emb  # [B, N, W]
        for block in self.transformer:
            x = block(x, emb)
        h = self.proj_out(self.norm_out(x)).transpose(1, 2).reshape(b, c, s, s)  # [B, C, s, s]
        for upsample, level in zip(self.upsample, self.up, strict=True):
            h = upsample(h)
            for block in level:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return h  # [B, C0, g, g]


class UViT(NetworkSpec):
    """U-ViT spec (simple diffusion Fig. 8). Conv levels from the grid (resolution / stem factor) down to
    above ``transformer_resolution``; per-level lists are finest first and the last entries are used."""

    PRESETS = UVIT_PRESETS

    widths: tuple[Positive, ...] | None = None  # channels per conv level, finest first
    blocks: tuple[Positive, ...] | None = None  # ResBlocks per conv level (down; the same up)
    transformer_resolution: Positive | None = None  # side of the transformer's token grid
    depth: Positive | None = None  # number of transformer blocks
    width: Positive | None = None  # transformer channels
    heads: Positive | None = None  # attention heads
    mlp_ratio: float | None = Field(None, gt=0)  # MLP hidden = mlp_ratio * width
    emb_channels: Positive | None = None  # width of the conditioning vector

    def sides(self, config: dict) -> tuple[list[int], int]:
        """(conv level sides finest first, token grid side)."""
        all_sides = halvings(self.grid, config["transformer_resolution"])
        return all_sides[:-1], all_sides[-1]

    def core_width(self) -> int:
        return int(self.config()["width"])

    def check(self, config: dict) -> None:
        if len(config["widths"]) != len(config["blocks"]):
            raise ValueError("blocks: needs one entry per entry of widths")
        if config["width"] % config["heads"]:
            raise ValueError(f"heads: width {config['width']} does not split into {config['heads']} heads")
        sides, tokens = self.sides(config)
        last(config["widths"], len(sides), "widths", f"grid {self.grid} down to {tokens}")

    def instantiate(self) -> UViTModel:
        config = self.config()
        sides, tokens = self.sides(config)
        n = len(sides)
        stem = self.stem_spec
        return UViTModel(
            stem=stem.make(self.in_channels),
            stem_channels=stem.out_channels(self.in_channels),
            sides=sides,
            tokens_side=tokens,
            widths=last(config["widths"], n, "widths", ""),
            blocks=last(config["blocks"], n, "blocks", ""),
            depth=config["depth"],
            width=config["width"],
            heads=config["heads"],
            mlp_ratio=config["mlp_ratio"],
            emb_channels=config["emb_channels"],
            num_classes=self.num_classes,
            dropout=self.dropout,
        )
