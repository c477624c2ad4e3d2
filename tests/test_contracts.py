"""Contracts every member of a family keeps, enumerated over the registries (a new entry is checked the day it
is added). The checks are plain functions so that a test can show they catch broken components: a schedule
with its sign flipped, or without clipping, fails them (issue 10, item 5)."""

from __future__ import annotations

import math

import pytest
import torch

import components
from components.losses import LOSSES
from components.parametrizations import PARAMETRIZATIONS
from components.samplers import SAMPLERS, gaussian_retention
from components.schedules import SCHEDULES, Cosine, Schedule
from harness.metrics import METRICS

# every schedule at its defaults, plus the variants whose parameters move its range
SCHEDULE_SPECS = [{"name": n} for n in sorted(SCHEDULES)] + [
    {"name": "shifted_cosine", "resolution": 512},
    {"name": "shifted_cosine", "resolution": 32, "base_resolution": 64},
    {"name": "shifted_cosine", "resolution": 256, "clip": "after_shift"},
    {"name": "interpolated_shifted", "resolution": 512},
    {"name": "interpolated_shifted", "resolution": 512, "orientation": "printed"},
]


def check_schedule(schedule: Schedule) -> None:
    """Finite on [0, 1] (t = 0 and 1 included), never increasing in t, inside ``logsnr_range()`` and reaching
    its ends: lambda(0) = the top of the range, lambda(1) = the bottom."""
    t = torch.linspace(0.0, 1.0, 4001, dtype=torch.float64)
    lam = schedule.logsnr(t)
    assert lam.shape == t.shape, "logsnr(t) must keep the shape of t"
    assert torch.isfinite(lam).all(), f"not finite at t = {t[~torch.isfinite(lam)][:3].tolist()}"
    rises = lam[1:] > lam[:-1] + 1e-9
    assert not rises.any(), f"increases in t near t = {t[1:][rises][:3].tolist()}"
    low, high = schedule.logsnr_range()
    assert math.isfinite(low) and math.isfinite(high) and low < high, f"bad documented range {low, high}"
    assert float(lam.min()) >= low - 1e-6 and float(lam.max()) <= high + 1e-6, "leaves its documented range"
    assert float(lam[0]) == pytest.approx(high, abs=1e-6) and float(lam[-1]) == pytest.approx(low, abs=1e-6)


@pytest.mark.parametrize("spec", SCHEDULE_SPECS, ids=lambda s: "-".join(map(str, s.values())))
def test_schedule_contract(spec):
    check_schedule(components.build("schedule", spec))


class SignFlipped(Cosine):
    """A cosine with its sign flipped: lambda rises from -15 to 15 as t goes from 0 to 1."""

    def logsnr(self, t):
        return -super().logsnr(t)


class Unclipped(Schedule):
    """alpha = cos(pi t / 2) without clipping: lambda(0) = +inf, lambda(1) = -inf."""

    def logsnr(self, t):
        return -2.0 * torch.log(torch.tan(math.pi * t / 2))

    def logsnr_range(self):
        return -15.0, 15.0


@pytest.mark.parametrize(("name", "why"), [("sign_flipped", "increases in t"), ("unclipped", "not finite")])
def test_broken_schedules_fail_the_contract(name, why):
    registry = {**SCHEDULES, "sign_flipped": SignFlipped, "unclipped": Unclipped}  # in the test, not the product
    schedule = components.registry.validate_spec("schedule", registry, name)
    with pytest.raises(AssertionError, match=why):
        check_schedule(schedule)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_contract(name):
    """[B] out, one value per example (no cross-talk), zero at an exact prediction, positive otherwise."""
    g = torch.Generator().manual_seed(5)
    eps = torch.randn((3, 2, 32, 32), generator=g)
    eps_hat = torch.randn((3, 2, 32, 32), generator=g).requires_grad_(True)
    logsnr = torch.tensor([-5.0, 0.0, 5.0])
    slope = torch.tensor([-20.0, -6.3, -20.0])  # d lambda / dt, passed to every loss (only some use it)
    loss_fn = components.build("loss", name)
    loss = loss_fn(eps_hat, eps, logsnr, slope)
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 0).all()
    (g0,) = torch.autograd.grad(loss[0], eps_hat)
    assert g0[1:].abs().sum() == 0 and g0[0].abs().sum() > 0
    assert torch.all(loss_fn(eps.clone(), eps, logsnr, slope) == 0)


