"""The job array of ``study_array.sbatch`` from Python with submitit (as Hydra's submitit launcher does):
``pip install submitit``, then ``python docs/slurm/submitit_array.py studies/gpu/stem.yaml 4``.

Each array task runs ``python -m harness.study STUDY --workers auto`` on one machine; the study's database
(``HARNESS_STORAGE``, PostgreSQL) is what the tasks share. Exit codes come back as the jobs' results.
"""

from __future__ import annotations

import os
import subprocess
import sys

import submitit

SHARED = {
    "HARNESS_STORAGE": os.environ.get("HARNESS_STORAGE", "postgresql://harness:harness@dbhost:5432/harness"),
    "HARNESS_RESULTS_DIR": os.environ.get("HARNESS_RESULTS_DIR", "/shared/harness/results"),
    "HARNESS_CACHE_DIR": os.environ.get("HARNESS_CACHE_DIR", "/shared/harness/cache"),
}


def worker(study: str) -> int:
    """One machine: a harness worker per visible GPU, on the shared database."""
    cmd = [sys.executable, "-m", "harness.study", study, "--workers", "auto", "--quiet"]
    return subprocess.run(cmd, env={**os.environ, **SHARED}).returncode


if __name__ == "__main__":
    study, machines = sys.argv[1], int(sys.argv[2])
    executor = submitit.AutoExecutor(folder="logs/submitit")
    executor.update_parameters(
        timeout_min=24 * 60,
        nodes=1,
        tasks_per_node=1,
        gpus_per_node=8,
        cpus_per_task=64,
        slurm_array_parallelism=machines,
        slurm_signal_delay_s=300,
    )
    jobs = executor.map_array(worker, [study] * machines)
    print("submitted:", ", ".join(job.job_id for job in jobs))
    print("exit codes:", [job.result() for job in jobs])
