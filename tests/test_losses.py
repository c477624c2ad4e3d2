"""Losses against direct formulas (PAPER.md Sec. 2): eps-MSE, multiscale, v-MSE, min-SNR, sigmoid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import components


def make(b=4, c=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((b, c, d, d), generator=g, dtype=torch.float64)
    eps_hat = eps + torch.randn((b, c, d, d), generator=g, dtype=torch.float64) * 0.5
    logsnr = torch.rand(b, generator=g, dtype=torch.float64) * 24 - 12
    return eps_hat, eps, logsnr


def ref_mse(eps_hat, eps):
    diff = eps_hat.numpy() - eps.numpy()
    return (diff**2).reshape(diff.shape[0], -1).mean(1)


def ref_pool(a: np.ndarray, s: int) -> np.ndarray:
    """Average pooling d x d -> s x s by reshape-mean (d divisible by s)."""
    b, c, d, _ = a.shape
    k = d // s
    return a.reshape(b, c, s, k, s, k).mean(axis=(3, 5))


def ref_multiscale(eps_hat, eps, base, sizes=None):
    d = eps.shape[-1]
    e, eh = eps.numpy(), eps_hat.numpy()
    if sizes is None:  # PAPER.md: s in {base, 2 base, 4 base, ..., d}; only d when d <= base
        sizes = [d] if d <= base else [base * 2**i for i in range(int(np.log2(d // base)) + 1)]
    assert sizes[-1] == d
    total = np.zeros(e.shape[0])
    for s in sizes:  # L^s = mean over s x s of (D^s[eps] - D^s[eps_hat])^2, weighted by 1 / s
        total += ((ref_pool(e, s) - ref_pool(eh, s)) ** 2).reshape(e.shape[0], -1).mean(1) / s
    return total


def sig(a):
    return 1 / (1 + np.exp(-a))


def test_mse_formula():
    eps_hat, eps, logsnr = make()
    out = components.build("loss", "mse")(eps_hat, eps, logsnr)
    np.testing.assert_allclose(out.numpy(), ref_mse(eps_hat, eps), rtol=1e-6)


@pytest.mark.parametrize("d", [32, 64, 128])
def test_multiscale_formula(d):
    eps_hat, eps, logsnr = make(b=2, d=d)
    out = components.build("loss", "multiscale")(eps_hat, eps, logsnr)
    ref = ref_multiscale(eps_hat, eps, 32)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5)
    if d > 32:  # the coarse terms matter: not just the full-resolution term
        assert not np.allclose(ref, ref_mse(eps_hat, eps) / d, rtol=1e-3)


@pytest.mark.parametrize(("d", "base"), [(16, 32), (8, 32), (32, 16), (64, 16)])
def test_multiscale_other_bases(d, base):
    eps_hat, eps, logsnr = make(b=2, d=d)
    out = components.build("loss", {"name": "multiscale", "base": base})(eps_hat, eps, logsnr)
    np.testing.assert_allclose(out.numpy(), ref_multiscale(eps_hat, eps, base), rtol=1e-5)


@pytest.mark.parametrize(("d", "sizes"), [(96, [48, 96]), (48, [48]), (40, [40]), (24, [24])])
def test_multiscale_not_a_power_of_two_multiple(d, sizes):
    """d != 2^k base: halve d while the size stays >= base, so that every pooling is an exact block mean."""
    eps_hat, eps, logsnr = make(b=2, d=d)
    out = components.build("loss", "multiscale")(eps_hat, eps, logsnr)
    np.testing.assert_allclose(out.numpy(), ref_multiscale(eps_hat, eps, 32, sizes), rtol=1e-5)


def test_multiscale_below_base_is_mse_over_d():
    eps_hat, eps, logsnr = make(d=16)
    out = components.build("loss", "multiscale")(eps_hat, eps, logsnr)
    np.testing.assert_allclose(out.numpy(), ref_mse(eps_hat, eps) / 16, rtol=1e-6)


def v_setup(seed=1, b=6, d=4):
    """x, eps, logsnr, a wrong v_hat, and eps_hat converted from it by the paper's formula."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((b, 3, d, d), generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn((b, 3, d, d), generator=g, dtype=torch.float64)
    logsnr = torch.rand(b, generator=g, dtype=torch.float64) * 20 - 10
    lam = logsnr.numpy()[:, None, None, None]
    alpha, sigma = np.sqrt(sig(lam)), np.sqrt(sig(-lam))
    z = alpha * x.numpy() + sigma * eps.numpy()
    v = alpha * eps.numpy() - sigma * x.numpy()
    v_hat = v + np.random.default_rng(seed).normal(size=v.shape)
    eps_hat = sigma * z + alpha * v_hat
    x_hat = alpha * z - sigma * v_hat
    return x.numpy(), eps, logsnr, v, v_hat, torch.from_numpy(eps_hat), x_hat


def per_example_mean(a):
    return a.reshape(a.shape[0], -1).mean(1)


