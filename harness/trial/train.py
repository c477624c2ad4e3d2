"""The training loop: AdamW with linear warm-up, gradient clipping, EMA of weights, bf16 autocast on CUDA,
optional torch.compile, checkpoints with automatic resume, a loss curve; its progress goes to ``events``
(``harness.trial.events``: a step counter and the loss points, for the console, Optuna and TensorBoard).

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

from components.denoiser import Denoiser
from harness import faults
from harness.config.models import TrainSpec
from harness.errors import Diverged, TrialFailed
from harness.metrics import LoadMeter, PeakMemory, ThroughputMeter
from harness.rows import ImageRows
from harness.trial.events import TrialEvents
from harness.trial.parallel import Parallel


@dataclass
class TrainResult:
    ema: nn.Module  # EMA copy of the backbone (eval mode)
    steps: int  # steps done in total
    resumed_from: int  # step of the checkpoint this run started from (0 = fresh)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the last point)
    stats: dict[str, Any] = field(default_factory=dict)


class TrainStep(nn.Module):
    """The per-example training loss at given times and noise, as a module: what DDP wraps (it hooks a module's
    forward) and ``train.compile`` compiles."""

    def __init__(self, denoiser: Denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: Tensor, t: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.denoiser.loss_at(x, t, eps, labels)  # [B]


def noise_seed(seed: int) -> int:
    """Seed of the training noise stream (times and eps), apart from the torch generator that dropout draws from."""
    return (seed * 1_000_003 + 1) % 2**63


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


def _rng_state(gen: torch.Generator, noise: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state(), "noise": noise.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, noise: torch.Generator, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "noise" in state:  # checkpoints of earlier versions drew the noise from the torch generator
        noise.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    denoiser: Denoiser,
    images: Tensor | ImageRows,
    labels: Tensor | None,
    num_classes: int,
    cfg: TrainSpec,
    lr: float,
    warmup_steps: int,
    device: torch.device,
    checkpoint_dir: Path | None,
    seed: int,
    events: TrialEvents | None = None,
    parallel: Parallel | None = None,
) -> TrainResult:
    """Train ``denoiser.network`` on ``images`` (uint8 [N, C, H, W]: a tensor, or the training split's
    ``ImageRows`` whose batches arrive on ``device``) for ``cfg.steps``.

    ``cfg`` is the trial's ``train`` section; ``lr`` and ``warmup_steps`` its recipe with ``auto`` resolved
    (``harness.trial.recipes``). Resumes from ``checkpoint_dir/latest.pt`` when present. ``events`` hears
    the phase, every step (``count``) and every loss point (``log``). ``parallel``: this process's rank of a
    torchrun job (``harness.trial.parallel``): the global batch is shared out, rank 0 writes the checkpoints,
    every rank reads them.
    """
    events = events or TrialEvents()
    parallel = parallel or Parallel()
    network = denoiser.network
    params = list(network.parameters())  # once: every step clips, steps and averages them
    steps, batch = cfg.steps, cfg.batch_size
    local_batch = parallel.per_device_batch(batch)
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
    data_gen = torch.Generator(device="cpu").manual_seed(seed)  # indices and label drops of the global batch
    noise_gen = torch.Generator(device=device).manual_seed(noise_seed(seed))  # times and noise of the global batch
    torch.manual_seed(parallel.rank_seed(seed))  # dropout: each rank its own masks
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
        rng = state.get("rng_by_rank", [state["rng"]])
        _set_rng_state(data_gen, noise_gen, rng[parallel.rank] if parallel.rank < len(rng) else rng[0])
        clip.load_state_dict(state["grad_clip"])
        start, curve = state["step"], list(state["curve"])
        running, count = state.get("running", (0.0, 0))
    starts = parallel.gather(start)
    if len(set(starts)) > 1:  # every rank sees the same list: all of them stop here
        raise TrialFailed(
            f"the ranks found different checkpoints in {checkpoint_dir} (steps by rank: {starts}); the results "
            "folder must be shared by every machine of a torchrun job (HARNESS_RESULTS_DIR)"
        )

    def save(step: int) -> None:
        if ckpt is None:
            return
        rng_by_rank = parallel.gather(_rng_state(data_gen, noise_gen))  # dropout streams differ by rank
        if not parallel.is_main:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "model": network.state_dict(),
                "ema": ema.model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "rng": rng_by_rank[0],
                "rng_by_rank": rng_by_rank,
                "curve": curve,
                "grad_clip": clip.state_dict(),
                "running": (running, count),
            },
            ckpt,
        )

    step_loss = parallel.wrap(TrainStep(denoiser), device)
    forward = torch.compile(step_loss) if cfg.compile else step_loss
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    meter = ThroughputMeter(device, warmup=min(5, max(0, steps - start - 1)))
    network.train()
    n = images.shape[0]
    wall0, load = time.perf_counter(), LoadMeter()  # the machine load the throughput was measured under
    shape = (batch, *images.shape[1:])
    events.phase("training", start=start, total=steps, batch=batch)
    with PeakMemory(device) as memory:
        for step in range(start, steps):
            idx = parallel.shard(torch.randint(0, n, (batch,), generator=data_gen))  # [b], host: indexing moves it
            with meter.step(batch):
                x = to_float(images[idx])
                y = None
                if num_classes > 0 and labels is not None:
                    y = labels[idx].clone()
                    drop = parallel.shard(torch.rand(batch, generator=data_gen)).to(device) < cfg.label_dropout
                    y[drop] = num_classes  # the null label
                t = parallel.shard(torch.rand(batch, device=device, generator=noise_gen))  # [b]
                eps = parallel.shard(torch.randn(shape, device=device, generator=noise_gen))  # [b, C, H, W]
                with autocast:
                    loss = forward(x, t, eps, y).mean()
                seen = parallel.mean(loss.detach())  # over the global batch: the curve's, every rank stops alike
                if not torch.isfinite(seen):
                    raise Diverged(f"non-finite loss ({seen.item()}) at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                clip(params)
                opt.step()
                sched.step()
                ema.update(network, step, params)
            running, count = running + seen.item(), count + 1
            done = step + 1
            if done % cfg.log_every == 0 or done == steps:
                curve.append((done, running / count))
                running, count = 0.0, 0
                events.log(done, curve[-1][1], meter.images_per_s)
            events.count(done, steps)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps:
                save(done)
    save(steps)
    by_rank = parallel.gather({"train_images_per_s": meter.images_per_s, "train_peak_memory_bytes": memory.peak_bytes})
    stats = {
        "train_images_per_s": meter.images_per_s,
        "train_seconds_per_step": meter.seconds_per_step,
        "train_peak_memory_bytes": memory.peak_bytes,
        "train_peak_memory_method": memory.method,
        "wall_s_train": time.perf_counter() - wall0,
        **load.stats("train"),  # train_other_load_cores, train_torch_threads, train_cpu_count
        "batch_size": batch,
        "world_size": parallel.world_size,
        "per_device_batch_size": local_batch,
        "by_rank": by_rank,  # each rank's own images/s (of the global batch: the ranks step together) and memory
        "grad_clip_fraction": clip.clipped / steps,
        "grad_clip": {"mode": cfg.grad_clip_mode, "threshold": cfg.grad_clip},
    }
    return TrainResult(ema=ema.model, steps=steps, resumed_from=start, curve=curve, stats=stats)
