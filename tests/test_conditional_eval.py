"""Class-conditional evaluation: the samples of a labelled trial are drawn for balanced classes, so the
sampler's classifier-free guidance acts on them; a guided sampler without labels is refused at load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import components
from components.denoiser import Denoiser
from harness.config.load import load_study
from harness.config.trial import Evaluation
from harness.errors import UsageError
from harness.trial.events import TrialEvents
from harness.trial.runner import SampleCache, sample_labels

ROOT = Path(__file__).resolve().parent.parent


def test_sample_labels_cycle_through_the_classes_across_batches() -> None:
    assert sample_labels(0, 4, 3, "balanced", "cpu").tolist() == [0, 1, 2, 0]
    assert sample_labels(4, 5, 3, "balanced", "cpu").tolist() == [1, 2, 0, 1, 2]  # continues from sample 4
    assert sample_labels(0, 4, 3, "unconditional", "cpu") is None
    assert sample_labels(0, 4, 0, "balanced", "cpu") is None  # an unconditional network has no classes


class Recorder(torch.nn.Module):
    """A network that predicts zero and remembers the labels of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[torch.Tensor | None] = []

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(None if labels is None else labels.clone())
        return torch.zeros_like(z)


def sample_with(labels: str, guidance: float, num_classes: int) -> list[torch.Tensor | None]:
    net = Recorder()
    den = Denoiser(
        net,
        components.build("schedule", {"name": "cosine"}),
        components.build("parametrization", "v"),
        components.build("loss", "mse"),
    )
    sampler = components.validate("sampler", {"name": "ddim", "steps": 2, "guidance_scale": guidance})
    cfg = Evaluation(num_samples=5, batch_size=3, sampler=sampler, metrics=(), fid={}, labels=labels)
    images = SampleCache(den, cfg, (3, 8, 8), torch.device("cpu"), 0, {}, TrialEvents(), num_classes)()
    assert images.shape == (5, 3, 8, 8)
    return net.calls


def test_a_labelled_trial_samples_balanced_classes_with_guidance() -> None:
    calls = sample_with("balanced", 2.0, 3)
    conditional = [c.tolist() for c in calls if c is not None]
    assert conditional == [[0, 1, 2]] * 2 + [[0, 1]] * 2  # two batches (3 + 2 samples) x two sampler steps
    assert calls.count(None) == 4  # guidance: one unconditional call beside every conditional one


def test_unconditional_labels_and_unlabelled_trials_sample_the_null_label_only() -> None:
    assert set(map(type, sample_with("unconditional", 0.0, 3))) == {type(None)}
    assert set(map(type, sample_with("balanced", 0.0, 0))) == {type(None)}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["dataset.labels=false"], "needs a class-conditional model (dataset.labels: true)"),
        (
            ["eval.labels=unconditional"],
            "has nothing to act on with eval.labels: unconditional",
        ),
    ],
)
def test_guidance_without_labels_is_refused_at_load(sets: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as err:
        load_study(ROOT / "studies" / "schedule_shift.yaml", sets)
    assert "eval.sampler.guidance_scale" in str(err.value) and "schedule_shift.yaml" in str(err.value)


def test_the_default_study_is_class_conditional_and_guided() -> None:
    """The default study's samples are drawn for balanced classes with guidance 2; without guidance or labels
    it loads too (the guard is on guidance only)."""
    loaded = load_study(ROOT / "studies" / "schedule_shift.yaml")
    assert loaded.base.dataset.labels and loaded.base.eval.labels == "balanced"
    assert loaded.base.eval.sampler.guidance_scale == 2.0
    plain = load_study(
        ROOT / "studies" / "schedule_shift.yaml", ["dataset.labels=false", "eval.sampler.guidance_scale=0"]
    )
    assert not plain.base.dataset.labels


def test_the_shipped_default_study_runs_end_to_end_with_guided_balanced_samples(tmp_path: Path, monkeypatch) -> None:
    """``make study``'s study file, cut to a few steps: every cell completes, its SWD and sampler fidelity land in
    the database beside its sample grid (the labels' order is the recorder test's above)."""
    from PIL import Image

    from harness.store import Store
    from harness.study import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    sets = ["train.steps=3", "train.checkpoint_every=0", "dataset.num_images=64", "eval.num_samples=9"]
    sets += ["eval.sampler.steps=2", "eval.metrics=[swd]", "eval.grid_size=9"]
    args = [str(ROOT / "studies" / "schedule_shift.yaml"), "--storage", url, "--quiet"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    store = Store(url)
    trials = store.trials("schedule_shift")
    assert len(trials) == 4 and set(trials["state"]) == {"complete"}
    metrics = store.metrics("schedule_shift")
    for name in ("swd", "sampler_fidelity", "swd_baseline_mean_image"):
        assert metrics[metrics["name"] == name]["value"].notna().sum() == 4, name
    grids = store.artifacts("schedule_shift").query("kind == 'sample_grid'")["path"].tolist()
    assert len(grids) == 4
    assert Image.open(tmp_path / grids[0]).size == (3 * 18 + 2, 3 * 18 + 2)  # 3 x 3 images of 16 px, padding 2