@pytest.mark.parametrize("name", sorted(PARAMETRIZATIONS))
def test_parametrization_round_trip(name):
    """The network output equal to the target gives back (x, eps) exactly."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand((4, 3, 8, 8), generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn((4, 3, 8, 8), generator=g, dtype=torch.float64)
    logsnr = torch.tensor([-6.0, -1.0, 2.0, 6.0], dtype=torch.float64)
    a, s = (v.reshape(-1, 1, 1, 1) for v in components.schedules.alpha_sigma(logsnr))
    p = components.build("parametrization", name)
    x_hat, eps_hat = p.to_x_eps(p.target(x, eps, logsnr), a * x + s * eps, logsnr)
    torch.testing.assert_close(x_hat, x)
    torch.testing.assert_close(eps_hat, eps)


MU, S = 0.3, 0.2  # data N(MU, S^2) per value: its exact denoiser is known in closed form


def exact_denoiser(z, logsnr, labels):
    alpha, sigma = (v.reshape(-1, *([1] * (z.dim() - 1))) for v in components.schedules.alpha_sigma(logsnr.double()))
    x_hat = MU + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (z.double() - alpha * MU)
    return x_hat.to(z.dtype), ((z.double() - alpha * x_hat) / sigma).to(z.dtype)


@pytest.mark.parametrize("spacing", ["logsnr", "time", "edm"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(name, spacing):
    """Given the exact denoiser a sampler reproduces the data's mean, and its variance up to the discretisation
    loss that the exact chain (``gaussian_retention``) predicts; that loss vanishes as the steps grow."""
    torch.set_num_threads(1)
    sampler = components.build("sampler", {"name": name, "steps": 128, "spacing": spacing})
    schedule = components.build("schedule", {"name": "shifted_cosine", "resolution": 128})
    out = sampler.sample(exact_denoiser, schedule, (20000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    out = out.double()
    kept = gaussian_retention(sampler, schedule, S)
    assert 0.5 < kept <= 1.0
    assert out.mean().item() == pytest.approx(MU, abs=0.01)
    assert out.var().item() == pytest.approx(kept * S**2, rel=0.05)  # SE of a variance at n = 2e4: 1 %
    fine = components.build("sampler", {"name": name, "steps": 8192, "spacing": spacing})
    assert gaussian_retention(fine, schedule, S) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_contract(name, tmp_path, monkeypatch):
    """Every metric's ``compute`` runs on a tiny context and returns its declared outputs (SWD adds a value per
    pyramid level), each a finite number or None with the reason, and nothing it does not declare."""
    from metric_context import cpu_context

    monkeypatch.delenv("HARNESS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    stats = {"train_images_per_s": 50.0, "train_seconds_per_step": 0.1, "sample_images_per_s": 80.0,
             "sample_seconds_per_step": 0.01, "train_peak_memory_bytes": 1e6, "sample_peak_memory_bytes": 1e6,
             "batch_size": 4, "sampler_steps": 8}  # fmt: skip
    ctx = cpu_context(
        network=components.build("network", {"name": "uvit", "preset": "tiny", "resolution": 32}).eval(),
        samples=lambda: images[:12],
        reference=images[12:],
        cache_dir=tmp_path,
        stats=stats,
    )
    metric = METRICS[name]()
    values = metric.compute(ctx)
    assert values, "a metric returns at least one value"
    for value in values:
        assert value.name in metric.outputs or value.name.startswith(f"{name}_"), value.name
        assert value.value is None and value.attrs.get("reason") or math.isfinite(value.value), value
    assert {v.name for v in values} >= set(metric.outputs)
    assert {v.name for v in values} <= set(metric.output_names(32))  # what the objective check reads


def test_fidelity_values_are_one_scalar_and_one_row_per_std():
    from harness.metrics.fidelity import FIDELITY_STDS, GUARD_STD, fidelity_values

    values = fidelity_values({"name": "cosine"}, {"name": "ddim", "steps": 24, "spacing": "time"})
    head, rows = values[0], values[1:]
    assert head.name == "sampler_fidelity" and head.step is None and head.value == pytest.approx(0.585, abs=1e-3)
    assert [r.step for r in rows] == list(range(len(FIDELITY_STDS)))
    assert [r.attrs["std"] for r in rows] == list(FIDELITY_STDS)
    assert rows[FIDELITY_STDS.index(GUARD_STD)].value == head.value
