"""The Denoiser wrapper: z_t, the network call, the parametrization and the loss, wired as in PAPER.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import components
from components.denoiser import Denoiser
from components.parametrizations import PARAMETRIZATIONS
from harness.config.models import EvalSpec
from harness.trial.runner import validation_loss

B, C, D = 4, 3, 8


def ref_logsnr(t, shift=0.0):
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    return -2 * np.log(np.tan(t_min + np.asarray(t, dtype=np.float64) * (t_max - t_min))) + shift


class Zero(nn.Module):
    def forward(self, z, logsnr, labels=None):
        return torch.zeros_like(z)


class Oracle(nn.Module):
    """Outputs the true target of a parametrization, knowing x and eps (a perfect network)."""

    def __init__(self, x, eps, target):
        super().__init__()
        self.x, self.eps, self.target = x, eps, target
        self.calls = []

    def forward(self, z, logsnr, labels=None):
        self.calls.append((z, logsnr, labels))
        lam = logsnr.double().numpy()[:, None, None, None]
        a, s = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
        x, eps = self.x.double().numpy(), self.eps.double().numpy()
        np.testing.assert_allclose(z.double().numpy(), a * x + s * eps, atol=1e-5)  # z_t as documented
        out = {"v": a * eps - s * x, "eps": eps, "x": x}[self.target]
        return torch.from_numpy(out).float()


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B, C, D, D), generator=g) * 2 - 1
    eps = torch.randn((B, C, D, D), generator=g)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95])
    return x, eps, t


def make(network, parametrization="v", loss="mse", schedule="cosine"):
    return Denoiser(
        network,
        components.build("schedule", schedule),
        components.build("parametrization", parametrization),
        components.build("loss", loss),
    )


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_perfect_network_has_zero_loss(name):
    x, eps, t = data()
    net = Oracle(x, eps, name)
    labels = torch.arange(B)
    loss = make(net, name).loss_at(x, t, eps, labels)
    assert loss.shape == (B,)
    np.testing.assert_allclose(loss.detach().numpy(), 0.0, atol=1e-8)
    z, logsnr, seen_labels = net.calls[0]
    np.testing.assert_allclose(logsnr.numpy(), ref_logsnr(t.numpy()), atol=1e-4)
    assert seen_labels is labels


@pytest.mark.parametrize(
    ("schedule", "shift"), [("cosine", 0.0), ({"name": "shifted_cosine", "resolution": 128}, -1.3863)]
)
def test_zero_network_v_loss_formula(schedule, shift):
    """v-param, network output 0: eps_hat = sigma z, so eps - eps_hat = alpha^2 eps - alpha sigma x
    = alpha v."""
    x, eps, t = data(1)
    loss = make(Zero(), "v", "mse", schedule).loss_at(x, t, eps)
    lam = ref_logsnr(t.numpy(), shift)[:, None, None, None]
    a, s = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
    v = a * eps.numpy() - s * x.numpy()
    expected = (a**2 * v**2).reshape(B, -1).mean(1)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_zero_network_v_loss_with_v_mse_is_mean_v_squared():
    x, eps, t = data(2)
    loss = make(Zero(), "v", "v_mse").loss_at(x, t, eps)
    lam = ref_logsnr(t.numpy())[:, None, None, None]
    a, s = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
    v = a * eps.numpy() - s * x.numpy()
    np.testing.assert_allclose(loss.numpy(), (v**2).reshape(B, -1).mean(1), rtol=1e-4)


def test_loss_draws_t_and_eps_reproducibly_and_is_differentiable():
    x, _, _ = data(3)
    net = nn.Conv2d(C, C, 3, padding=1)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = net

        def forward(self, z, logsnr, labels=None):
            return self.conv(z)

    den = make(Wrapped(), "v", "mse")
    a = den.loss(x, generator=torch.Generator().manual_seed(0))
    b = den.loss(x, generator=torch.Generator().manual_seed(0))
    c = den.loss(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == (B,) and torch.equal(a, b) and not torch.equal(a, c)
    a.mean().backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    assert list(den.parameters())  # the network is a registered submodule


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_predict_shapes_and_labels(name):
    seen = []

    class Net(nn.Module):
        def forward(self, z, logsnr, labels=None):
            seen.append(labels)
            return torch.randn_like(z)

    den = make(Net(), name)
    z = torch.randn(B, C, D, D)
    logsnr = torch.linspace(-5, 5, B)
    x_hat, eps_hat = den.predict(z, logsnr)
    assert x_hat.shape == eps_hat.shape == z.shape
    assert x_hat.dtype == eps_hat.dtype == torch.float32
    labels = torch.arange(B)
    den.predict(z, logsnr, labels)
    assert seen[0] is None and seen[1] is labels
    # consistency with z: z = alpha x_hat + sigma eps_hat
    lam = logsnr.double().numpy()[:, None, None, None]
    a, s = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
    np.testing.assert_allclose(a * x_hat.numpy() + s * eps_hat.numpy(), z.numpy(), atol=1e-4)


def test_predict_drives_a_sampler():
    """Denoiser.predict has the signature samplers expect."""
    den = make(Zero(), "v")
    out = components.build("sampler", {"name": "ddim", "steps": 3}).sample(
        den.predict, den.schedule, (2, C, D, D), generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, C, D, D) and torch.isfinite(out).all()


def test_eps_hat_at_is_what_the_loss_and_the_validation_loss_see():
    """``eps_hat_at`` noises x at t as the loss does (z = alpha x + sigma eps, PAPER.md Eq. 1); the runner's
    validation loss uses it, and equals the eps-MSE computed by hand from that formula."""
    torch.manual_seed(0)
    net = components.build("network", {"name": "uvit", "preset": "tiny", "resolution": 16})
    schedule = components.build("schedule", {"name": "shifted_cosine", "resolution": 16})
    den = Denoiser(net, schedule, components.build("parametrization", "v"), components.build("loss", "mse"))
    g = torch.Generator().manual_seed(3)
    x, eps, t = torch.rand(B, 3, 16, 16, generator=g) * 2 - 1, torch.randn(B, 3, 16, 16, generator=g), torch.rand(B)
    eps_hat, logsnr = den.eps_hat_at(x, t, eps)
    alpha, sigma = components.schedules.alpha_sigma(schedule.logsnr(t).view(-1, 1, 1, 1))
    torch.testing.assert_close(eps_hat, den.predict(alpha * x + sigma * eps, schedule.logsnr(t))[1], rtol=0, atol=0)
    torch.testing.assert_close(den.loss_at(x, t, eps), (eps_hat - eps).pow(2).flatten(1).mean(1), rtol=0, atol=0)

    images = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    cfg = EvalSpec(val_buckets=2, val_repeats=1, batch_size=6)
    got = validation_loss(den, images, cfg, seed=4)[0]["value"]
    gen = torch.Generator().manual_seed(5)  # the runner's stream: seed + 1, then t and eps as it draws them
    t = ((torch.arange(6) + torch.rand(6, generator=gen)) / 6)[torch.randperm(6, generator=gen)]
    eps = torch.randn(images.shape, generator=gen)
    lam = schedule.logsnr(t).view(-1, 1, 1, 1)
    alpha, sigma = components.schedules.alpha_sigma(lam)
    with torch.no_grad():
        _, by_hand = den.predict(alpha * (images.float() / 127.5 - 1) + sigma * eps, lam.flatten())
    assert got == pytest.approx((by_hand - eps).pow(2).mean().item(), rel=1e-6)
