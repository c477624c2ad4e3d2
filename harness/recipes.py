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

from typing import Any

import components

LR_TIMES_WIDTH = 0.192  # lr x core width: 2e-3 at width 96 (small presets on CPU) -> 2.5e-4 at 768 (base)
WARMUP_FRACTION = 0.1  # warm-up steps as a fraction of the run
WARMUP_MAX = 5000  # ... at most this many steps


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """{lr, warmup_steps, lr_rule, warmup_rule} of a resolved trial config (``auto`` resolved)."""
    train = config["train"]
    out: dict[str, Any] = {"lr": train["lr"], "warmup_steps": train["warmup_steps"]}
    out["lr_rule"] = out["warmup_rule"] = "given in the study file"
    if train["lr"] == "auto":
        width = components.validate("network", config["model"]).core_width()
        out["lr"] = LR_TIMES_WIDTH / width
        out["lr_rule"] = f"auto: {LR_TIMES_WIDTH} / core width {width}"
    if train["warmup_steps"] == "auto":
        out["warmup_steps"] = min(WARMUP_MAX, round(WARMUP_FRACTION * train["steps"]))
        out["warmup_rule"] = f"auto: {WARMUP_FRACTION:g} x {train['steps']} steps, at most {WARMUP_MAX}"
    return out


def train_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config's ``train`` section with ``auto`` replaced by numbers (what the training loop reads)."""
    found = recipe(config)
    return {**config["train"], "lr": found["lr"], "warmup_steps": found["warmup_steps"]}


def recipe_values(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Metric rows ``lr`` and ``warmup_steps`` with the rule that produced each."""
    found = recipe(config)
    warmup = {"rule": found["warmup_rule"]}
    return [
        {"name": "lr", "value": found["lr"], "unit": "1", "attrs": {"rule": found["lr_rule"]}},
        {"name": "warmup_steps", "value": found["warmup_steps"], "unit": "step", "attrs": warmup},
    ]
