"""A stand-in for ``inception-2015-12-05.pt``: same TorchScript interface, random weights. Tests/benches only.

clean-fid's ``InceptionV3W`` calls the file in two ways, and the stand-in answers both:
``base.layers(x)`` with x normalised to [-1, 1] at 299 x 299 (``clean`` mode), and
``base(x, return_features=True)`` with x in [0, 255] at any size (``legacy_tensorflow`` mode: the network
normalises and resizes itself). Both return features [B, 2048]. Its features are not Inception
features: FIDs computed with it are only comparable with each other (its class name is recorded as the
extractor name, so such values are recognisable in the database).
"""

from __future__ import annotations

import pathlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn


class StandInLayers(nn.Module):
    """[B, 3, 299, 299] in [-1, 1] -> [B, 2048]: a small random conv net (about 17 MMACs per image)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 8, stride=8)  # 299 -> 37
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)  # 37 -> 19
        self.proj = nn.Linear(2 * width * 16, 2048)
        for layer in (self.conv1, self.conv2, self.proj):  # variance-preserving: O(1) features
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = F.adaptive_avg_pool2d(h, 4).flatten(1)  # [B, 2 * width * 16]
        return torch.relu(self.proj(h))  # [B, 2048], >= 0 like pool3


class StandInInception(nn.Module):
    def __init__(self, width: int = 32, layers: nn.Module | None = None):
        super().__init__()
        self.layers = StandInLayers(width) if layers is None else layers

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = F.interpolate(x.to(torch.float32), size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


def inception_v3_layers() -> nn.Module:
    """torchvision's Inception v3 up to pool3, random weights, batch-norm statistics calibrated on noise:
    [B, 3, 299, 299] -> [B, 2048] at the real network's cost (about 5.7 GFLOPs per image), traced.

    For measuring speed where the real file is missing; its features are not Inception features.
    """
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False)
    net.fc, net.dropout = nn.Identity(), nn.Identity()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one calibration batch sets the statistics
    with torch.no_grad():
        net.train()(torch.randn(8, 3, 299, 299))
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated but is what the file is
        return torch.jit.trace(net, torch.zeros(1, 3, 299, 299))


def save_standin(path: str | pathlib.Path, seed: int = 0, width: int = 32, arch: str = "small") -> pathlib.Path:
    """Write a TorchScript stand-in feature network to ``path`` (deterministic given ``seed``).

    ``arch``: ``small`` (about 17 MMACs per image: tests, and benches that isolate everything around the
    network) or ``inception_v3`` (the real architecture and cost, random weights).
    """
    path = pathlib.Path(path)
    if arch not in ("small", "inception_v3"):
        raise ValueError(f"unknown stand-in arch {arch!r}: small or inception_v3")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = inception_v3_layers() if arch == "inception_v3" else None
        model = StandInInception(width, layers).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated but is what the file is
        scripted = torch.jit.script(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path
