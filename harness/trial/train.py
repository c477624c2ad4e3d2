"""The training loop: AdamW with linear warm-up, gradient clipping, EMA of weights, bf16 autocast on CUDA,
optional torch.compile, checkpoints with automatic resume, a loss curve, a progress bar.

A non-finite loss raises ``Diverged`` with the step; the runner records the trial as failed.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from components.denoiser import Denoiser
from harness import faults
from harness.config.models import TrainSpec
from harness.errors import Diverged
from harness.metrics import LoadMeter, PeakMemory, ThroughputMeter


@dataclass
class TrainResult:
    ema: nn.Module  # EMA copy of the backbone (eval mode)
    steps: int  # steps done in total
    resumed_from: int  # step of the checkpoint this run started from (0 = fresh)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the last point)
    stats: dict[str, Any] = field(default_factory=dict)


def to_float(images: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


class Ema:
    """EMA of weights with the usual warm-up, decay_t = min(decay, (1 + t) / (10 + t)), so that short runs
    do not evaluate (mostly) initial weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._params = list(self.model.parameters())  # walked once: module trees are deep, steps are many
        self._buffers = list(self.model.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, params: list[Tensor] | None = None) -> None:
        """One EMA step towards ``model`` (``params``: its parameters, listed once by the caller)."""
        d = min(self.decay, (1 + step) / (10 + step))
        params = list(model.parameters()) if params is None else params
        torch._foreach_lerp_(self._params, [p.detach() for p in params], 1 - d)  # = e.lerp_(p, 1 - d) for each
        for e, b in zip(self._buffers, model.buffers(), strict=True):
            e.copy_(b)


class GradClip:
    """Gradient clipping that records how often it acts.

    ``absolute``: clip the global norm at ``threshold`` (the usual ``clip_grad_norm_``). Its effect depends on
    the loss's scale: the multiscale loss is about 1/43 of the eps-MSE at 64 px, so a fixed threshold clips the
    arms of a loss ablation at very different rates. ``relative`` (default): clip at ``threshold`` x the running
    mean of the previous steps' norms (an EMA, bias-corrected; cf. AutoClip, Seetharaman et al. 2020): scaling
    the loss scales every norm and the threshold alike, so every loss is clipped at the same steps.
    """

    DECAY = 0.98  # EMA of the global grad norm, about 50 steps

    def __init__(self, threshold: float | None, mode: str):
        self.threshold, self.mode = threshold, mode
        self.ema, self.seen, self.clipped = 0.0, 0, 0

    def limit(self) -> float:
        if self.mode == "absolute":
            return float(self.threshold)
        if self.seen == 0:
            return float("inf")
        return float(self.threshold) * self.ema / (1 - self.DECAY**self.seen)

    def __call__(self, parameters) -> None:
        if self.threshold is None:
            return
        limit = self.limit()
        norm = float(nn.utils.clip_grad_norm_(parameters, limit))
        self.clipped += int(norm > limit)
        self.ema, self.seen = self.DECAY * self.ema + (1 - self.DECAY) * norm, self.seen + 1

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "seen": self.seen, "clipped": self.clipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.seen, self.clipped = state["ema"], state["seen"], state["clipped"]


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    faults.point("checkpoint_write", step=obj.get("step"))
    os.replace(tmp, path)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    denoiser: Denoiser,
    images: Tensor,
    labels: Tensor | None,
    num_classes: int,
    cfg: TrainSpec,
    lr: float,
    warmup_steps: int,
    device: torch.device,
    checkpoint_dir: Path | None,
    seed: int,
    progress: bool = True,
) -> TrainResult:
    """Train ``denoiser.network`` on ``images`` (uint8 [N, C, H, W], on ``device``) for ``cfg.steps``.

    ``cfg`` is the trial's ``train`` section; ``lr`` and ``warmup_steps`` its recipe with ``auto`` resolved
    (``harness.trial.recipes``). Resumes from ``checkpoint_dir/latest.pt`` when present.
    """
    network = denoiser.network
    params = list(network.parameters())  # once: every step clips, steps and averages them
    steps, batch = cfg.steps, cfg.batch_size
    opt = torch.optim.AdamW(  # fused: one kernel for every parameter on CUDA (same update, fewer launches)
        params,
        lr=lr,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda",
    )
    warmup = warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    ema = Ema(network, cfg.ema_decay)
    clip = GradClip(cfg.grad_clip, cfg.grad_clip_mode)
    data_gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    curve: list[tuple[int, float]] = []
    running, count = 0.0, 0  # loss summed since the last curve point; checkpointed, so a resume repeats it
    start = 0
    ckpt = checkpoint_dir / "latest.pt" if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        network.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(data_gen, state["rng"])
        clip.load_state_dict(state["grad_clip"])
        start, curve = state["step"], list(state["curve"])
        running, count = state.get("running", (0.0, 0))

    def save(step: int) -> None:
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "model": network.state_dict(),
                "ema": ema.model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "rng": _rng_state(data_gen),
                "curve": curve,
                "grad_clip": clip.state_dict(),
                "running": (running, count),
            },
            ckpt,
        )

    forward = torch.compile(denoiser.loss) if cfg.compile else denoiser.loss
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    meter = ThroughputMeter(device, warmup=min(5, max(0, steps - start - 1)))
    network.train()
    n = images.shape[0]
    wall0, load = time.perf_counter(), LoadMeter()  # the machine load the throughput was measured under
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="train", leave=False)
    with PeakMemory(device) as memory:
        for step in bar:
            idx = torch.randint(0, n, (batch,), generator=data_gen).to(device)
            with meter.step(batch):
                x = to_float(images[idx])
                y = None
                if num_classes > 0 and labels is not None:
                    y = labels[idx].clone()
                    drop = torch.rand(batch, generator=data_gen).to(device) < cfg.label_dropout
                    y[drop] = num_classes  # the null label
                with autocast:
                    loss = forward(x, y).mean()
                if not torch.isfinite(loss):
                    raise Diverged(f"non-finite loss ({loss.item()}) at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                clip(params)
                opt.step()
                sched.step()
                ema.update(network, step, params)
            running, count = running + loss.item(), count + 1
            done = step + 1
            if done % cfg.log_every == 0 or done == steps:
                curve.append((done, running / count))
                running, count = 0.0, 0
                ips = meter.images_per_s
                bar.set_postfix(loss=f"{curve[-1][1]:.4f}", img_s=f"{ips:.1f}" if ips else "-")
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps:
                save(done)
    save(steps)
    stats = {
        "train_images_per_s": meter.images_per_s,
        "train_seconds_per_step": meter.seconds_per_step,
        "train_peak_memory_bytes": memory.peak_bytes,
        "train_peak_memory_method": memory.method,
        "wall_s_train": time.perf_counter() - wall0,
        **load.stats("train"),  # train_other_load_cores, train_torch_threads, train_cpu_count
        "batch_size": batch,
        "grad_clip_fraction": clip.clipped / steps,
        "grad_clip": {"mode": cfg.grad_clip_mode, "threshold": cfg.grad_clip},
    }
    return TrainResult(ema=ema.model, steps=steps, resumed_from=start, curve=curve, stats=stats)
