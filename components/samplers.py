"""Samplers: from pure noise at t = 1 to data at t = 0 in N steps on a grid of noise levels.

Every sampler has the same signature: ``sampler.sample(predict, schedule, shape, generator=..., labels=...)``
where ``predict(z, logsnr, labels) -> (x_hat, eps_hat)`` is a denoiser (``labels=None`` asks for the
unconditional prediction) and ``schedule.logsnr(t)`` gives lambda.

Step spacing (``spacing``) decides where the N + 1 noise levels lie between lambda(1) and lambda(0):
- ``time``: uniform in t (simple diffusion Sec. 3.3, the paper's grid);
- ``logsnr``: uniform in lambda. A resolution shift moves lambda by a constant, so this grid moves with it and
  every shifted schedule gets the same steps relative to the data (the sampler is not a confound of a
  schedule ablation); the default;
- ``edm``: Karras et al. (2022) Eq. 5, sigma_i = (sigma_max^(1/rho) + i/N (sigma_min^(1/rho) -
  sigma_max^(1/rho)))^rho with sigma = exp(-lambda / 2), denser at low noise.

Every update is affine in (z_t, x_hat) plus Gaussian noise, z_s = a z_t + b x_hat + c noise, so the sampler
is written once as ``coefficients`` and ``gaussian_retention`` propagates a Gaussian through the exact chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from components.registry import Component
from components.schedules import alpha_sigma

Predict = Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]
Spacing = Literal["logsnr", "time", "edm"]


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def logsnr_grid(schedule, steps: int, spacing: Spacing = "logsnr", rho: float = 7.0) -> Tensor:
    """The N + 1 noise levels lambda_0 = lambda(1) (noise) ... lambda_N = lambda(0) (data), float64 [N + 1]."""
    if spacing == "time":
        return schedule.logsnr(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))
    ends = schedule.logsnr(torch.tensor([1.0, 0.0], dtype=torch.float64))
    low, high = float(ends[0]), float(ends[1])
    if spacing == "logsnr":
        return torch.linspace(low, high, steps + 1, dtype=torch.float64)
    # edm: sigma = exp(-lambda / 2) is the noise level of the variance exploding form (Karras et al. 2022)
    s_max, s_min = math.exp(-low / 2) ** (1 / rho), math.exp(-high / 2) ** (1 / rho)
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return -2.0 * rho * torch.log(s_max + i * (s_min - s_max))


class _Sampler(Component):
    steps: int = Field(64, gt=0)  # N network evaluations
    spacing: Spacing = "logsnr"  # where the N + 1 noise levels lie (see the module docstring)
    rho: float = Field(7.0, gt=0)  # edm spacing only: Karras et al.'s rho
    guidance_scale: float = Field(0.0, ge=0)  # w: (1 + w) cond - w uncond; 0 = no guidance
    clip_x: bool = True  # clip x_hat to [-1, 1] (eps_hat follows from the clipped x_hat)
    progress: bool = False  # a tqdm bar over the steps

    def guided(self, predict: Predict, z: Tensor, logsnr: Tensor, labels: Tensor | None) -> Tensor:
        """x_hat, with classifier-free guidance mixing when labels and w > 0, clipped when ``clip_x``.

        The update uses x_hat and z only: eps_hat = (z - alpha x_hat) / sigma, the convention of the
        authors' code, so a clipped x_hat also clips eps_hat consistently."""
        x_hat, _ = predict(z, logsnr, labels)
        if labels is not None and self.guidance_scale > 0:
            x_u, _ = predict(z, logsnr, None)
            x_hat = x_u + (1 + self.guidance_scale) * (x_hat - x_u)
        return x_hat.clamp(-1.0, 1.0) if self.clip_x else x_hat

    def coefficients(self, lt: Tensor, ls: Tensor, last: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(a, b, c) of the update z_s = a z_t + b x_hat + c noise from lambda_t to lambda_s > lambda_t."""
        raise NotImplementedError  # pragma: no cover - every sampler defines it

    def grid(self, schedule) -> Tensor:
        """The noise levels this sampler visits, float64 [steps + 1], from lambda(1) to lambda(0)."""
        return logsnr_grid(schedule, self.steps, self.spacing, self.rho)

    @torch.no_grad()
    def sample(
        self,
        predict: Predict,
        schedule,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``shape[0]`` samples; reproducible given ``generator`` (which must live on ``device``)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        b = shape[0]
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        grid = self.grid(schedule)
        for i in tqdm(range(self.steps), disable=not self.progress, desc=self.name or "sample", leave=False):
            last = i == self.steps - 1
            lt, ls = grid[i], grid[i + 1]
            x_hat = self.guided(predict, z, lt.to(device=device, dtype=dtype).expand(b), labels)
            a, bx, c = (v.to(device=device, dtype=dtype) for v in self.coefficients(lt, ls, last))
            z = a * z + bx * x_hat
            if c > 0:
                z = z + c * torch.randn(z.shape, generator=generator, device=device, dtype=dtype)
        return z


class Ancestral(_Sampler):
    """Ancestral sampler in the VDM form (Kingma et al. 2021; simple diffusion Sec. 3.3), t -> s < t:
    c = -expm1(lambda_t - lambda_s); mean = alpha_s ((1 - c) z_t / alpha_t + c x_hat);
    variance = c sigma_s^2; the last step returns the mean."""

    def coefficients(self, lt: Tensor, ls: Tensor, last: bool) -> tuple[Tensor, Tensor, Tensor]:
        a_t, _ = alpha_sigma(lt)
        a_s, s_s = alpha_sigma(ls)
        c = -torch.expm1(lt - ls)
        noise = torch.zeros_like(c) if last else (c * s_s**2).sqrt()
        return a_s * (1 - c) / a_t, a_s * c, noise


class Ddim(_Sampler):
    """DDIM (Song et al. 2021), deterministic: z_s = alpha_s x_hat + sigma_s eps_hat with
    eps_hat = (z_t - alpha_t x_hat) / sigma_t, i.e. z_s = (sigma_s / sigma_t) z_t + (alpha_s - sigma_s alpha_t /
    sigma_t) x_hat; the last step returns x_hat."""

    def coefficients(self, lt: Tensor, ls: Tensor, last: bool) -> tuple[Tensor, Tensor, Tensor]:
        zero = torch.zeros_like(lt)
        if last:
            return zero, torch.ones_like(lt), zero
        a_t, s_t = alpha_sigma(lt)
        a_s, s_s = alpha_sigma(ls)
        return s_s / s_t, a_s - s_s * a_t / s_t, zero


def gaussian_retention(sampler: _Sampler, schedule, std: float) -> float:
    """Fraction of the variance of data x ~ N(0, std^2) (per pixel, on the [-1, 1] scale) that the sampler keeps
    when driven by the exact denoiser x_hat = alpha std^2 / (alpha^2 std^2 + sigma^2) z.

    The chain is linear-Gaussian, so the variance follows v_s = (a + b g_t)^2 v_t + c^2 from v = 1 at lambda(1)
    exactly (float64, no Monte Carlo). 1.0 is a perfect sampler; less means detail at that scale is lost to the
    discretisation, whatever the network. Clipping is not modelled (inactive at these scales)."""
    grid = sampler.grid(schedule)
    var = torch.tensor(1.0, dtype=torch.float64)
    for i in range(sampler.steps):
        lt, ls = grid[i], grid[i + 1]
        a_t, s_t = alpha_sigma(lt)
        gain = a_t * std**2 / (a_t**2 * std**2 + s_t**2)  # x_hat = gain * z_t
        a, b, c = sampler.coefficients(lt, ls, i == sampler.steps - 1)
        var = (a + b * gain) ** 2 * var + c**2
    return float(var) / std**2


SAMPLERS = {
    "ancestral": Ancestral,
    "ddim": Ddim,
}
