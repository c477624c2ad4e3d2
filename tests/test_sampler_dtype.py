"""``eval.sampler_dtype``: the evaluation sampler's arithmetic, opt-in bf16 on the CPU, recorded with the trial."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import components
from components.denoiser import Denoiser
from harness.config.models import EvalSpec
from harness.config.trial import Evaluation
from harness.trial.events import TrialEvents
from harness.trial.runner import SampleCache, sampler_dtype


def sample(choice: str) -> tuple[torch.Tensor, dict, set[torch.dtype]]:
    """(uint8 samples, the runner's stats, the dtypes the network's linear layers computed in)."""
    torch.manual_seed(0)
    net = components.build("network", {"name": "uvit", "preset": "tiny", "resolution": 16}).eval()
    with torch.no_grad():  # a trained-like network: the output layer is zero at initialisation
        for p in net.parameters():
            p.add_(torch.randn_like(p), alpha=0.05)
    schedule = components.build("schedule", {"name": "cosine"})
    den = Denoiser(net, schedule, components.build("parametrization", "v"), components.build("loss", "mse"))
    seen: set[torch.dtype] = set()
    for m in net.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    sampler = components.validate("sampler", {"name": "ddim", "steps": 4})
    cfg = Evaluation(num_samples=4, batch_size=4, sampler=sampler, metrics=(), fid={}, sampler_dtype=choice)
    stats: dict = {}
    images = SampleCache(den, cfg, (3, 16, 16), torch.device("cpu"), 7, stats, TrialEvents())()
    return images, stats, seen


def test_auto_is_bf16_on_cuda_and_float32_on_the_cpu():
    assert sampler_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert sampler_dtype("auto", torch.device("cpu")) == "float32"
    assert sampler_dtype("bfloat16", torch.device("cpu")) == "bfloat16"
    assert sampler_dtype("float32", torch.device("cuda")) == "float32"


def test_bf16_on_the_cpu_computes_in_bf16_close_to_float32_and_is_recorded():
    auto, auto_stats, auto_seen = sample("auto")
    fp32, fp32_stats, fp32_seen = sample("float32")
    bf16, bf16_stats, bf16_seen = sample("bfloat16")
    assert torch.equal(auto, fp32)  # auto on the CPU is float32: the same images
    assert auto_seen == fp32_seen == {torch.float32} and bf16_seen == {torch.bfloat16}
    assert (auto_stats["sample_dtype"], fp32_stats["sample_dtype"], bf16_stats["sample_dtype"]) == (
        "float32",
        "float32",
        "bfloat16",
    )
    assert bf16.dtype == torch.uint8 and bf16.shape == fp32.shape
    diff = (bf16.float() - fp32.float()).abs()
    assert 0 < diff.mean() < 4.0  # other numerics (bf16 has 8 bits of mantissa), the same images to a few levels


def test_a_study_file_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="sampler_dtype"):
        EvalSpec(sampler_dtype="float16")
