"""Several workers share one study through PostgreSQL: every grid cell runs exactly once.

Needs a server: ``HARNESS_TEST_POSTGRES_URL`` (``.ci/run`` installs and starts one and sets it). Without
it the test is skipped locally; in CI (``CI=true``) a missing server is a failure, not a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from harness import results

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("HARNESS_TEST_POSTGRES_URL")

STUDY = """
name: {name}
dataset: {{name: shapes, resolution: 16, num_images: 48}}
model: {{name: uvit, preset: tiny, stem: {{name: wavelet, levels: 1}}}}
train: {{steps: 6, batch_size: 4, warmup_steps: 1, log_every: 3, checkpoint_every: 0, device: cpu}}
eval: {{num_samples: 4, batch_size: 4, grid_size: 4, sampler: {{name: ddim, steps: 2}}, metrics: [flops]}}
search: {{sampler: grid, space: {{train.seed: [0, 1, 2, 3, 4, 5]}}}}
objectives: [{{metric: val_loss}}]
"""

pytestmark = pytest.mark.postgres


@pytest.fixture
def url():
    if not URL:
        if os.environ.get("CI"):
            pytest.fail("HARNESS_TEST_POSTGRES_URL is not set in CI: .ci/run should have started PostgreSQL")
        pytest.skip("no PostgreSQL server (set HARNESS_TEST_POSTGRES_URL)")
    return URL


def test_two_workers_share_a_grid(url: str, tmp_path: Path):
    name = f"pg_{uuid.uuid4().hex[:8]}"
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(name=name))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "harness.study", str(study), "--storage", url, "--quiet"]
    workers = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all("complete in" in out for out in outputs), outputs  # both workers did work
    frame = results.load(url, name)
    complete = frame[frame["state"] == "complete"]
    assert sorted(complete["train.seed"]) == [0, 1, 2, 3, 4, 5]  # every cell exactly once
    trials = optuna.load_study(study_name=name, storage=url).trials
    done = [t.params["train.seed"] for t in trials if t.state.name == "COMPLETE"]
    assert sorted(done) == [0, 1, 2, 3, 4, 5]
    # a third worker finds nothing to do
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to run" in again.stdout
