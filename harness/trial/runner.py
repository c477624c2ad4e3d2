"""The trial runner: one ``TrialConfig`` in, one result out (no Optuna, no database in here).

Seeds from the study seed and the trial's ``train.seed``; builds the components; trains; evaluates
(a sample grid PNG, validation loss per logSNR bucket on held-out data, the metrics of ``eval.metrics``).
The trial's folder gets its resolved config as ``config.yaml`` first; what the trial is doing goes to its
``TrialEvents`` (``harness.trial.events``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from components.denoiser import Denoiser
from harness.config import TrialConfig
from harness.config.models import EvalSpec
from harness.errors import TrialFailed
from harness.metrics import EvalContext, LoadMeter, PeakMemory, ThroughputMeter
from harness.metrics.calibration import calibration_values
from harness.metrics.features import write_folder
from harness.metrics.fidelity import fidelity_values
from harness.rows import ImageRows, place
from harness.trial.config_file import write_config_file
from harness.trial.events import TrialEvents
from harness.trial.parallel import Parallel
from harness.trial.recipes import recipe, recipe_values
from harness.trial.train import to_float, train


@dataclass
class TrialResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {name, value, step, unit, attrs}
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (kind, path)
    resumed_from: int = 0


def derive_seed(study_seed: int, trial_seed: int) -> int:
    """A 31-bit seed from (study seed, trial seed): replicates differ, reruns repeat."""
    digest = hashlib.sha256(f"{study_seed}:{trial_seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def config_hash(config: TrialConfig) -> str:
    """Identity of a trial's work (checkpoints are kept per config, so a retried trial resumes): a hash of the
    resolved config as stored, without the storage URL."""
    relevant = {k: v for k, v in config.to_json().items() if k not in ("storage",)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def build_denoiser(config: TrialConfig, num_classes: int, device: torch.device) -> Denoiser:
    network = config.model.model_copy(update={"num_classes": num_classes}).instantiate().to(device)
    diffusion = config.diffusion
    return Denoiser(
        network,
        diffusion.schedule.instantiate(),
        diffusion.parametrization.instantiate(),
        diffusion.loss.instantiate(),
    ).to(device)


@torch.no_grad()
def validation_loss(denoiser: Denoiser, images: torch.Tensor, cfg: EvalSpec, seed: int) -> list[dict]:
    """Unweighted eps-MSE on held-out images (comparable across loss ablations), overall and per logSNR
    bucket (fixed edges over [-15, 15], open at both ends); t is stratified over [0, 1]. The images are noised
    by the denoiser itself (``Denoiser.eps_hat_at``), as in training."""
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    device = images.device
    net = denoiser.network
    was_training = net.training
    net.eval()
    edges = torch.linspace(-15.0, 15.0, cfg.val_buckets + 1)
    edges[0], edges[-1] = -float("inf"), float("inf")
    losses, logsnrs = [], []
    for _ in range(cfg.val_repeats):
        for chunk in images.split(cfg.batch_size):
            b = chunk.shape[0]
            t = ((torch.arange(b) + torch.rand(b, generator=gen)) / b)[torch.randperm(b, generator=gen)]
            eps = torch.randn(chunk.shape, generator=gen)
            eps_hat, logsnr = denoiser.eps_hat_at(to_float(chunk), t.to(device), eps.to(device))
            if not torch.isfinite(eps_hat).all():
                raise TrialFailed("non-finite network output on held-out data (validation loss)")
            losses.append((eps_hat - eps.to(device)).pow(2).flatten(1).mean(1).cpu())
            logsnrs.append(logsnr.cpu())
    net.train(was_training)
    loss, lam = torch.cat(losses), torch.cat(logsnrs)
    out = [{"name": "val_loss", "value": loss.mean().item(), "attrs": {"n": int(loss.numel()), "loss": "eps_mse"}}]
    for i in range(cfg.val_buckets):
        mask = (lam >= edges[i]) & (lam < edges[i + 1])
        value = loss[mask].mean().item() if mask.any() else None
        attrs = {"logsnr_low": float(edges[i]), "logsnr_high": float(edges[i + 1]), "n": int(mask.sum())}
        out.append({"name": "val_loss_by_logsnr", "value": value, "step": i, "attrs": attrs})
    return out


def sampler_dtype(choice: str, device: torch.device) -> str:
    """What ``eval.sampler_dtype`` means on ``device``: ``bfloat16`` (autocast) or ``float32``."""
    if choice == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return choice


def compiled(denoiser: Denoiser, device: torch.device) -> Denoiser:
    """``denoiser`` with its network ``torch.compile``d for sampling (``eval.sampler_compile``): on CUDA in mode
    ``reduce-overhead`` (CUDA graphs: one launch per sampler step instead of one per kernel)."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    network = torch.compile(denoiser.network, mode=mode)
    return Denoiser(network, denoiser.schedule, denoiser.parametrization, denoiser.loss_fn)


