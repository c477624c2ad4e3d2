"""Study files: every file in studies/ validates; every invalid file gives exit 2 and one line naming the
file and the key path, without a traceback and without creating the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_study
from harness.study import main

ROOT = Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "tests" / "invalid_studies").glob("*.yaml"))
STUDIES = sorted((ROOT / "studies").rglob("*.yaml"))  # studies/gpu/ included


def expected_key(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} needs an '# expect: KEY' first line"
    return first[len("# expect: ") :].strip()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_corpus_is_large_enough():
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_study_file(path: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    db = tmp_path / "harness.db"
    code, out, err = run_cli([str(path), "--storage", f"sqlite:///{db}"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert path.name in lines[0]
    assert expected_key(path) in lines[0]
    assert "Traceback" not in err
    assert not db.exists(), "bad input must not create the database"
    assert list(tmp_path.iterdir()) == [], "bad input must write nothing (no results folder, no cache)"


@pytest.mark.parametrize(
    "target, needle",
    [
        ("empty", "empty study file"),
        ("directory", "is a directory"),
        ("missing", "no such file"),
        ("binary", "not a text file"),
    ],
)
def test_unreadable_study_paths(target: str, needle: str, tmp_path: Path, capsys):
    path = tmp_path / f"{target}.yaml"
    if target == "empty":
        path.write_text("")
    elif target == "directory":
        path.mkdir()
    elif target == "binary":
        path.write_bytes(b"\xff\xfe\x00\x81")
    code, _, err = run_cli([str(path), "--dry-run"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and path.name in err and needle in err


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.relative_to(ROOT / "studies").as_posix())
def test_every_study_validates(path: Path):
    loaded = load_study(path)
    assert loaded.name == "_".join(path.relative_to(ROOT / "studies").with_suffix("").parts)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.relative_to(ROOT / "studies").as_posix())
def test_every_study_passes_the_sampler_fidelity_guard(path: Path):
    """Issue 10: at s = 0.1 every arm keeps at least 0.85 of the variance and arms differ by at most 0.02."""
    from harness.config import fidelity_notes
    from harness.metrics.fidelity import GUARD_STD, fidelity_by_std

    loaded = load_study(path)
    assert fidelity_notes(loaded) == []
    kept = [
        fidelity_by_std(c.diffusion.schedule, c.eval.sampler)[GUARD_STD]
        for c in map(loaded.trial_config, loaded.planned_cells() or [{}])
    ]
    assert min(kept) >= 0.85 and max(kept) - min(kept) <= 0.02


def test_guard_notes_name_the_failing_arms():
    from harness.config import fidelity_notes

    old = load_study(ROOT / "studies" / "schedule_shift.yaml", ["eval.sampler={name: ddim, steps: 24, spacing: time}"])
    notes = fidelity_notes(old)
    assert any("base_resolution=8): the sampler keeps 0.33" in n for n in notes)  # 16 px: the shift is -1.39
    assert any("arms differ by 0.256" in n for n in notes)


def test_dry_run_prints_the_grid(capsys):
    code, out, err = run_cli([str(ROOT / "studies" / "schedule_shift.yaml"), "--dry-run"], capsys)
    assert code == 0, err
    assert "4 trials in the grid" in out
    assert out.count("# trial ") == 4
    assert out.count("# sampler fidelity (variance kept at s = 0.05, 0.1, 0.25): 0.8") == 4
    assert out.count("# lr 0.003 (given in the study file), warm-up 100 (given in the study file)") == 4
    assert "shifted_cosine(base_resolution=8), train.seed=1" in out
    # the dataset's resolution reaches the schedule and the network
    assert "resolution: 16" in out


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.steps=-1", "train.steps"),
        ("train.stepz=3", "train.stepz"),
        ("model.stem.levels=x", "model.stem"),
        ("nokeyvalue", "--set"),
        ("diffusion.schedule.name=linear", "diffusion.schedule.name"),
        ("search.space.train.sed=[1]", "search.space.train.sed"),
    ],
)
def test_bad_set_values(override: str, key: str, tmp_path: Path, capsys):
    db = tmp_path / "h.db"
    study = ROOT / "studies" / "schedule_shift.yaml"
    code, _, err = run_cli([str(study), "--storage", f"sqlite:///{db}", "--set", override], capsys)
    assert code == 2 and err.count("\n") == 1 and key in err and "schedule_shift.yaml" in err
    assert not db.exists()


def test_set_overrides_reach_the_trials(capsys):
    study = ROOT / "studies" / "schedule_shift.yaml"
    code, out, _ = run_cli(
        [str(study), "--dry-run", "--set", "train.steps=7", "--set", "search.space.train.seed=[3]"], capsys
    )
    assert code == 0
    assert out.count("# trial ") == 2 and "steps: 7" in out and "train.seed=3" in out  # 2 schedules x 1 seed


def test_bad_storage_flag(tmp_path: Path, capsys):
    study = ROOT / "studies" / "schedule_shift.yaml"
    code, _, err = run_cli([str(study), "--storage", "mysql+nodriver://x/y"], capsys)
    assert code == 2 and "--storage" in err and err.count("\n") == 1


def test_bad_n_trials(capsys):
    code, _, err = run_cli([str(ROOT / "studies" / "schedule_shift.yaml"), "--n-trials", "0"], capsys)
    assert code == 2 and "--n-trials" in err


def test_exit_code_from_a_real_process(tmp_path: Path):
    """The module entry point itself exits 2 with one line (not only main())."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.study", str(INVALID[0]), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and INVALID[0].name in proc.stderr
