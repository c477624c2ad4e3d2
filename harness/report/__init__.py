"""Reading a study back, read-only over the store: its frames (``frames``), every table of it (``tables``:
effects, verdicts, comparability, sampler fidelity, calibration, timing) and the report rendered from them
(``render.render_report``: ``index.html``, ``trials.csv``, ``summary.csv``, PNG plots; see docs/reports.md).

``python -m harness.report --study NAME [--storage URL] [--out DIR]`` is its command line (``harness.cli.report``).
"""
