"""Samplers: from pure noise at t = 1 to data at t = 0 on a grid of N steps uniform in t.

Every sampler has the same signature: ``sampler.sample(predict, schedule, shape, generator=..., labels=...)``
where ``predict(z, logsnr, labels) -> (x_hat, eps_hat)`` is a denoiser (``labels=None`` asks for the
unconditional prediction) and ``schedule.logsnr(t)`` gives lambda.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from components.registry import Component
from components.schedules import alpha_sigma

Predict = Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


class _Sampler(Component):
    steps: int = Field(64, gt=0)  # N, uniform in t from 1 to 0
    guidance_scale: float = Field(0.0, ge=0)  # w: (1 + w) cond - w uncond; 0 = no guidance
    clip_x: bool = True  # clip x_hat to [-1, 1]
    progress: bool = False  # a tqdm bar over the steps

    def guided(self, predict: Predict, z: Tensor, logsnr: Tensor, labels: Tensor | None):
        """(x_hat, eps_hat), with classifier-free guidance mixing when labels and w > 0."""
        x_hat, eps_hat = predict(z, logsnr, labels)
        if labels is not None and self.guidance_scale > 0:
            x_u, eps_u = predict(z, logsnr, None)
            w = self.guidance_scale
            x_hat, eps_hat = x_u + (1 + w) * (x_hat - x_u), eps_u + (1 + w) * (eps_hat - eps_u)
        if self.clip_x:
            x_hat = x_hat.clamp(-1.0, 1.0)
        return x_hat, eps_hat

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
        ts = torch.linspace(1.0, 0.0, self.steps + 1, device=device, dtype=torch.float64)
        for i in tqdm(range(self.steps), disable=not self.progress, desc=self.name or "sample", leave=False):
            t, s = ts[i], ts[i + 1]
            lt = schedule.logsnr(t).to(dtype).expand(b)
            ls = schedule.logsnr(s).to(dtype).expand(b)
            z = self.step(predict, z, lt, ls, labels, last=i == self.steps - 1, generator=generator)
        return z

    def step(self, predict, z, lt, ls, labels, *, last, generator):  # pragma: no cover - abstract
        raise NotImplementedError


class Ancestral(_Sampler):
    """Ancestral sampler in the VDM form (Kingma et al. 2021; simple diffusion Sec. 3.3), t -> s < t:
    c = -expm1(lambda_t - lambda_s); mean = alpha_s ((1 - c) z_t / alpha_t + c x_hat);
    variance = c sigma_s^2; the last step returns the mean."""

    def step(self, predict, z, lt, ls, labels, *, last, generator):
        x_hat, _ = self.guided(predict, z, lt, labels)
        a_t, _ = alpha_sigma(_bcast(lt, z))
        a_s, s_s = alpha_sigma(_bcast(ls, z))
        c = -torch.expm1(_bcast(lt - ls, z))
        mean = a_s * ((1 - c) * z / a_t + c * x_hat)
        if last:
            return mean
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return mean + (c * s_s**2).sqrt() * noise


class Ddim(_Sampler):
    """DDIM (Song et al. 2021), deterministic: z_s = alpha_s x_hat + sigma_s eps_hat; x_hat at the end."""

    def step(self, predict, z, lt, ls, labels, *, last, generator):
        x_hat, eps_hat = self.guided(predict, z, lt, labels)
        if last:
            return x_hat
        a_s, s_s = alpha_sigma(_bcast(ls, z))
        return a_s * x_hat + s_s * eps_hat


SAMPLERS = {
    "ancestral": Ancestral,
    "ddim": Ddim,
}
