"""Names and places on disk shared by every layer: ``slug`` (a file name for any text) and the cache folder."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

MAX_SLUG = 100  # characters of a file or folder name made by ``slug`` (file systems allow 255 bytes)


def slug(name: str) -> str:
    """A file or folder name for any text (study names, plot names): runs of characters other than letters,
    digits and ``_.-`` become ``_``; a name that would be longer than ``MAX_SLUG`` characters (or empty) is
    cut and gets a short hash of the whole text, so that long names stay distinct."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if clean and len(clean) <= MAX_SLUG:
        return clean
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{clean[: MAX_SLUG - len(digest) - 1]}-{digest}" if clean else digest


def cache_dir() -> Path:
    """Datasets, FID reference statistics, calibration baselines, the device's peak FLOP/s:
    ``$HARNESS_CACHE_DIR``, default ``~/.cache/simple-diffusion-harness``."""
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "simple-diffusion-harness")
