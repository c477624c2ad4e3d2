"""What the network predicts, and how its output becomes (x_hat, eps_hat) (simple diffusion Sec. 3.2).

With z_t = alpha x + sigma eps and alpha^2 + sigma^2 = 1:
v = alpha eps - sigma x; x_hat = alpha z - sigma v_hat; eps_hat = sigma z + alpha v_hat.
"""

from __future__ import annotations

from torch import Tensor

from components.registry import Component
from components.schedules import alpha_sigma


def _bcast(logsnr: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, 1, 1] (as many trailing ones as ``like`` has extra dims)."""
    return logsnr.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


class V(Component):
    """v-prediction (the paper's choice): target v = alpha eps - sigma x."""

    def target(self, x: Tensor, eps: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = alpha_sigma(_bcast(logsnr, x))
        return alpha * eps - sigma * x

    def to_x_eps(self, out: Tensor, z: Tensor, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = alpha_sigma(_bcast(logsnr, z))
        return alpha * z - sigma * out, sigma * z + alpha * out


class Eps(Component):
    """eps-prediction: x_hat = (z - sigma eps_hat) / alpha (ill-conditioned as alpha -> 0)."""

    def target(self, x: Tensor, eps: Tensor, logsnr: Tensor) -> Tensor:
        return eps

    def to_x_eps(self, out: Tensor, z: Tensor, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = alpha_sigma(_bcast(logsnr, z))
        return (z - sigma * out) / alpha, out


class X(Component):
    """x-prediction: eps_hat = (z - alpha x_hat) / sigma (ill-conditioned as sigma -> 0)."""

    def target(self, x: Tensor, eps: Tensor, logsnr: Tensor) -> Tensor:
        return x

    def to_x_eps(self, out: Tensor, z: Tensor, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = alpha_sigma(_bcast(logsnr, z))
        return out, (z - alpha * out) / sigma


PARAMETRIZATIONS = {
    "v": V,
    "eps": Eps,
    "x": X,
}
