"""One trial, from a ``TrialConfig`` to its metric rows: the runner (``runner.run_trial``), the training loop
(``train``) and the training recipe (``recipes``). No Optuna and no database in here."""
