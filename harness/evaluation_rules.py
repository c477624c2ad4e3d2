"""Numbers the metrics record and the report checks against, in a module without torch so that the readers
(``harness.query``, ``harness.report``) start without loading it: the sampler-fidelity guard
(``harness.metrics.fidelity``) and the names of the calibration baselines (``harness.metrics.calibration``).
"""

from __future__ import annotations

FIDELITY_STDS = (0.05, 0.1, 0.25)  # per-pixel standard deviations probed, on the [-1, 1] scale
GUARD_STD = 0.1  # the standard deviation the guard reads
GUARD_MIN = 0.85  # every arm keeps at least this fraction of the variance at GUARD_STD
GUARD_SPREAD = 0.02  # arms of one comparison differ by at most this much at GUARD_STD

BASELINES = ("data", "noise", "mean_image")  # calibration stand-ins for the generated images
