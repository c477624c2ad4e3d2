"""What a study file may say: ``StudySpec`` (the whole file) and ``TrialSpec`` (one trial's sections, as written).

A study file is YAML with these sections (unknown keys are errors everywhere):
``name``, ``storage``, ``seed``, ``dataset``, ``model``, ``diffusion`` (``schedule``, ``parametrization``,
``loss``), ``train``, ``eval``, ``search``, ``objectives``. Component sections (and each entry of
``eval.metrics``) are component specs: a name, or a mapping with ``name`` and parameters. They are validated
through their registries when a ``TrialSpec`` is resolved into a typed ``TrialConfig`` (``harness.config.trial``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ComponentSpec = str | dict[str, Any]


class Strict(BaseModel):
    # allow_inf_nan=False: ``1e400`` (inf) and ``.nan`` are errors wherever a number is expected
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


PositiveInt = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy's and Optuna's samplers take seeds below 2^32
Beta = Annotated[float, Field(ge=0, lt=1)]  # an AdamW moment decay


class DiffusionSpec(Strict):
    schedule: ComponentSpec = {"name": "shifted_cosine", "base_resolution": 64}
    parametrization: ComponentSpec = "v"
    loss: ComponentSpec = "mse"


class TrainSpec(Strict):
    steps: PositiveInt = 200  # optimizer steps
    batch_size: PositiveInt = 32  # images per step
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"  # peak AdamW lr; auto: scaled (harness/recipes.py)
    warmup_steps: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"  # linear warm-up; auto: 10 % of steps
    weight_decay: float = Field(0.0, ge=0)
    betas: list[Beta] = Field([0.9, 0.99], min_length=2, max_length=2)
    grad_clip: float | None = Field(2.0, gt=0)  # relative: x running mean grad norm; absolute: norm; null: off
    grad_clip_mode: Literal["relative", "absolute"] = "relative"  # relative is loss-scale free (docs/training.md)
    ema_decay: float = Field(0.999, ge=0, lt=1)  # EMA of weights; the EMA model is evaluated
    label_dropout: float = Field(0.1, ge=0, le=1)  # class-conditional only: p(label -> null), for guidance
    holdout_fraction: float = Field(0.1, gt=0, lt=1)  # held-out images for validation loss and FID refs
    checkpoint_every: int = Field(100, ge=0)  # steps; 0 = only at the end
    log_every: PositiveInt = 10  # steps between loss-curve points
    compile: bool = False  # torch.compile the network
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: Seed = 0  # the trial's seed; search over it for replicates


class EvalSpec(Strict):
    num_samples: PositiveInt = 256  # generated images for FID/KID/SWD
    batch_size: PositiveInt = 64  # sampling batch
    sampler: ComponentSpec = {"name": "ddim", "steps": 64}  # spacing logsnr: passes the fidelity guard
    metrics: list[ComponentSpec] = ["swd", "flops", "throughput", "memory", "mfu"]  # names or {name, ...params}
    fid: dict[str, Any] = {}  # options of FID/KID (mode, weights, num_reference)
    val_buckets: PositiveInt = 6  # logSNR buckets of the validation loss
    val_repeats: PositiveInt = 2  # noise draws per held-out image
    grid_size: PositiveInt = 16  # images in the saved sample grid
    # class-conditional trials (dataset labels: true) only: balanced = sample i is drawn for class i mod the number
    # of classes (every class equally often; the sampler's guidance_scale applies); unconditional = the null label
    # (unconditional samples from the same network; guidance has nothing to act on)
    labels: Literal["balanced", "unconditional"] = "balanced"
    save_samples: bool = False  # also write every generated image as a PNG (trial folder, samples/)
    # the sampler's arithmetic: auto = bf16 autocast on CUDA, float32 on the CPU; bfloat16 = bf16 autocast on
    # any device (opt-in on the CPU: about 2x faster with AMX, different numerics); float32 = no autocast
    sampler_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # torch.compile the network for sampling (CUDA: mode reduce-overhead, i.e. CUDA graphs); opt-in: it pays on a
    # GPU with many sampler steps, costs a compile per trial (and per batch shape), same arithmetic up to fusion
    sampler_compile: bool = False


class RangeSpec(Strict):
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError("low must be smaller than high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        return all(float(v).is_integer() for v in (self.low, self.high, self.step or 0.5))


class SearchSpec(Strict):
    sampler: Literal["grid", "tpe", "random"] = "grid"
    n_trials: PositiveInt | None = None  # grid: default all cells; tpe/random: required
    space: dict[str, list[Any] | RangeSpec] = {}


class Objective(Strict):
    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"


class TrialSpec(Strict):
    """One trial's sections as the study file writes them (the search space merged in), before resolution."""

    name: str = Field(min_length=1, max_length=512)  # the width of the name columns in the database
    storage: str | None = None
    seed: Seed = 0  # study seed: data, sampler of the search, base of trial seeds
    dataset: ComponentSpec = {"name": "shapes", "resolution": 32}
    model: ComponentSpec = {"name": "uvit", "preset": "small"}
    diffusion: DiffusionSpec = DiffusionSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()


class StudySpec(TrialSpec):
    search: SearchSpec = SearchSpec()
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(metric="swd")], min_length=1)

    def base_config(self) -> dict[str, Any]:
        """The trial config without search and objectives, as plain JSON-able data."""
        return self.model_dump(mode="json", exclude={"search", "objectives"})