def test_v_mse_equals_direct_v_mse():
    x, eps, logsnr, v, v_hat, eps_hat, x_hat = v_setup()
    out = components.build("loss", "v_mse")(eps_hat, eps, logsnr)
    np.testing.assert_allclose(out.numpy(), per_example_mean((v - v_hat) ** 2), rtol=1e-5)
    # and the formula form: eps-MSE / alpha^2
    np.testing.assert_allclose(out.numpy(), ref_mse(eps_hat, eps) / sig(logsnr.numpy()), rtol=1e-5)


@pytest.mark.parametrize("gamma", [5.0, 1.0])
def test_min_snr_equals_weighted_x_mse(gamma):
    x, eps, logsnr, v, v_hat, eps_hat, x_hat = v_setup(seed=2)
    spec = {"name": "min_snr", "gamma": gamma}
    out = components.build("loss", spec)(eps_hat, eps, logsnr)
    snr = np.exp(logsnr.numpy())
    assert (snr > gamma).any() and (snr < gamma).any()
    np.testing.assert_allclose(out.numpy(), np.minimum(snr, gamma) * per_example_mean((x - x_hat) ** 2), rtol=1e-5)


def test_min_snr_default_gamma_is_5():
    assert components.build("loss", "min_snr").gamma == 5.0


def cosine_dlogsnr_dt(t: np.ndarray, lmin=-15.0, lmax=15.0) -> np.ndarray:
    """d/dt of -2 log tan(u), u = t_min + t (t_max - t_min): -4 (t_max - t_min) / sin(2 u), by hand."""
    t_min, t_max = np.arctan(np.exp(-lmax / 2)), np.arctan(np.exp(-lmin / 2))
    return -4 * (t_max - t_min) / np.sin(2 * (t_min + t * (t_max - t_min)))


@pytest.mark.parametrize("bias", [-3.0, 2.0])
def test_sigmoid_weighting_is_kingma_gao(bias):
    """-d lambda/dt * sigmoid(b - lambda) * eps-MSE (Kingma & Gao 2023; SiD2), with the cosine's derivative."""
    eps_hat, eps, _ = make(seed=3)
    t = torch.tensor([0.02, 0.3, 0.5, 0.98], dtype=torch.float64)
    sched = components.build("schedule", "cosine")
    logsnr, slope = sched.logsnr(t), sched.dlogsnr_dt(t)
    np.testing.assert_allclose(slope.numpy(), cosine_dlogsnr_dt(t.numpy()), rtol=1e-9)
    loss = components.build("loss", {"name": "sigmoid", "bias": bias})
    out = loss(eps_hat, eps, logsnr, slope)
    want = -cosine_dlogsnr_dt(t.numpy()) * sig(bias - logsnr.numpy()) * ref_mse(eps_hat, eps)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5)
    with pytest.raises(ValueError, match="dlogsnr_dt"):
        loss(eps_hat, eps, logsnr)


def test_sigmoid_weighting_does_not_depend_on_the_schedule():
    """As an integral over lambda the weighting is the same under any schedule spanning the same range: with an
    error that depends on lambda only, E_t[loss] under the cosine and under a shifted cosine clipped after the
    shift (both span [-15, 15]) agree, while the weighting without -d lambda/dt differs by far more."""
    from components.denoiser import Denoiser

    def error_at(logsnr):  # an error of size e(lambda) per pixel
        return (0.5 + torch.tanh(logsnr / 4)).reshape(-1, 1, 1, 1) * torch.ones(1, 1, 2, 2, dtype=logsnr.dtype)

    class Net(torch.nn.Module):
        def forward(self, z, logsnr, labels=None):
            return torch.zeros_like(z)

    t = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000  # midpoint rule over t
    means, plain = [], []
    for spec in ["cosine", {"name": "shifted_cosine", "resolution": 256, "clip": "after_shift"}]:
        sched = components.build("schedule", spec)
        den = Denoiser(Net(), sched, components.build("parametrization", "v"), components.build("loss", "sigmoid"))
        lam = sched.logsnr(t)
        e = error_at(lam)
        means.append(den.loss_fn(e, torch.zeros_like(e), lam, sched.dlogsnr_dt(t)).mean().item())
        plain.append((torch.sigmoid(-3.0 - lam) * e.pow(2).flatten(1).mean(1)).mean().item())
    assert means[0] == pytest.approx(means[1], rel=2e-3)
    assert abs(plain[0] - plain[1]) > 0.2 * plain[0]


def test_mse_is_snr_weighted_x_mse_and_alpha2_weighted_v_mse():
    x, eps, logsnr, v, v_hat, eps_hat, x_hat = v_setup(seed=4)
    out = components.build("loss", "mse")(eps_hat, eps, logsnr).numpy()
    np.testing.assert_allclose(out, np.exp(logsnr.numpy()) * per_example_mean((x - x_hat) ** 2), rtol=1e-5)
    np.testing.assert_allclose(out, sig(logsnr.numpy()) * per_example_mean((v - v_hat) ** 2), rtol=1e-5)


def test_mse_gradient_formula():
    eps_hat, eps, logsnr = make()
    eps_hat.requires_grad_(True)
    components.build("loss", "mse")(eps_hat, eps, logsnr).sum().backward()
    n = eps[0].numel()
    np.testing.assert_allclose(eps_hat.grad.numpy(), 2 * (eps_hat - eps).detach().numpy() / n, rtol=1e-5)
