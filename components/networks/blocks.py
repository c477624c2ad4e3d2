"""Building blocks shared by the U-Net and the U-ViT (simple diffusion Fig. 8): one ResBlock, one
attention core, one transformer block, the noise-level / class embedding, and the ``Backbone`` base that
owns the stem, the embedding, the output head and all weight initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FOURIER_FREQUENCIES = 64  # sin and cos of lambda at 64 frequencies -> 128 features
FOURIER_MIN, FOURIER_MAX = 1 / 32, 32.0  # angular frequencies per unit of logSNR, geometric


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of 32 that divides ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def heads_for(channels: int, head_channels: int) -> int:
    """About channels / head_channels heads: the largest divisor of ``channels`` not above it (>= 1)."""
    heads = max(1, channels // head_channels)
    while channels % heads:
        heads -= 1
    return heads


class Embedding(nn.Module):
    """Conditioning vector [B, E] from logSNR (Fourier features + MLP) and optional class labels.

    Labels are learned embeddings with one extra null label (index ``num_classes``) for classifier-free
    guidance; ``labels=None`` means every example is null. With ``num_classes = 0`` the network is
    unconditional and labels are ignored.
    """

    def __init__(self, emb_channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        # computed on the CPU also under ``torch.device("meta")`` (parameter counts): exp on meta tensors goes
        # through a Python decomposition that imports torch._dynamo, a second of every command's start-up
        grid = torch.linspace(math.log(FOURIER_MIN), math.log(FOURIER_MAX), FOURIER_FREQUENCIES, device="cpu")
        freqs = torch.exp(grid)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * FOURIER_FREQUENCIES, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )
        self.labels = nn.Embedding(num_classes + 1, emb_channels) if num_classes > 0 else None

    def forward(self, logsnr: Tensor, labels: Tensor | None = None) -> Tensor:
        angles = logsnr.float()[:, None] * self.freqs.float()  # [B, F]
        emb = self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))  # [B, E]
        if self.labels is not None:
            if labels is None:
                labels = torch.full_like(logsnr, self.num_classes, dtype=torch.long)
            emb = emb + self.labels(labels.long())
        return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale/shift from the embedding, GroupNorm-SiLU-dropout-conv, residual.

    ``resolution`` is the side of its feature maps (used for the dropout placement)."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.modulation = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # [B, C_out, H, W]
        scale, shift = self.modulation(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention on tokens [B, N, C] through ``F.scaled_dot_product_attention``."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # [B, h, N, d]
        y = F.scaled_dot_product_attention(q, k, v)  # [B, h, N, d]
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class AttentionBlock(nn.Module):
    """Residual self-attention over the pixels of a feature map [B, C, H, W] (U-Net at 16 x 16)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.attention = SelfAttention(channels, heads)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        return x + self.attention(tokens).transpose(1, 2).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (U-ViT, simple diffusion Fig. 8): self-attention and MLP, each with a
    residual connection, LayerNorms modulated by scale/shift from the embedding; dropout on both."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, emb_channels: int, dropout: float, resolution: int):
        super().__init__()
        self.resolution = resolution
        hidden = int(mlp_ratio * width)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.attention = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp_in = nn.Linear(width, hidden)
        self.mlp_out = nn.Linear(hidden, width)
        self.modulation = nn.Linear(emb_channels, 4 * width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        s1, b1, s2, b2 = self.modulation(F.silu(emb))[:, None].chunk(4, dim=-1)  # [B, 1, W] each
        x = x + self.dropout(self.attention(self.norm1(x) * (1 + s1) + b1))  # [B, N, W]
        h = F.gelu(self.mlp_in(self.norm2(x) * (1 + s2) + b2))
        return x + self.mlp_out(self.dropout(h))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution to the finer level's width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Backbone(nn.Module):
    """Stem encode -> ``body`` on the grid -> output head -> stem decode; ``forward(z, logsnr, labels)``.

    Subclasses build ``conv_in``, their body, and call ``make_head(channels)`` then
    ``initialize_weights()`` at the end of ``__init__``.
    """

    def __init__(self, stem: nn.Module, stem_channels: int, emb_channels: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.stem_channels = stem_channels
        self.embedding = Embedding(emb_channels, num_classes)

    def make_head(self, channels: int) -> None:
        self.out_norm = group_norm(channels)
        self.out_conv = nn.Conv2d(channels, self.stem_channels, 3, padding=1)  # zero-initialised

    def body(self, h: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, z: Tensor, logsnr: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.embedding(logsnr, labels)  # [B, E]
        h = self.stem.encode(z)  # [B, C', H/f, W/f]
        h = self.body(h, emb)  # [B, width, H/f, W/f]
        h = self.out_conv(F.silu(self.out_norm(h)))  # [B, C', H/f, W/f]
        return self.stem.decode(h)  # [B, C, H, W]

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """All initialisation in one place (init is an ablation confound; STYLE.md): Xavier-uniform
        weights and zero biases for linear and conv layers (stem included), N(0, 0.02) for embeddings
        and position embeddings, and a zero output layer so the network predicts 0 at init. Nothing to do on
        the meta device (shapes only; its normal_ would import torch._dynamo, a second of start-up)."""
        if any(p.is_meta for p in self.parameters()):
            return
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.GroupNorm | nn.LayerNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        pos = getattr(self, "pos_emb", None)
        if pos is not None:
            nn.init.normal_(pos, std=0.02)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
