"""The training loop's parts: gradient clipping that does not depend on the loss's scale."""

from __future__ import annotations

import torch

from harness.trial.train import GradClip


def clip_run(mode: str, threshold: float, scale: float, steps: int = 200) -> tuple[int, list[torch.Tensor]]:
    """Feed the same gradient sequence (times ``scale``, with a spike every 25 steps) through a GradClip;
    returns (steps clipped, gradients after clipping)."""
    g = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.zeros(64))
    clip, out = GradClip(threshold, mode), []
    for step in range(steps):
        grad = torch.randn(64, generator=g) * (1.0 + 0.5 * torch.rand(1, generator=g))
        if step % 25 == 24:
            grad = grad * 8
        param.grad = grad * scale
        clip([param])
        out.append(param.grad.clone())
    return clip.clipped, out


def test_relative_clipping_acts_at_the_same_steps_whatever_the_loss_scale():
    """Issue 10: the multiscale loss is about 1/43 of the eps-MSE at 64 px; scaled gradients are clipped at the
    same steps and by the same factors under the relative rule."""
    n1, g1 = clip_run("relative", 2.0, 1.0)
    n2, g2 = clip_run("relative", 2.0, 1 / 43)
    assert n1 == n2 == 8  # the spikes, and nothing else
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a / 43, b, rtol=1e-4, atol=1e-9)


def test_absolute_clipping_depends_on_the_loss_scale():
    n1, _ = clip_run("absolute", 8.0, 1.0)  # typical norm here: sqrt(64) x 1.25 = 10
    n2, _ = clip_run("absolute", 8.0, 1 / 43)
    assert n1 > 100 and n2 == 0  # the same threshold clips one arm almost always and the other never


def test_no_clipping_and_state_round_trip():
    n, grads = clip_run("relative", None, 1.0)  # type: ignore[arg-type]
    assert n == 0
    clip = GradClip(2.0, "relative")
    param = torch.nn.Parameter(torch.zeros(4))
    for _ in range(5):
        param.grad = torch.ones(4)
        clip([param])
    again = GradClip(2.0, "relative")
    again.load_state_dict(clip.state_dict())
    assert again.limit() == clip.limit() and again.state_dict() == clip.state_dict()


def test_auto_recipe_scales_the_learning_rate_with_the_core_width():
    """lr: auto = LR_TIMES_WIDTH / core width (the U-ViT's transformer, the U-Net's bottom); warm-up 10 %."""
    from harness.config import resolve
    from harness.trial.recipes import LR_TIMES_WIDTH, recipe

    def config(model, **train):
        dataset = {"name": "shapes", "resolution": model.pop("resolution", 32)}
        train = {"lr": "auto", "warmup_steps": "auto", "steps": 300, **train}
        return resolve({"name": "x", "dataset": dataset, "model": model, "train": train})

    small = recipe(config({"name": "uvit", "preset": "small", "resolution": 64}))
    base = recipe(config({"name": "uvit", "preset": "base", "resolution": 64}))
    unet = recipe(config({"name": "unet", "preset": "base", "resolution": 64}))
    assert small.lr == LR_TIMES_WIDTH / 96 and base.lr == unet.lr == LR_TIMES_WIDTH / 768
    assert small.lr / base.lr == 8 and "core width 768" in base.lr_rule
    assert small.warmup_steps == 30 and recipe(config({"name": "uvit"}, steps=10**6)).warmup_steps == 5000
    given = recipe(config({"name": "uvit"}, lr=0.01, warmup_steps=7))
    assert given.lr == 0.01 and given.warmup_steps == 7
