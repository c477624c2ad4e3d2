"""Noise schedules as pure functions of t in one unit: logSNR lambda(t) (simple diffusion, Sec. 3.1).

t = 0 is (almost) clean data, t = 1 (almost) pure noise.
alpha_t^2 = sigmoid(lambda), sigma_t^2 = sigmoid(-lambda).
A resolution shift is a wrapper around the cosine schedule: lambda_shift(t) = lambda_cos(t) + 2 log(base / d).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from components.registry import Component


def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """alpha_t, sigma_t of the variance preserving process from lambda: alpha^2 = sigmoid(lambda)."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def cosine_logsnr(t: Tensor, logsnr_min: float, logsnr_max: float) -> Tensor:
    """Cosine schedule alpha_t = cos(pi t / 2), clipped to [logsnr_min, logsnr_max] by rescaling t (Eq. 4).

    t_min = atan(exp(-lambda_max / 2)), t_max = atan(exp(-lambda_min / 2)),
    lambda(t) = -2 log tan(t_min + t (t_max - t_min)).
    """
    t_min = math.atan(math.exp(-0.5 * logsnr_max))
    t_max = math.atan(math.exp(-0.5 * logsnr_min))
    return -2.0 * torch.log(torch.tan(t_min + t * (t_max - t_min)))


def resolution_shift(base_resolution: int, resolution: int) -> float:
    """The shift 2 log(base / d) of simple diffusion Eq. 5 (negative when d > base: more noise)."""
    return 2.0 * math.log(base_resolution / resolution)


class Schedule(Component):
    """Base of every schedule: ``logsnr(t)`` (same shape as t, finite on [0, 1], never increasing in t) and
    ``logsnr_range() -> (lambda(1), lambda(0))``, the documented range every value lies in."""

    def logsnr(self, t: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover - every schedule defines it

    def logsnr_range(self) -> tuple[float, float]:
        raise NotImplementedError  # pragma: no cover - every schedule defines it

    def dlogsnr_dt(self, t: Tensor) -> Tensor:
        """d lambda / d t at t (same shape and dtype as t), by automatic differentiation of ``logsnr``; used by
        weightings written as integrals over lambda (Kingma & Gao 2023: E_t[-d lambda/dt w(lambda) ...])."""
        with torch.enable_grad():
            tt = t.detach().double().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.logsnr(tt).sum(), tt)
        return grad.to(t.dtype)


def _check_range(logsnr_min: float, logsnr_max: float) -> None:
    if not logsnr_min < logsnr_max:
        raise ValueError(f"logsnr_min: must be smaller than logsnr_max (got {logsnr_min} >= {logsnr_max})")


class Cosine(Schedule):
    """The cosine schedule of Nichol & Dhariwal in logSNR form, clipped to [logsnr_min, logsnr_max]."""

    logsnr_min: float = -15.0  # lambda at t = 1
    logsnr_max: float = 15.0  # lambda at t = 0

    @model_validator(mode="after")
    def _ordered(self) -> Cosine:
        _check_range(self.logsnr_min, self.logsnr_max)
        return self

    def logsnr(self, t: Tensor) -> Tensor:
        return cosine_logsnr(t, self.logsnr_min, self.logsnr_max)

    def logsnr_range(self) -> tuple[float, float]:
        return self.logsnr_min, self.logsnr_max


class ShiftedCosine(Cosine):
    """Shifted cosine (simple diffusion Eq. 5): lambda_cos(t) + 2 log(base_resolution / resolution).

    ``clip="before_shift"`` (the paper's pseudocode, default) clips the cosine to [min, max] and then
    shifts, so the range becomes [min + s, max + s]; ``"after_shift"`` rescales t so the shifted schedule
    itself spans [min, max].
    """

    base_resolution: int = Field(64, gt=0)  # resolution the schedule was tuned at, pixels
    resolution: int = Field(64, gt=0)  # image side d; the harness sets the dataset's resolution
    clip: Literal["before_shift", "after_shift"] = "before_shift"

    @property
    def shift(self) -> float:
        return resolution_shift(self.base_resolution, self.resolution)

    def logsnr(self, t: Tensor) -> Tensor:
        s = self.shift
        if self.clip == "before_shift":
            return cosine_logsnr(t, self.logsnr_min, self.logsnr_max) + s
        return cosine_logsnr(t, self.logsnr_min - s, self.logsnr_max - s) + s

    def logsnr_range(self) -> tuple[float, float]:
        """[min + s, max + s] when clipped before the shift, else [min, max]."""
        s = self.shift if self.clip == "before_shift" else 0.0
        return self.logsnr_min + s, self.logsnr_max + s


class InterpolatedShifted(Schedule):
    """Interpolation of two shifted cosines (simple diffusion Sec. 3.1, proposed for 512 x 512).

    ``orientation="pseudocode"`` (default): lambda = t * lambda_shift(low) + (1 - t) * lambda_shift(high),
    i.e. the strong shift (low base) at high noise where global structure forms.
    ``orientation="printed"``: lambda = t * lambda_shift(high) + (1 - t) * lambda_shift(low).
    """

    low: int = Field(32, gt=0)  # base resolution of the strongly shifted schedule
    high: int = Field(256, gt=0)  # base resolution of the weakly shifted schedule
    resolution: int = Field(64, gt=0)  # image side d; the harness sets the dataset's resolution
    orientation: Literal["pseudocode", "printed"] = "pseudocode"
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0

    @model_validator(mode="after")
    def _ordered(self) -> InterpolatedShifted:
        _check_range(self.logsnr_min, self.logsnr_max)
        return self

    def logsnr(self, t: Tensor) -> Tensor:
        cos = cosine_logsnr(t, self.logsnr_min, self.logsnr_max)
        low = cos + resolution_shift(self.low, self.resolution)
        high = cos + resolution_shift(self.high, self.resolution)
        if self.orientation == "pseudocode":
            return t * low + (1.0 - t) * high
        return t * high + (1.0 - t) * low

    def logsnr_range(self) -> tuple[float, float]:
        """lambda(1) = min + the shift of the base weighted at t = 1, lambda(0) = max + the other one's."""
        at_noise, at_data = (self.low, self.high) if self.orientation == "pseudocode" else (self.high, self.low)
        return (
            self.logsnr_min + resolution_shift(at_noise, self.resolution),
            self.logsnr_max + resolution_shift(at_data, self.resolution),
        )


SCHEDULES = {
    "cosine": Cosine,
    "shifted_cosine": ShiftedCosine,
    "interpolated_shifted": InterpolatedShifted,
}
