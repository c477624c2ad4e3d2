"""The one wrapper that owns the diffusion formulation (schedule, parametrization, loss) around a
backbone that never sees it (STYLE: edm's Precond wrappers). Each part can be swapped alone."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from components.schedules import alpha_sigma


class Denoiser(nn.Module):
    def __init__(self, network: nn.Module, schedule, parametrization, loss):
        super().__init__()
        self.network = network
        self.schedule = schedule
        self.parametrization = parametrization
        self.loss_fn = loss

    def predict(self, z: Tensor, logsnr: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x_hat, eps_hat) from the network output; ``labels=None`` is the unconditional prediction."""
        out = self.network(z, logsnr, labels)
        return self.parametrization.to_x_eps(out.float(), z.float(), logsnr.float())

    def loss(self, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Per-example loss [B] at t ~ U(0, 1): z_t = alpha x + sigma eps, loss(eps_hat, eps, lambda)."""
        b = x.shape[0]
        t = torch.rand(b, device=x.device, generator=generator)
        eps = torch.randn(x.shape, device=x.device, generator=generator)
        return self.loss_at(x, t, eps, labels)

    def eps_hat_at(self, x: Tensor, t: Tensor, eps: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(eps_hat, logsnr [B]) for x noised at t: z_t = alpha_t x + sigma_t eps, alpha^2 = sigmoid(lambda(t))."""
        logsnr = self.schedule.logsnr(t)  # [B]
        alpha, sigma = alpha_sigma(logsnr.reshape(-1, 1, 1, 1))
        z = alpha * x + sigma * eps  # [B, C, H, W]
        _, eps_hat = self.predict(z, logsnr, labels)
        return eps_hat, logsnr

    def loss_at(self, x: Tensor, t: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        eps_hat, logsnr = self.eps_hat_at(x, t, eps, labels)
        dlogsnr_dt = self.schedule.dlogsnr_dt(t) if self.loss_fn.needs_dlogsnr_dt else None
        return self.loss_fn(eps_hat, eps, logsnr, dlogsnr_dt)
