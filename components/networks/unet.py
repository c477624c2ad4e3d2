"""U-Net after simple diffusion Fig. 8: per level ResBlocks, average-pool downsampling, self-attention
at 16 x 16, a middle block ResBlock-Attention-ResBlock at the lowest level, nearest upsampling + conv,
and U-Net skip connections from every down ResBlock to its mirror on the way up.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.networks.blocks import AttentionBlock, Backbone, ResBlock, Upsample, heads_for
from components.networks.presets import UNET_PRESETS
from components.networks.spec import DropoutPlacement, NetworkSpec, halvings, last

Positive = Annotated[int, Field(gt=0)]


class ResAttention(nn.Module):
    """A ResBlock, followed by self-attention when its level has attention."""

    def __init__(self, res: ResBlock, attention: AttentionBlock | None):
        super().__init__()
        self.res = res
        self.attention = attention

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return self.attention(x) if self.attention is not None else x


class UNetModel(Backbone):
    """The U-Net body on the stem's grid. ``sides``, ``widths``, ``blocks``: one entry per level, finest
    first (sides halve from level to level)."""

    def __init__(
        self,
        *,
        stem: nn.Module,
        stem_channels: int,
        sides: list[int],
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        attn_resolutions: tuple[int, ...],
        head_channels: int,
        emb_channels: int,
        num_classes: int,
        dropout: DropoutPlacement,
    ):
        super().__init__(stem, stem_channels, emb_channels, num_classes)

        def unit(c_in: int, c_out: int, side: int) -> ResAttention:
            res = ResBlock(c_in, c_out, emb_channels, dropout.rate_at(side), side)
            return ResAttention(
                res, AttentionBlock(c_out, heads_for(c_out, head_channels)) if side in attn_resolutions else None
            )

        ch = widths[0]
        self.conv_in = nn.Conv2d(stem_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips = []
        for side, width, n in zip(sides, widths, blocks, strict=True):
            level = nn.ModuleList()
            for _ in range(n):
                level.append(unit(ch, width, side))
                ch = width
                skips.append(ch)
            self.down.append(level)
        side = sides[-1]
        self.middle = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_channels, dropout.rate_at(side), side),
                AttentionBlock(ch, heads_for(ch, head_channels)),
                ResBlock(ch, ch, emb_channels, dropout.rate_at(side), side),
            ]
        )
        self.up = nn.ModuleList()  # coarsest level first
        self.upsample = nn.ModuleList()  # before every up level but the coarsest
        for i, (side, width, n) in reversed(list(enumerate(zip(sides, widths, blocks, strict=True)))):
            if i < len(sides) - 1:
                self.upsample.append(Upsample(ch, width))
                ch = width
            level = nn.ModuleList()
            for _ in range(n):
                level.append(unit(ch + skips.pop(), width, side))
                ch = width
            self.up.append(level)
        self.make_head(ch)
        self.initialize_weights()

    def body(self, h: Tensor, emb: Tensor) -> Tensor:
        h = self.conv_in(h)  # [B, widths[0], g, g]
        skips = []
        for i, level in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for unit in level:
                h = unit(h, emb)
                skips.append(h)
        res1, attention, res2 = self.middle
        h = res2(attention(res1(h, emb)), emb)  # [B, widths[-1], g_min, g_min]
        for i, level in enumerate(self.up):
            if i > 0:
                h = self.upsample[i - 1](h)
            for unit in level:
                h = unit(torch.cat([h, skips.pop()], dim=1), emb)
        return h  # [B, widths[0], g, g]


class UNet(NetworkSpec):
    """U-Net spec (simple diffusion Fig. 8). One level per side from the grid (resolution / stem factor)
    down to ``bottom_resolution``; per-level lists are finest first and the last entries are used."""

    PRESETS = UNET_PRESETS

    widths: tuple[Positive, ...] | None = None  # channels per level, finest first
    blocks: tuple[Positive, ...] | None = None  # ResBlocks per level (down; the same up)
    bottom_resolution: Positive | None = None  # side of the lowest level and middle block
    attn_resolutions: tuple[Positive, ...] | None = None  # sides with self-attention after ResBlocks
    head_channels: Positive | None = None  # channels per attention head
    emb_channels: Positive | None = None  # width of the conditioning vector

    def sides(self, config: dict) -> list[int]:
        """Feature-map side of each level, finest first."""
        return halvings(self.grid, config["bottom_resolution"])

    def core_width(self) -> int:
        return int(self.config()["widths"][-1])

    def check(self, config: dict) -> None:
        if len(config["widths"]) != len(config["blocks"]):
            raise ValueError("blocks: needs one entry per entry of widths")
        n = len(self.sides(config))
        what = f"grid {self.grid} down to {config['bottom_resolution']}"
        last(config["widths"], n, "widths", what)

    def instantiate(self) -> UNetModel:
        config = self.config()
        sides = self.sides(config)
        n = len(sides)
        stem = self.stem_spec
        return UNetModel(
            stem=stem.make(self.in_channels),
            stem_channels=stem.out_channels(self.in_channels),
            sides=sides,
            widths=last(config["widths"], n, "widths", ""),
            blocks=last(config["blocks"], n, "blocks", ""),
            attn_resolutions=tuple(config["attn_resolutions"]),
            head_channels=config["head_channels"],
            emb_channels=config["emb_channels"],
            num_classes=self.num_classes,
            dropout=self.dropout,
        )