def sample_labels(first: int, count: int, num_classes: int, choice: str, device) -> torch.Tensor | None:
    """Class labels [count] of evaluation samples ``first .. first + count - 1``: class i mod ``num_classes``
    (``eval.labels: balanced``), or None (the null label) for ``unconditional`` or an unconditional model."""
    if num_classes == 0 or choice == "unconditional":
        return None
    return torch.arange(first, first + count, device=device) % num_classes


class SampleCache:
    """Generates the evaluation samples once (uint8 [N, C, H, W]) and measures sampling speed; ``events``
    hears the ``sampling`` phase and the images done. A class-conditional network (``num_classes`` > 0) draws
    them for the classes ``eval.labels`` names (``sample_labels``)."""

    def __init__(
        self,
        denoiser: Denoiser,
        config: EvalSpec,
        shape,
        device,
        seed: int,
        stats: dict,
        events: TrialEvents,
        num_classes: int = 0,
    ):
        self.denoiser, self.config, self.shape, self.device, self.seed = denoiser, config, shape, device, seed
        self.stats, self.events, self.num_classes, self._images = stats, events, num_classes, None

    def __call__(self) -> torch.Tensor:
        if self._images is None:
            self._images = self._generate()
        return self._images

    def _generate(self) -> torch.Tensor:
        ev = self.config
        sampler = ev.sampler.instantiate()
        self.events.phase("sampling", images=ev.num_samples, steps=sampler.steps)
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 2)
        meter = ThroughputMeter(self.device, warmup=1)
        chunks, left = [], ev.num_samples
        wall0, load = time.perf_counter(), LoadMeter()  # the machine load the throughput was measured under
        dtype = sampler_dtype(ev.sampler_dtype, self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
        denoiser = compiled(self.denoiser, self.device) if ev.sampler_compile else self.denoiser
        with PeakMemory(self.device) as memory, autocast:
            while left > 0:
                b = min(left, ev.batch_size)
                with meter.step(b):
                    x = sampler.sample(
                        denoiser.predict,
                        denoiser.schedule,
                        (b, *self.shape),
                        generator=gen,
                        labels=sample_labels(ev.num_samples - left, b, self.num_classes, ev.labels, self.device),
                        device=self.device,
                    )
                if not torch.isfinite(x).all():
                    bad = int((~torch.isfinite(x)).sum())
                    raise TrialFailed(f"non-finite samples: {bad} of {x.numel()} values (a trial never scores them)")
                chunks.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
                left -= b
                self.events.count(ev.num_samples - left, ev.num_samples)
        steps = sampler.steps
        ips = meter.images_per_s or ev.num_samples / max(time.perf_counter() - wall0, 1e-9)
        self.stats.update(
            sample_images_per_s=ips,
            sample_seconds_per_step=(ev.batch_size / ips) / steps if ips else None,
            sample_peak_memory_bytes=memory.peak_bytes,
            sample_peak_memory_method=memory.method,
            wall_s_sample=time.perf_counter() - wall0,
            sampler_steps=steps,
            sample_dtype=dtype,
            sample_compiled=ev.sampler_compile,
            **load.stats("sample"),  # sample_other_load_cores, sample_torch_threads, sample_cpu_count
        )
        return torch.cat(chunks)


def holdout_fingerprint(dataset_fingerprint: str, hold_list: list[int]) -> str:
    """Identifies the held-out reference set: the dataset's content hash and the split's indices."""
    return hashlib.sha256(f"{dataset_fingerprint}:holdout:{hold_list}".encode()).hexdigest()


def run_trial(
    config: TrialConfig,
    workdir: Path,
    cache_dir: Path,
    events: TrialEvents | None = None,
    parallel: Parallel | None = None,
) -> TrialResult:
    """Train and evaluate one trial; ``workdir`` gets ``config.yaml``, the checkpoint and the sample grid;
    ``events`` hears each phase (``harness.trial.events``). Under torchrun (``parallel``) every rank trains
    its share of each batch and rank 0 alone evaluates: the other ranks return an empty result after training."""
    events = events or TrialEvents()
    parallel = parallel or Parallel()
    parallel.per_device_batch(config.train.batch_size)  # every rank refuses a batch that does not divide
    if parallel.is_main:
        write_config_file(config, workdir)
    with parallel.together():  # the ranks in step until training ends (harness.trial.parallel)
        return _run_trial(config, workdir, cache_dir, events, parallel)


def _run_trial(
    config: TrialConfig, workdir: Path, cache_dir: Path, events: TrialEvents, parallel: Parallel
) -> TrialResult:
    seed = derive_seed(config.seed, config.train.seed)
    device = pick_device(config.train.device)
    dataset = config.dataset.model_copy(update={"cache_dir": str(cache_dir)}).instantiate()
    train_list, hold_list = dataset.split(config.train.holdout_fraction, seed=config.seed)
    images = place(dataset.images, device)  # a memory map stays one: batches read their own rows
    train_idx, hold_idx = torch.tensor(train_list), torch.tensor(hold_list)
    labels = dataset.labels.to(device) if dataset.labels is not None else None
    torch.manual_seed(seed)  # before the network's initial weights: the same seed gives the same trial
    denoiser = build_denoiser(config, dataset.num_classes, device)
    found = recipe(config)
    trained = train(
        denoiser,
        ImageRows(images, train_idx, device),  # the training split, one batch gathered at a time
        labels[train_idx.to(device)] if labels is not None else None,
        dataset.num_classes,
        config.train,
        found.lr,
        found.warmup_steps,
        device,
        workdir / "checkpoint",
        seed,
        events,
        parallel,
    )
    parallel.out_of_step()  # only rank 0 goes on: its failures from here on are the trial's alone
    result = TrialResult(resumed_from=trained.resumed_from)
    if not parallel.is_main:
        return result
    result.artifacts.append(("checkpoint", str(workdir / "checkpoint" / "latest.pt")))
    result.metrics += [{"name": "train_loss", "value": v, "step": s} for s, v in trained.curve]
    result.metrics.append({"name": "resumed_from_step", "value": trained.resumed_from, "unit": "step"})
    result.metrics += [  # how the global batch was shared out (torchrun: one process per device)
        {"name": "world_size", "value": parallel.world_size, "unit": "processes"},
        {"name": "per_device_batch_size", "value": trained.stats["per_device_batch_size"], "unit": "images"},
    ]
    result.metrics += recipe_values(found)
    clip_attrs = {**trained.stats["grad_clip"], "steps": trained.steps}
    result.metrics.append(
        {
            "name": "grad_clip_fraction",
            "value": trained.stats["grad_clip_fraction"],
            "unit": "fraction",
            "attrs": clip_attrs,
        }
    )
    ema_denoiser = Denoiser(trained.ema, denoiser.schedule, denoiser.parametrization, denoiser.loss_fn)
    events.phase("validation", images=len(hold_list))
    result.metrics += validation_loss(ema_denoiser, dataset.images[hold_idx].to(device), config.eval, seed)
    shape = (dataset.channels, dataset.resolution, dataset.resolution)
    stats = dict(trained.stats)
    samples = SampleCache(ema_denoiser, config.eval, shape, device, seed, stats, events, dataset.num_classes)
    # deferred: torchvision imports torch._dynamo, about a second of start-up that only a trial needs
    from torchvision.utils import save_image

    grid = samples()[: config.eval.grid_size]
    events.samples(grid, trained.steps)
    grid_path = workdir / "samples.png"
    save_image(grid.float() / 255.0, grid_path, nrow=int(max(1, round(grid.shape[0] ** 0.5))))
    result.artifacts.append(("sample_grid", str(grid_path)))
    if config.eval.save_samples:
        result.artifacts.append(("samples", str(write_folder(samples(), workdir / "samples"))))
    ctx = EvalContext(
        network=trained.ema,
        image_shape=shape,
        device=device,
        dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        samples=samples,
        reference=dataset.images[hold_idx],
        dataset_fingerprint=holdout_fingerprint(dataset.fingerprint, hold_list),
        fid=config.eval.fid,
        seed=seed,
        cache_dir=cache_dir,
        stats=stats,
        reference_name="holdout",
    )
    values = fidelity_values(config.diffusion.schedule, config.eval.sampler)
    metrics = list(config.eval.metrics)
    events.phase("metrics", names=[m.name for m in metrics])
    for i, metric in enumerate(metrics):
        events.count(i, len(metrics), metric.name)
        values += metric.compute(ctx)
    result.metrics += [
        {"name": v.name, "value": v.value, "step": v.step, "unit": v.unit, "attrs": v.attrs} for v in values
    ]
    quality = [m.name for m in metrics if m.compares_samples]
    if quality:
        events.phase("calibration", names=quality)
    result.metrics += calibration_values(
        ctx, metrics, ImageRows(dataset.images, train_idx, torch.device("cpu")), config.eval.num_samples
    )
    return result
