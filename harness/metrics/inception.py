"""Where the Inception weights for FID/KID come from, how a bad file is caught, and the pre-training check.

The feature extractor is clean-fid's: the TorchScript translation of TensorFlow's Inception v3
(``inception-2015-12-05.pt``) called through clean-fid's own ``InceptionV3W.forward``, so features equal
clean-fid's. The file is looked up, first hit wins:

1. ``$HARNESS_INCEPTION_WEIGHTS`` (machine-specific; overrides the study file),
2. the study file's ``eval.fid.weights``,
3. clean-fid's own cache file (``/tmp/inception-2015-12-05.pt``; ``./`` on Windows), where clean-fid
   itself downloads it,
4. a download from clean-fid's URL into that cache file (atomic, so an interrupted download leaves no
   partial file). On a machine without internet this fails and FID/KID are recorded as unavailable.

An explicitly configured path (1, 2) that does not exist is an error, never silently replaced.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import shutil
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from harness.metrics.base import FidOptions, MetricError

ENV_VAR = "HARNESS_INCEPTION_WEIGHTS"
FILE_NAME = "inception-2015-12-05.pt"
FEATURE_DIM = 2048
NEEDS_WEIGHTS = ("fid", "kid", "kid_std")  # metric and value names that need the Inception network
# clean-fid's download URL (``cleanfid.downloads_helper.inception_url``; tests/test_metrics_fid.py checks they are
# equal): importing that module imports requests, a quarter of a second of every command's start-up
inception_url = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


def cleanfid_weights_path() -> pathlib.Path:
    """The file clean-fid 0.1.35 loads and downloads to (``cleanfid.features.feature_extractor``)."""
    folder = "./" if platform.system() == "Windows" else "/tmp"
    return pathlib.Path(folder) / FILE_NAME


def where_to_put() -> str:
    return (
        f"set {ENV_VAR}=/path/to/{FILE_NAME}, or eval.fid.weights in the study file, or put the file at "
        f"{cleanfid_weights_path()} (clean-fid's cache; download: {inception_url})"
    )


def download_weights(dest: pathlib.Path, timeout_s: float = 60.0) -> pathlib.Path | None:
    """clean-fid's download, written to a temporary name first. None when the machine is offline."""
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(inception_url, timeout=timeout_s) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f)
        part.replace(dest)
        return dest
    except OSError:
        part.unlink(missing_ok=True)
        return None


def locate_weights(fid: FidOptions, allow_download: bool = True) -> tuple[pathlib.Path, str]:
    """(path, source) of the weights file; raises MetricError saying where to put it when there is none."""
    for configured, source in ((os.environ.get(ENV_VAR), f"${ENV_VAR}"), (fid.weights, "eval.fid.weights")):
        if configured:
            path = pathlib.Path(configured).expanduser()
            if not path.is_file():
                raise MetricError(
                    f"Inception weights {path} (from {source}) do not exist; fix the path or "
                    f"download {inception_url} there"
                )
            return path, source
    path = cleanfid_weights_path()
    if path.is_file():
        return path, "clean-fid cache"
    if allow_download and download_weights(path) is not None:
        return path, "clean-fid download"
    raise MetricError(f"no Inception weights for FID/KID (offline, nothing configured): {where_to_put()}")


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inception_file(base: torch.jit.ScriptModule, resize_inside: bool) -> torch.nn.Module:
    """clean-fid's ``InceptionV3W`` (its forward: normalisation, 299 px check, 2048-d view) on any loaded file."""
    # deferred: cleanfid.inception_torchscript imports requests, start-up time that only FID needs
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W.__new__(InceptionV3W)  # its __init__ would load the file from clean-fid's cache
    torch.nn.Module.__init__(model)
    model.base, model.layers, model.resize_inside = base, base.layers, resize_inside
    return model


@dataclass
class FeatureExtractor:
    """Images (float [B, 3, H, W] in [0, 255], 299 px in clean mode) -> features float32 numpy [B, 2048]."""

    model: torch.nn.Module
    mode: str
    device: torch.device
    info: dict[str, Any]  # name, sha256, bytes, path, source: recorded with every value

    def __call__(self, x: torch.Tensor) -> Any:
        # Features are always computed in fp32, whatever autocast the caller is in.
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return self.model(x.to(self.device, torch.float32)).float().cpu().numpy()

    def of_normalised(self, x: torch.Tensor) -> Any:
        """Features of a clean-mode batch [B, 3, 299, 299] on the device that is already normalised the way
        ``InceptionV3W.forward`` does it, ``(x - 128) / 128`` (done in place by the caller: no copies)."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return self.model.layers(x).view(x.shape[0], FEATURE_DIM).float().cpu().numpy()


def load_extractor(fid: FidOptions, device: torch.device, allow_download: bool = True) -> FeatureExtractor:
    """clean-fid's Inception for ``fid.mode`` on ``device``; a truncated or foreign file is a MetricError."""
    path, source = locate_weights(fid, allow_download)
    size = path.stat().st_size
    corrupt = (
        f"Inception weights {path} (from {source}, {size} bytes) are corrupt or incomplete; "
        f"delete the file and download it again from {inception_url}"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = torch.jit.load(str(path), map_location=device).eval()
        model = inception_file(base, resize_inside=fid.mode == "legacy_tensorflow")
    except Exception as err:  # a torch/zip error of a broken file: report it in one line
        raise MetricError(f"{corrupt} ({type(err).__name__})") from None
    extractor = FeatureExtractor(model, fid.mode, device, {})
    probe = torch.zeros(1, 3, 299, 299) if fid.mode == "clean" else torch.zeros(1, 3, 32, 32)
    try:
        out = extractor(probe)
    except Exception as err:
        raise MetricError(f"{corrupt} (probe forward failed: {type(err).__name__})") from None
    if out.shape != (1, FEATURE_DIM):
        raise MetricError(
            f"Inception weights {path} give features of shape {tuple(out.shape)}, expected "
            f"(1, {FEATURE_DIM}); {where_to_put()}"
        )
    extractor.info = {
        "name": getattr(base, "original_name", type(base).__name__),
        "sha256": file_sha256(path),
        "bytes": size,
        "path": str(path),
        "source": source,
    }
    return extractor


def preflight(metric_names: list[str], fid: FidOptions, objective_names: list[str]) -> None:
    """Before any training: an objective that needs Inception weights must have valid ones.

    FID/KID that are only recorded (not optimised) never stop a study: without weights they are stored as
    unavailable with the reason. Raises MetricError (a ValueError) with a one-line message.
    """
    needed = [name for name in objective_names if name in NEEDS_WEIGHTS]
    recorded = [name for name in metric_names if name in NEEDS_WEIGHTS]
    if not needed:
        if recorded:
            try:
                locate_weights(fid, allow_download=False)
            except MetricError as err:
                warnings.warn(
                    f"{recorded[0]} needs Inception weights (downloaded on first use if this machine is "
                    f"online, else recorded as unavailable): {err}",
                    stacklevel=2,
                )
        return
    try:
        load_extractor(fid, torch.device("cpu"))
    except MetricError as err:
        raise MetricError(f"objective {needed[0]!r} needs Inception weights: {err}") from None
