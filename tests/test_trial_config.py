"""The typed trial config from ``load_study`` to the runner: frozen, resolved once per distinct component spec,
stored as the same JSON; ``--set`` that does what it says; library errors without command-line flags."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

import components
import harness.config.resolver as resolver_module
from components.schedules import Cosine
from harness import results
from harness.config import TrialConfig, load_study, resolve
from harness.errors import UsageError
from harness.metrics.swd import Swd
from harness.query import main as query
from harness.study import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "studies" / "schedule_shift.yaml"
STUDIES = sorted((ROOT / "studies").rglob("*.yaml"))


def write(tmp_path: Path, **sections) -> Path:
    study = {
        "name": "t",
        "dataset": {"name": "shapes", "resolution": 32, "num_images": 64},
        "model": {"name": "uvit", "preset": "tiny"},
        "train": {"steps": 2, "batch_size": 4},
        "eval": {"num_samples": 8, "metrics": ["swd"]},
        **sections,
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def spec(family: str, value) -> dict:
    return components.validate(family, value).to_spec()


def test_the_trial_config_is_typed_and_frozen():
    config = load_study(DEFAULT).base
    assert isinstance(config, TrialConfig)
    assert config.train.holdout_fraction == 0.1 and config.train.grad_clip == 2.0
    assert isinstance(config.diffusion.schedule, Cosine) and config.diffusion.schedule.logsnr_min == -15
    assert [m.name for m in config.eval.metrics] == ["swd", "flops", "throughput", "memory", "mfu"]
    assert config.model.resolution == config.resolution == 16  # the dataset's resolution reached the network
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.seed = 3
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.train.steps = 3


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.relative_to(ROOT / "studies").as_posix())
def test_the_stored_json_resolves_to_the_same_config(path: Path):
    """``to_json`` is the config as the database stores it: resolving it again gives it back unchanged."""
    loaded = load_study(path)
    for config in [loaded.base, *map(loaded.trial_config, loaded.planned_cells())]:
        stored = config.to_json()
        assert resolve(stored).to_json() == stored
        assert stored["eval"]["metrics"] == [m.name for m in config.eval.metrics]  # names, as before


def test_each_distinct_component_spec_is_validated_once(monkeypatch):
    seen: list[tuple[str, str]] = []
    validate = resolver_module.validate_spec

    def counting(family, registry, spec):
        seen.append((family, repr(spec)))
        return validate(family, registry, spec)

    monkeypatch.setattr(resolver_module, "validate_spec", counting)
    loaded = load_study(DEFAULT)
    for cell in loaded.planned_cells():
        loaded.trial_config(cell)
    assert len(seen) == len(set(seen)) == loaded.resolver.validations
    # 1 dataset, 1 network, 2 schedules, 1 parametrization, 1 loss, 1 sampler, 5 metrics
    assert len(seen) == 12


def test_metric_parameters_come_from_the_study_file(tmp_path: Path):
    path = write(tmp_path, eval={"metrics": ["flops", {"name": "swd", "normalize": "per_set", "num_images": 64}]})
    config = load_study(path).base
    swd = config.eval.metrics[1]
    assert isinstance(swd, Swd) and swd.normalize == "per_set" and swd.num_images == 64
    stored = config.to_json()["eval"]["metrics"]
    assert stored[0] == "flops" and stored[1]["name"] == "swd" and stored[1]["normalize"] == "per_set"
    # a mapping that only repeats the defaults is stored (and hashed) as the name
    same = load_study(write(tmp_path, eval={"metrics": [{"name": "swd", "nhood_size": 7}]})).base
    assert same.to_json()["eval"]["metrics"] == ["swd"]


@pytest.mark.parametrize(
    "metrics, key",
    [
        (["swd", {"name": "kid", "num_subsets": "many"}], "eval.metrics.1.num_subsets"),
        ([{"name": "swd", "nhood_sise": 5}], "eval.metrics.0.nhood_sise"),
        (["swd", {"name": "fdi"}], "eval.metrics.1.name"),
        ([{"normalize": "per_set"}], "eval.metrics.0.name"),
        (["swd", {"name": "swd", "normalize": "per_set"}], "eval.metrics.1: metric 'swd' is listed twice"),
    ],
)
def test_bad_metric_entries_name_their_key(metrics, key, tmp_path: Path, capsys):
    path = write(tmp_path, eval={"metrics": metrics})
    assert main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "t.yaml" in err


def test_objectives_are_checked_against_the_names_each_metric_declares(tmp_path: Path, capsys):
    """SWD writes swd_<r> for its pyramid levels (32 and 16 at 32 px): an objective on a level it writes is
    accepted, one on a level it does not write is refused before anything runs."""
    assert main([str(write(tmp_path, objectives=[{"metric": "swd_16"}])), "--dry-run"]) == 0
    assert main([str(write(tmp_path, objectives=[{"metric": "swd_64"}])), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "objectives.0.metric: 'swd_64' is not produced by eval.metrics" in err and "swd_32" in err


def test_set_name_replaces_the_component(tmp_path: Path):
    """Replacing a component's name starts it from its defaults (the file's parameters would not fit it); the
    dropped parameters are named in a note; parameters given with --set are kept, in either order."""
    path = write(tmp_path, diffusion={"schedule": {"name": "shifted_cosine", "base_resolution": 16}})
    loaded = load_study(path, ["diffusion.schedule.name=cosine"])
    assert loaded.base.diffusion.schedule.to_spec() == spec("schedule", "cosine")
    assert any("dropped the file's diffusion.schedule.base_resolution" in n for n in loaded.notes)
    for order in (
        ["diffusion.schedule.logsnr_min=-10", "diffusion.schedule.name=cosine"],
        ["diffusion.schedule.name=cosine", "diffusion.schedule.logsnr_min=-10"],
    ):
        cosine = {"name": "cosine", "logsnr_min": -10}
        assert load_study(path, order).base.diffusion.schedule.to_spec() == spec("schedule", cosine)
    back = load_study(path, ["diffusion.schedule.name=shifted_cosine"]).base.diffusion.schedule
    shifted = {"name": "shifted_cosine", "base_resolution": 16, "resolution": 32}
    assert back.to_spec() == spec("schedule", shifted)  # the same name keeps its parameters


@pytest.mark.parametrize(
    "override, axis",
    [
        ("train.seed=5", "search.space.train.seed"),
        ("diffusion.schedule.name=shifted_cosine", "search.space.diffusion.schedule"),
        ("diffusion.schedule={name: cosine}", "search.space.diffusion.schedule"),
    ],
)
def test_set_on_a_searched_key_is_an_error(override: str, axis: str, tmp_path: Path, capsys):
    db = tmp_path / "h.db"
    assert main([str(DEFAULT), "--storage", f"sqlite:///{db}", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--set {override.split('=')[0]}" in err and axis in err
    assert not db.exists()


def test_library_errors_name_no_command_line_flags(tmp_path: Path, capsys):
    missing = f"sqlite:///{tmp_path / 'no.db'}"
    with pytest.raises(UsageError) as err:
        results.load(missing, "x")
    assert str(err.value).startswith("storage: no database at") and "--" not in str(err.value)
    with pytest.raises(UsageError) as err:
        results.load("", "x")
    assert str(err.value).startswith("storage: empty") and "--" not in str(err.value)
    # the command line names its flag instead
    assert query(["--storage", missing]) == 2
    assert capsys.readouterr().err.startswith("error: --storage: no database at")
