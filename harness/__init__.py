"""The harness: study files in, trials run by Optuna, results in a SQL database, reports out.

Layers, each importing only from the ones below it (``tests/test_layers.py`` checks it):

- ``cli/``: the command lines (``python -m harness.study | report | query | prepare``), imported by nothing;
- ``driver/``: Optuna: open the study, claim grid cells, recover dead workers, the objective;
- ``trial/``: one trial from a ``TrialConfig`` to metric rows (no Optuna, no database);
  ``report/`` and ``results``: read-only over the store (frames, effects, verdicts, the HTML report);
- ``config/``: study files to typed ``TrialConfig``s; ``store/``: all SQL;
- ``metrics/``: the metric components (FID, KID, SWD, FLOPs, throughput, memory, MFU);
- core modules: ``errors``, ``limits``, ``paths``, ``faults``, ``safe_text``, ``environment``;
- ``components/`` (outside this package) at the bottom, importing nothing of ``harness``.
"""
