"""The objective Optuna calls per trial: claim the grid cell (with the trial's ``running`` row), run the trial
(``harness.trial``), write its metrics, artifacts and ``complete`` in one transaction; a failure is recorded
with its reason and the study goes on."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import optuna

from harness import faults
from harness.config import LoadedStudy
from harness.driver.queue import retired_trials
from harness.driver.search import suggest
from harness.environment import environment
from harness.errors import TrialFailed, one_line
from harness.paths import cache_dir
from harness.store.claims import ClaimLost, claim_trial, complete_trial, grid_cell, own_cell
from harness.store.tables import Store
from harness.trial.parallel import Parallel
from harness.trial.runner import config_hash, pick_device, run_trial


def failure_reason(err: BaseException) -> str:
    reason = f"{type(err).__name__}: {one_line(str(err))}" if str(err) else type(err).__name__
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C); rerun the study to resume from the checkpoint"
    if not isinstance(err, TrialFailed | ClaimLost):
        reason += " | " + one_line(traceback.format_exc(limit=-2))[-600:]
    return reason


def make_objective(
    loaded: LoadedStudy, store: Store, root: Path, progress: bool, log: list[str], parallel: Parallel | None = None
):
    """The function Optuna calls per trial: claim the cell (with the ``running`` row), train and evaluate,
    then write metrics, artifacts and ``complete`` in one transaction (``harness.store.claims``). Under
    torchrun (``parallel``, rank 0) the claimed trial is sent to the other ranks, which train it too."""
    parallel = parallel or Parallel()
    objectives = [o.metric for o in loaded.spec.objectives]
    grid = loaded.spec.search.sampler == "grid"

    def objective(trial: optuna.Trial):
        faults.point("before_claim", trial=trial.number)
        labels = {d.key: suggest(d, trial, grid=grid) for d in loaded.dims}
        values = {d.key: d.decode(labels[d.key]) for d in loaded.dims}
        context = {"trial": trial.number, "cell": faults.cell_text(labels)}
        config = loaded.trial_config(values)
        device = pick_device(config.train.device)
        cell = grid_cell(labels) if grid else own_cell(trial.number)
        retired = retired_trials(trial.study)
        stored = config.to_json()  # the resolved config as the database keeps it
        holder = claim_trial(store, loaded.name, cell, trial.number, labels, stored, environment(device), retired)
        if holder is not None:
            raise optuna.TrialPruned(f"duplicate of trial {holder} (another worker runs or ran this cell)")
        faults.point("after_claim", **context)
        workdir = root / f"config_{config_hash(config)}"
        trial.set_user_attr("workdir", str(workdir))
        shown = ", ".join(f"{k}={v}" for k, v in labels.items())
        print(f"trial {trial.number}: {shown or '(base configuration)'}", flush=True)
        t0 = time.perf_counter()
        try:
            if parallel.distributed:  # the other ranks build the same config from the same cell values
                parallel.send(("trial", values, str(workdir), config_hash(config)))
            result = run_trial(config, workdir, cache_dir(), progress=progress, parallel=parallel)
            scalar = {m["name"]: m.get("value") for m in result.metrics if m.get("step") is None}
            missing = [name for name in objectives if scalar.get(name) is None]
            if missing:
                store.add_metrics(loaded.name, trial.number, result.metrics)  # they say why it is missing
                raise TrialFailed(f"objective {missing[0]!r} has no value (see its metric row for the reason)")
            out = [float(scalar[name]) for name in objectives]
            duration = time.perf_counter() - t0
            complete_trial(store, loaded.name, trial.number, cell, result.metrics, result.artifacts, duration)
        except BaseException as err:
            reason = failure_reason(err)
            store.finish_trial(loaded.name, trial.number, "failed", reason, time.perf_counter() - t0)
            trial.set_user_attr("error", reason)
            print(f"trial {trial.number}: failed: {reason[:300]}", flush=True)
            log.append(f"trial {trial.number} failed")
            raise
        faults.point("before_tell", **context)
        summary = ", ".join(f"{n}={v:.4g}" for n, v in zip(objectives, out, strict=True))
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        print(f"trial {trial.number}: complete in {duration:.1f}s{resumed}: {summary}", flush=True)
        log.append(f"trial {trial.number} complete")
        return out[0] if len(out) == 1 else tuple(out)

    return objective
