"""Parametrizations: the true target recovers (x, eps); the loss identities of PAPER.md Sec. 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import components
from components.parametrizations import PARAMETRIZATIONS

B, SHAPE = 16, (3, 4, 4)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((B, *SHAPE), generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn((B, *SHAPE), generator=g, dtype=torch.float64)
    logsnr = torch.rand(B, generator=g, dtype=torch.float64) * 20 - 10  # [-10, 10]
    wrong = torch.randn((B, *SHAPE), generator=g, dtype=torch.float64)  # an arbitrary network output
    # reference alpha, sigma with numpy: alpha^2 = sigmoid(lambda)
    lam = logsnr.numpy()[:, None, None, None]
    alpha = np.sqrt(1 / (1 + np.exp(-lam)))
    sigma = np.sqrt(1 / (1 + np.exp(lam)))
    z = torch.from_numpy(alpha * x.numpy() + sigma * eps.numpy())
    return x, eps, logsnr, z, wrong, alpha, sigma


def true_target(name, x, eps, alpha, sigma):
    return {"v": alpha * eps - sigma * x, "eps": eps, "x": x}[name]


def test_registry_is_v_eps_x():
    assert set(PARAMETRIZATIONS) == {"v", "eps", "x"}


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_target_matches_formula(name, data):
    x, eps, logsnr, z, wrong, alpha, sigma = data
    p = components.build("parametrization", name)
    np.testing.assert_allclose(
        p.target(x, eps, logsnr).numpy(), true_target(name, x.numpy(), eps.numpy(), alpha, sigma), atol=1e-12
    )


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_true_target_recovers_x_and_eps(name, data):
    x, eps, logsnr, z, wrong, alpha, sigma = data
    p = components.build("parametrization", name)
    out = torch.from_numpy(true_target(name, x.numpy(), eps.numpy(), alpha, sigma))
    x_hat, eps_hat = p.to_x_eps(out, z, logsnr)
    np.testing.assert_allclose(x_hat.numpy(), x.numpy(), atol=1e-8)
    np.testing.assert_allclose(eps_hat.numpy(), eps.numpy(), atol=1e-8)


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_loss_identities_for_wrong_prediction(name, data):
    """||eps - eps_hat||^2 = alpha^2 ||v - v_hat||^2 = SNR ||x - x_hat||^2 per example."""
    x, eps, logsnr, z, wrong, alpha, sigma = data
    p = components.build("parametrization", name)
    x_hat, eps_hat = (t.numpy() for t in p.to_x_eps(wrong, z, logsnr))
    x, eps, z = x.numpy(), eps.numpy(), z.numpy()
    # the prediction is consistent with z: z = alpha x_hat + sigma eps_hat
    np.testing.assert_allclose(alpha * x_hat + sigma * eps_hat, z, atol=1e-8)
    v = alpha * eps - sigma * x
    v_hat = alpha * eps_hat - sigma * x_hat
    if name == "v":
        np.testing.assert_allclose(v_hat, wrong.numpy(), atol=1e-10)
    e_eps = ((eps - eps_hat) ** 2).reshape(B, -1).sum(1)
    e_v = ((v - v_hat) ** 2).reshape(B, -1).sum(1)
    e_x = ((x - x_hat) ** 2).reshape(B, -1).sum(1)
    a2, snr = alpha.ravel() ** 2, np.exp(logsnr.numpy())
    assert e_eps.min() > 1e-3  # the prediction really is wrong
    np.testing.assert_allclose(e_eps, a2 * e_v, rtol=1e-8)
    np.testing.assert_allclose(e_eps, snr * e_x, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_float32_and_shapes(name, data):
    x, eps, logsnr, z, wrong, alpha, sigma = data
    p = components.build("parametrization", name)
    x_hat, eps_hat = p.to_x_eps(wrong.float(), z.float(), logsnr.float())
    assert x_hat.shape == eps_hat.shape == z.shape
    assert x_hat.dtype == eps_hat.dtype == torch.float32
    assert p.target(x.float(), eps.float(), logsnr.float()).shape == x.shape
