"""Training recipes that scale with the model: ``train.lr: auto`` and ``train.warmup_steps: auto``.

A fixed learning rate tuned on a CPU-sized model diverges on a paper-sized one (issue 12: lr 1e-3 on a 116 M
parameter U-ViT trained colour fields). Under Adam the stable learning rate of hidden layers falls as 1/fan-in
(Yang et al. 2022, muP, Table 3), and published diffusion recipes follow it roughly: DiT-B (width 768) 1e-4,
U-ViT (width 512-1152) 2e-4 ... 1e-4. So ``auto`` sets

    lr = LR_TIMES_WIDTH / core width

with the network's core width (the U-ViT's transformer width, the U-Net's bottom width: where simple diffusion
puts the capacity) and LR_TIMES_WIDTH calibrated on the CPU default study (width 96). The warm-up is a fraction
of the run. The numbers are recorded with every trial (metrics ``lr`` and ``warmup_steps``, attrs ``rule``), and
``--dry-run`` prints them. A number in the study file is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.config import TrialConfig

LR_TIMES_WIDTH = 0.192  # lr x core width: 2e-3 at width 96 (small presets on CPU) -> 2.5e-4 at 768 (base)
WARMUP_FRACTION = 0.1  # warm-up steps as a fraction of the run
WARMUP_MAX = 5000  # ... at most this many steps


@dataclass(frozen=True)
class Recipe:
    """The learning rate and warm-up a trial trains with, and the rule that gave each."""

    lr: float  # peak AdamW learning rate
    warmup_steps: int  # linear warm-up, optimizer steps
    lr_rule: str
    warmup_rule: str


def recipe(config: TrialConfig) -> Recipe:
    """The trial's learning rate and warm-up, ``auto`` resolved (numbers in the study file are used as given)."""
    train = config.train
    lr, lr_rule = train.lr, "given in the study file"
    warmup, warmup_rule = train.warmup_steps, "given in the study file"
    if lr == "auto":
        width = config.model.core_width()
        lr, lr_rule = LR_TIMES_WIDTH / width, f"auto: {LR_TIMES_WIDTH} / core width {width}"
    if warmup == "auto":
        warmup = min(WARMUP_MAX, round(WARMUP_FRACTION * train.steps))
        warmup_rule = f"auto: {WARMUP_FRACTION:g} x {train.steps} steps, at most {WARMUP_MAX}"
    return Recipe(lr=lr, warmup_steps=warmup, lr_rule=lr_rule, warmup_rule=warmup_rule)


def recipe_values(found: Recipe) -> list[dict[str, Any]]:
    """Metric rows ``lr`` and ``warmup_steps`` with the rule that produced each."""
    return [
        {"name": "lr", "value": found.lr, "unit": "1", "attrs": {"rule": found.lr_rule}},
        {"name": "warmup_steps", "value": found.warmup_steps, "unit": "step", "attrs": {"rule": found.warmup_rule}},
    ]
