"""Losses on eps: ``loss(eps_hat, eps, logsnr, dlogsnr_dt=None) -> [B]``; the training loop does the only
reduction. ``dlogsnr_dt`` (d lambda / d t at each example's t) is passed by the denoiser to losses that declare
``needs_dlogsnr_dt``: weightings written as integrals over lambda need it to undo the schedule's density.

The paper's loss is the unweighted eps-MSE (simple diffusion Sec. 3.2, w(t) = 1). The weightings are
expressed on the eps-MSE through the identities ||eps - eps_hat||^2 = alpha^2 ||v - v_hat||^2 =
SNR ||x - x_hat||^2.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from components.registry import Component


def eps_mse(eps_hat: Tensor, eps: Tensor) -> Tensor:
    """Mean squared error per example: [B, C, H, W] x 2 -> [B]."""
    return (eps_hat - eps).float().pow(2).flatten(1).mean(1)


class Loss(Component):
    """Base of every loss: ``loss(eps_hat, eps, logsnr, dlogsnr_dt=None) -> [B]``, zero at an exact prediction."""

    needs_dlogsnr_dt: ClassVar[bool] = False  # the denoiser passes d lambda / d t only to losses that need it

    def __call__(self, eps_hat: Tensor, eps: Tensor, logsnr: Tensor, dlogsnr_dt: Tensor | None = None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - every loss defines it


class Mse(Loss):
    """Unweighted eps-MSE, the paper's loss: mean over pixels of (eps - eps_hat)^2."""

    def __call__(self, eps_hat: Tensor, eps: Tensor, logsnr: Tensor, dlogsnr_dt: Tensor | None = None) -> Tensor:
        return eps_mse(eps_hat, eps)


def multiscale_resolutions(d: int, base: int) -> list[int]:
    """{base, 2 base, 4 base, ..., d} when d = 2^k base; in general d, d/2, d/4, ... down to the smallest
    size >= base that halving d exactly reaches, so that every D^s is an exact k x k block average (for
    d = 96, base = 32: {48, 96}). d itself is always included; for d < base it is the only term."""
    sizes = [d]
    while sizes[0] % 2 == 0 and sizes[0] // 2 >= base:
        sizes.insert(0, sizes[0] // 2)
    return sizes


class Multiscale(Loss):
    """Multiscale eps loss (simple diffusion Sec. 3.2): sum_s (1/s) L^s, L^s = mean over s x s of the
    squared difference of the average-pooled maps D^s[eps] - D^s[eps_hat]; s in {base, 2 base, ..., d}."""

    base: int = Field(32, gt=0)  # lowest resolution included, pixels

    def __call__(self, eps_hat: Tensor, eps: Tensor, logsnr: Tensor, dlogsnr_dt: Tensor | None = None) -> Tensor:
        d = eps.shape[-1]
        diff = (eps_hat - eps).float()  # [B, C, d, d]
        total = torch.zeros(eps.shape[0], device=eps.device)
        for s in multiscale_resolutions(d, self.base):
            pooled = diff if s == d else F.avg_pool2d(diff, d // s)  # linear, so D[eps] - D[eps_hat]
            total = total + pooled.pow(2).flatten(1).mean(1) / s
        return total


class VMse(Loss):
    """MSE on v: ||v - v_hat||^2 = ||eps - eps_hat||^2 / alpha^2, alpha^2 = sigmoid(lambda)."""

    def __call__(self, eps_hat: Tensor, eps: Tensor, logsnr: Tensor, dlogsnr_dt: Tensor | None = None) -> Tensor:
        return eps_mse(eps_hat, eps) / torch.sigmoid(logsnr.float())


class MinSnr(Loss):
    """Min-SNR-gamma weighting (Hang et al., 2023): min(SNR, gamma) ||x - x_hat||^2
    = min(SNR, gamma) / SNR * ||eps - eps_hat||^2."""

    gamma: float = Field(5.0, gt=0)

    def __call__(self, eps_hat: Tensor, eps: Tensor, logsnr: Tensor, dlogsnr_dt: Tensor | None = None) -> Tensor:
        snr = logsnr.float().exp()
        return eps_mse(eps_hat, eps) * torch.clamp(snr, max=self.gamma) / snr


class Sigmoid(Loss):
    """Sigmoid weighting (Kingma & Gao 2023, Sec. 5; SiD2, Hoogeboom et al. 2024, Sec. 3), written as an
    integral over lambda: -d lambda/dt * sigmoid(b - lambda) * ||eps - eps_hat||^2 per example with t ~ U(0, 1).
    The factor -d lambda/dt undoes the schedule's density of lambda, so the weighting of each noise level is
    sigmoid(b - lambda) whatever the schedule (the constant 1/2 of the ELBO form is left out)."""

    needs_dlogsnr_dt: ClassVar[bool] = True
    bias: float = -3.0  # b; larger b weights low-noise levels more

    def __call__(self, eps_hat: Tensor, eps: Tensor, logsnr: Tensor, dlogsnr_dt: Tensor | None = None) -> Tensor:
        if dlogsnr_dt is None:
            raise ValueError("sigmoid: needs dlogsnr_dt (the denoiser passes it; see Loss.needs_dlogsnr_dt)")
        weight = torch.sigmoid(self.bias - logsnr.float()) * (-dlogsnr_dt.float())
        return eps_mse(eps_hat, eps) * weight


LOSSES = {
    "mse": Mse,
    "multiscale": Multiscale,
    "v_mse": VMse,
    "min_snr": MinSnr,
    "sigmoid": Sigmoid,
}
