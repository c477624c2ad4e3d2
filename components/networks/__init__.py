"""Networks (simple diffusion Sec. 4, Fig. 8): ``forward(z, logsnr, labels=None) -> Tensor`` of z's shape.

A network's spec names its preset, the image resolution, the stem and the dropout placement; every preset
key can be overridden. The backbone never sees the diffusion formulation (see components/denoiser.py).
"""

from components.networks.spec import DropoutPlacement, NetworkSpec
from components.networks.unet import UNet
from components.networks.uvit import UViT

__all__ = ["NETWORKS", "DropoutPlacement", "NetworkSpec", "UNet", "UViT"]

NETWORKS = {
    "unet": UNet,
    "uvit": UViT,
}
