"""Samplers on a toy problem whose exact denoiser is known in closed form (PAPER.md Sec. 3).

Data x ~ N(mu, s^2) per dimension: z = alpha x + sigma eps is Gaussian, and the posterior mean is
E[x | z] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (z - alpha mu). A correct sampler driven by the exact
denoiser must reproduce the data distribution (up to discretisation and Monte Carlo error).
"""

from __future__ import annotations

import math

import pytest
import torch

import components
from components.samplers import SAMPLERS

MU, S = 0.3, 0.2
SHAPE = (20000, 1, 2, 2)  # 80000 iid values


@pytest.fixture(autouse=True)
def one_thread():
    """Many small element-wise ops: intra-op threads only add contention on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ab(logsnr: torch.Tensor, like: torch.Tensor):
    lam = logsnr.double().reshape(-1, *([1] * (like.dim() - 1)))
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def gaussian_predict(z, logsnr, labels):
    alpha, sigma = ab(logsnr, z)
    zd = z.double()
    x_hat = MU + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (zd - alpha * MU)
    eps_hat = (zd - alpha * x_hat) / sigma
    return x_hat.to(z.dtype), eps_hat.to(z.dtype)


MIX_MU, MIX_S = (-0.5, 0.5), 0.1  # 1/2 N(-0.5, 0.1^2) + 1/2 N(0.5, 0.1^2)


def mixture_predict(z, logsnr, labels):
    alpha, sigma = ab(logsnr, z)
    zd = z.double()
    var = alpha**2 * MIX_S**2 + sigma**2  # marginal variance of z per component
    logp = torch.stack([-((zd - alpha * m) ** 2) / (2 * var) for m in MIX_MU])
    resp = torch.softmax(logp, dim=0)  # equal weights and variances
    means = torch.stack([m + alpha * MIX_S**2 / var * (zd - alpha * m) for m in MIX_MU])
    x_hat = (resp * means).sum(0)
    eps_hat = (zd - alpha * x_hat) / sigma
    return x_hat.to(z.dtype), eps_hat.to(z.dtype)


def sample(name, predict, steps=128, seed=0, shape=SHAPE, schedule="cosine", spacing="time", **kw):
    """The hand-written reference chain below is uniform in t, so these tests use that spacing."""
    sampler = components.build("sampler", {"name": name, "steps": steps, "spacing": spacing, **kw})
    sched = components.build("schedule", schedule)
    g = torch.Generator().manual_seed(seed)
    return sampler.sample(predict, sched, shape, generator=g)


def ref_cosine(t, shift=0.0):
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    return -2 * math.log(math.tan(t_min + t * (t_max - t_min))) + shift


def exact_chain_moments(name, steps, shift=0.0):
    """Mean and variance of the sampler's output on the Gaussian toy problem, propagated exactly.

    With the exact denoiser both samplers are affine in z plus Gaussian noise, so z stays Gaussian and
    (m, v) follow a scalar recursion (clipping ignored: it touches ~1e-4 of the samples at the last steps).
    This is the discretised chain of PAPER.md Sec. 3 written out by hand, independently of the code.
    """
    m, v = 0.0, 1.0
    for i in range(steps):
        lt, ls = ref_cosine(1 - i / steps, shift), ref_cosine(1 - (i + 1) / steps, shift)
        a_t, s_t = math.sqrt(1 / (1 + math.exp(-lt))), math.sqrt(1 / (1 + math.exp(lt)))
        a_s, s_s = math.sqrt(1 / (1 + math.exp(-ls))), math.sqrt(1 / (1 + math.exp(ls)))
        k = a_t * S**2 / (a_t**2 * S**2 + s_t**2)
        xp, xq = k, MU * (1 - k * a_t)  # x_hat = xp z + xq
        last = i == steps - 1
        if name == "ancestral":
            c = -math.expm1(lt - ls)
            p, q, noise = a_s * ((1 - c) / a_t + c * xp), a_s * c * xq, 0.0 if last else c * s_s**2
        elif last:  # ddim returns x_hat at the end
            p, q, noise = xp, xq, 0.0
        else:  # ddim: a_s x_hat + s_s (z - a_t x_hat) / s_t
            p = a_s * xp + s_s * (1 - a_t * xp) / s_t
            q = a_s * xq - s_s * a_t * xq / s_t
            noise = 0.0
        m, v = p * m + q, p * p * v + noise
    return m, v


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_exact_chain_converges_to_data(name):
    """The reference itself: with many steps the discretised chain samples N(mu, s^2)."""
    m, v = exact_chain_moments(name, 4096)
    assert m == pytest.approx(MU, abs=1e-3) and v == pytest.approx(S**2, rel=0.01)
    # ... and with few steps it is visibly off (so the comparison below has teeth)
    assert exact_chain_moments(name, 16)[1] < 0.8 * S**2


@pytest.mark.parametrize("shift", [0.0, 2 * math.log(64 / 256)])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_gaussian_moments_match_exact_chain(name, shift):
    schedule = "cosine" if shift == 0 else {"name": "shifted_cosine", "resolution": 256}
    out = sample(name, gaussian_predict, schedule=schedule)
    assert out.shape == SHAPE and out.dtype == torch.float32
    n = out.numel()
    m_ref, v_ref = exact_chain_moments(name, 128, shift)
    mean, var = out.double().mean().item(), out.double().var().item()
    # standard errors: sqrt(v / n) ~ 7e-4 for the mean, sqrt(2 / n) ~ 0.5 % (relative) for the variance
    assert mean == pytest.approx(m_ref, abs=5 * math.sqrt(v_ref / n))
    assert var == pytest.approx(v_ref, rel=0.03)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_gaussian_moments_recover_data(name):
    """At 512 steps (the paper's count) the samples have the data's mean and variance (bias < 4 %)."""
    out = sample(name, gaussian_predict, steps=512).double()
    assert out.mean().item() == pytest.approx(MU, abs=5 * S / math.sqrt(out.numel()))
    assert out.var().item() == pytest.approx(S**2, rel=0.06)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_mixture_moments(name):
    out = sample(name, mixture_predict, shape=(5000, 1, 2, 2)).double()
    # mean 0, variance 0.5^2 + 0.1^2, half the mass per mode, and (almost) nothing between the modes
    assert out.mean().item() == pytest.approx(0.0, abs=0.02)
    assert out.var().item() == pytest.approx(0.26, abs=0.01)
    assert (out > 0).double().mean().item() == pytest.approx(0.5, abs=0.02)
    near_mode = ((out - 0.5).abs() < 0.3) | ((out + 0.5).abs() < 0.3)
    assert near_mode.double().mean().item() > 0.99
    modes_std = torch.where(out > 0, out - 0.5, out + 0.5).std().item()
    assert modes_std == pytest.approx(MIX_S, abs=0.01)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_reproducible_given_generator(name):
    a = sample(name, gaussian_predict, steps=8, seed=1, shape=(64, 1, 2, 2))
    b = sample(name, gaussian_predict, steps=8, seed=1, shape=(64, 1, 2, 2))
    c = sample(name, gaussian_predict, steps=8, seed=2, shape=(64, 1, 2, 2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ancestral_is_stochastic_ddim_is_not():
    """Same initial noise: DDIM is a function of it, ancestral adds fresh noise per step."""
    calls = []

    def predict(z, logsnr, labels):
        calls.append(z.clone())
        return gaussian_predict(z, logsnr, labels)

    sched = components.build("schedule", "cosine")
    ddim = components.build("sampler", {"name": "ddim", "steps": 4, "spacing": "time"})
    z1 = ddim.sample(predict, sched, (8, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert len(calls) == 4
    # DDIM by hand from the same starting noise (z_1 = first argument of predict)
    z = calls[0]
    lam = sched.logsnr(torch.linspace(1, 0, 5, dtype=torch.float64))
    for i in range(4):
        x_hat, _ = gaussian_predict(z, lam[i].float().expand(8), None)
        x_hat = x_hat.clamp(-1, 1)
        if i == 3:
            z = x_hat
        else:  # eps_hat recomputed from the clipped x_hat (the authors' convention)
            a_t, s_t = ab(lam[i].expand(8), z)
            a, s = ab(lam[i + 1].expand(8), z)
            eps_hat = (z.double() - a_t * x_hat) / s_t
            z = (a * x_hat + s * eps_hat).float()
    torch.testing.assert_close(z1, z, atol=1e-5, rtol=1e-5)


def test_ancestral_coefficients_match_vdm_formula():
    """One ancestral step t -> s against c = -expm1(l_t - l_s), mean and variance of PAPER.md Sec. 3."""
    anc = components.build("sampler", {"name": "ancestral", "steps": 2, "clip_x": False})
    lt, ls = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    a, b, noise = anc.coefficients(lt, ls, last=False)
    c = 1 - math.exp(-3.0)
    a_t, a_s = math.sqrt(1 / (1 + math.exp(1.0))), math.sqrt(1 / (1 + math.exp(-2.0)))
    s2_s = 1 / (1 + math.exp(2.0))
    z, x_hat = 0.7, -0.2
    assert float(a * z + b * x_hat) == pytest.approx(a_s * ((1 - c) * z / a_t + c * x_hat), rel=1e-12)
    assert float(noise) ** 2 == pytest.approx(c * s2_s, rel=1e-12)
    a2, b2, noise2 = anc.coefficients(lt, ls, last=True)  # the last step returns the mean
    assert (float(a2), float(b2), float(noise2)) == (float(a), float(b), 0.0)


def test_ddim_clip_recomputes_eps_from_clipped_x():
    """With clip_x, z_s = alpha_s clip(x_hat) + sigma_s (z_t - alpha_t clip(x_hat)) / sigma_t."""
    ddim = components.build("sampler", {"name": "ddim", "steps": 2, "spacing": "time"})
    sched = components.build("schedule", "cosine")

    def predict(z, logsnr, labels):  # an x_hat far outside [-1, 1], and an eps_hat that disagrees with it
        return torch.full_like(z, 5.0), torch.full_like(z, 123.0)

    seen = []
    z1 = torch.Generator().manual_seed(0)
    ddim.sample(lambda z, lam, y: (seen.append((z.clone(), lam.clone())), predict(z, lam, y))[1], sched,
                (4, 1, 1, 1), generator=z1)  # fmt: skip
    (z_t, lt), (z_s, ls) = seen
    a_t, s_t = ab(lt, z_t)
    a_s, s_s = ab(ls, z_t)
    want = a_s * 1.0 + s_s * (z_t.double() - a_t * 1.0) / s_t
    torch.testing.assert_close(z_s.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_guidance_calls_unconditional_and_mixes(name):
    w = 2.0
    seen = []

    def predict(z, logsnr, labels):
        seen.append(labels)
        x = torch.full_like(z, 0.3 if labels is not None else 0.1)
        return x, torch.full_like(z, 1.0 if labels is not None else -1.0)

    labels = torch.tensor([1, 2])
    sampler = components.build("sampler", {"name": name, "steps": 3, "guidance_scale": w, "clip_x": False})
    z = torch.randn(2, 1, 2, 2)
    x_hat = sampler.guided(predict, z, torch.zeros(2), labels)
    torch.testing.assert_close(x_hat, torch.full_like(z, (1 + w) * 0.3 - w * 0.1))

    seen.clear()
    sched = components.build("schedule", "cosine")
    sampler.sample(predict, sched, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0), labels=labels)
    assert len(seen) == 6  # cond + uncond per step
    assert sum(lab is None for lab in seen) == 3
    assert all(lab is labels for lab in seen if lab is not None)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_no_guidance_calls_once_per_step(name):
    seen = []

    def predict(z, logsnr, labels):
        seen.append(labels)
        return gaussian_predict(z, logsnr, labels)

    sched = components.build("schedule", "cosine")
    labels = torch.tensor([0, 1])
    components.build("sampler", {"name": name, "steps": 5}).sample(
        predict, sched, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0), labels=labels
    )
    assert len(seen) == 5 and all(lab is labels for lab in seen)
    seen.clear()
    components.build("sampler", {"name": name, "steps": 5, "guidance_scale": 3.0}).sample(
        predict, sched, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0)
    )
    assert seen == [None] * 5  # no labels: nothing to guide


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_clip_x(name):
    sampler = components.build("sampler", name)

    def predict(z, logsnr, labels):
        return torch.full_like(z, 3.0), torch.zeros_like(z)

    x_hat = sampler.guided(predict, torch.zeros(2, 1, 2, 2), torch.zeros(2), None)
    assert torch.all(x_hat == 1.0)
    unclipped = components.build("sampler", {"name": name, "clip_x": False})
    assert torch.all(unclipped.guided(predict, torch.zeros(2, 1, 2, 2), torch.zeros(2), None) == 3.0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_progress_flag(name, capsys):
    sched = components.build("schedule", "cosine")
    for progress in (False, True):
        sampler = components.build("sampler", {"name": name, "steps": 7, "progress": progress})
        sampler.sample(gaussian_predict, sched, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0))
        err = capsys.readouterr().err
        if progress:
            assert "/7" in err and name in err
        else:
            assert err == ""


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_logsnr_passed_to_predict_follows_grid(name):
    """predict sees lambda(t) for t = 1, 1 - 1/N, ..., 1/N (uniform in t, from noise to data), shape [B]."""
    seen = []

    def predict(z, logsnr, labels):
        seen.append(logsnr.clone())
        return gaussian_predict(z, logsnr, labels)

    sched = components.build("schedule", {"name": "shifted_cosine", "resolution": 128})
    components.build("sampler", {"name": name, "steps": 4, "spacing": "time"}).sample(
        predict, sched, (3, 1, 2, 2), generator=torch.Generator().manual_seed(0)
    )
    assert all(s.shape == (3,) for s in seen)
    t = [1.0, 0.75, 0.5, 0.25]
    want = [
        -2 * math.log(math.tan(math.atan(math.exp(-7.5)) + ti * (math.atan(math.exp(7.5)) - math.atan(math.exp(-7.5)))))
        + 2 * math.log(0.5)
        for ti in t
    ]
    got = torch.stack([s[0] for s in seen]).double()
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_logsnr_and_edm_spacing_grids(name):
    """``logsnr``: equal steps in lambda between lambda(1) and lambda(0); ``edm``: Karras et al. Eq. 5 in
    sigma = exp(-lambda / 2). Both end exactly at the schedule's end points."""
    sched = components.build("schedule", {"name": "shifted_cosine", "resolution": 256})
    lo, hi = ref_cosine(1.0, 2 * math.log(0.25)), ref_cosine(0.0, 2 * math.log(0.25))
    grid = components.build("sampler", {"name": name, "steps": 6}).grid(sched)  # default spacing: logsnr
    torch.testing.assert_close(grid, torch.linspace(lo, hi, 7, dtype=torch.float64))
    edm = components.build("sampler", {"name": name, "steps": 6, "spacing": "edm", "rho": 7.0}).grid(sched)
    s_max, s_min = math.exp(-lo / 2), math.exp(-hi / 2)
    want = [(s_max ** (1 / 7) + i / 6 * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7 for i in range(7)]
    torch.testing.assert_close(edm, torch.tensor([-2 * math.log(s) for s in want], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_gaussian_retention_matches_hand_written_chain(name):
    """The fidelity guard's exact chain equals the hand-written reference above (uniform in t, data N(0, s^2)
    is the mu = 0 case: retention = v / s^2), and the sampler itself draws that variance (Monte Carlo)."""
    from components.samplers import gaussian_retention

    global MU
    sampler = components.build("sampler", {"name": name, "steps": 24, "spacing": "time"})
    sched = components.build("schedule", "cosine")
    mu, MU = MU, 0.0
    try:
        _, v_ref = exact_chain_moments(name, 24)
        out = sample(name, gaussian_predict, steps=24).double()
    finally:
        MU = mu
    assert gaussian_retention(sampler, sched, S) == pytest.approx(v_ref / S**2, rel=1e-9)
    assert out.var().item() / S**2 == pytest.approx(v_ref / S**2, rel=0.03)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_logsnr_spacing_makes_retention_shift_invariant(name):
    """A resolution shift is a rescaling of the data, so a grid uniform in t loses more detail under a
    shifted schedule (issue 10's finding: 0.59 / 0.33 / 0.12 at 24 DDIM steps); a grid uniform in lambda
    keeps the same fraction under every shift."""
    from components.samplers import gaussian_retention

    arms = [{"name": "cosine"}] + [{"name": "shifted_cosine", "base_resolution": b, "resolution": 64} for b in (32, 16)]
    scheds = [components.build("schedule", a) for a in arms]
    by_t = [gaussian_retention(components.build("sampler", {"name": name, "steps": 24, "spacing": "time"}), s, 0.1)
            for s in scheds]  # fmt: skip
    by_lambda = [gaussian_retention(components.build("sampler", {"name": name, "steps": 24}), s, 0.1) for s in scheds]
    assert by_t[0] > by_t[1] + 0.1 > by_t[2] + 0.2
    assert max(by_lambda) - min(by_lambda) < 0.005
    if name == "ddim":
        assert by_t == pytest.approx([0.585, 0.328, 0.121], abs=2e-3)
