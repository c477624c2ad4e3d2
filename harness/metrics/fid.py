"""FID and KID (clean-fid conventions) of generated samples against the trial's dataset.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to Inception features; KID
(Binkowski et al. 2018) is the unbiased MMD with the cubic polynomial kernel, averaged over random subsets.
Both depend strongly on the number of generated images and on the reference set (PAPER.md Sec. 6), so
every value records ``n_generated``, ``n_reference``, the reference fingerprint, mode and extractor.

Reference features are computed once per (dataset fingerprint, image shape, mode, extractor checksum,
number of reference images) and cached in ``cache_dir/fid/`` together with their mean and covariance.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from harness.metrics.base import EvalContext, FidOptions, Metric, MetricError, MetricValue, unavailable
from harness.metrics.features import ImageSource, extract_features
from harness.metrics.inception import FeatureExtractor, load_extractor

CACHE_VERSION = 1
CLEANFID_VERSION = importlib.metadata.version("clean-fid")


# The linear algebra runs in torch (float64, CPU): numpy's BLAS threads right after torch work fight
# torch's spinning OpenMP threads (an eigendecomposition at 2048-d measured 3x slower that way).


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a covariance (negative round-off eigenvalues clipped to 0)."""
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0.0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, feats1: np.ndarray | None = None) -> float:
    """Tr((S1 S2)^(1/2)) for covariances S1, S2 (PSD), without scipy's general ``sqrtm``.

    The eigenvalues of S1 S2 are those of a symmetric PSD matrix F^T S1 F for any factor S2 = F F^T, so
    ``eigvalsh`` suffices. With ``feats1`` [n, d], n <= d (S1 = A^T A, A = centred feats / sqrt(n - 1)),
    the non-zero ones are those of A S2 A^T (n x n: cheap, and no round-off eigenvalues of the null
    space). Otherwise F is S2's Cholesky factor, or its symmetric square root if S2 is singular.

    Coordinates where S2 has zero variance (dead features: a PSD matrix with a zero diagonal entry has a
    zero row and column) drop out exactly first: with S2 = [[S2', 0], [0, 0]], S1 S2 is block triangular
    and its eigenvalues are those of S1[k, k] S2' and zeros. That keeps the cheap Cholesky route for a
    full-rank S2' instead of a full eigendecomposition.
    """
    s1 = torch.from_numpy(np.asarray(sigma1, dtype=np.float64))
    s2 = torch.from_numpy(np.asarray(sigma2, dtype=np.float64))
    if feats1 is not None and len(feats1) <= s1.shape[0]:
        x = torch.from_numpy(np.asarray(feats1, dtype=np.float64))
        a = (x - x.mean(dim=0)) / np.sqrt(len(x) - 1)
        inner = a @ s2 @ a.T
    else:
        alive = torch.diagonal(s2) > 0
        if not bool(alive.all()):
            s1, s2 = s1[alive][:, alive], s2[alive][:, alive]
        factor, info = torch.linalg.cholesky_ex(s2)
        if int(info) != 0:  # singular: not positive definite
            factor = _sqrt_psd(s2)
        inner = factor.T @ s1 @ factor
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2)
    return float(eig.clamp_min(0.0).sqrt().sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    feats1: np.ndarray | None = None,
    feats2: np.ndarray | None = None,
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), equal to ``cleanfid.fid.frechet_distance``.

    Optional ``feats1``/``feats2`` (the features the statistics came from) allow the exact low-rank
    route of ``trace_sqrt_product`` when a set has at most as many images as feature dimensions.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise MetricError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    sizes = [(len(f), i) for i, f in ((1, feats1), (2, feats2)) if f is not None]
    smaller = min(sizes)[1] if sizes else 0
    if smaller == 2:
        tr_covmean = trace_sqrt_product(sigma2, sigma1, feats2)
    else:
        tr_covmean = trace_sqrt_product(sigma1, sigma2, feats1)
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def kernel_distance(
    feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID as ``cleanfid.fid.kernel_distance`` (same kernel, subsets, estimator), with seeded subsets.

    Returns (mean, standard deviation) over the subsets.
    """
    rng = np.random.default_rng(seed)
    d = feats1.shape[1]
    m = min(feats1.shape[0], feats2.shape[0], max_subset_size)
    if m < 2:
        raise MetricError(f"KID needs at least 2 images per set, got {feats1.shape[0]} and {feats2.shape[0]}")
    values = []
    for _ in range(num_subsets):
        x = feats2[rng.choice(feats2.shape[0], m, replace=False)]
        y = feats1[rng.choice(feats1.shape[0], m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        values.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))


@dataclass
class Statistics:
    """Features [N, 2048] float32 and their Gaussian fit, as clean-fid computes it."""

    feats: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, feats: np.ndarray) -> Statistics:
        if feats.shape[0] < 2:
            raise MetricError(f"FID needs at least 2 images, got {feats.shape[0]}")
        return cls(feats, np.mean(feats, axis=0), np.cov(feats, rowvar=False))

    def distance(self, other: Statistics) -> float:
        """FID of these statistics to ``other`` (the reference)."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, self.feats, other.feats)


def reference_cache_path(cache_dir: pathlib.Path, key: dict[str, Any]) -> pathlib.Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return pathlib.Path(cache_dir) / "fid" / f"reference-{digest}.npz"


def reference_statistics(ctx: EvalContext, extractor: FeatureExtractor) -> tuple[Statistics, dict[str, Any]]:
    """Reference statistics of ``ctx.reference`` (first ``num_reference`` images), cached on disk.

    Returns (statistics, attrs) with attrs ``n_reference``, ``reference_fingerprint`` and
    ``reference_cache`` ("hit" or "miss").
    """
    n_ref = len(ctx.reference) if ctx.fid.num_reference is None else min(ctx.fid.num_reference, len(ctx.reference))
    key = {
        "version": CACHE_VERSION,
        "dataset_fingerprint": ctx.dataset_fingerprint,
        "image_shape": list(ctx.image_shape),
        "mode": ctx.fid.mode,
        "extractor_sha256": extractor.info["sha256"],
        "n_reference": n_ref,
    }
    path = reference_cache_path(ctx.cache_dir, key)
    attrs = {"n_reference": n_ref, "reference": ctx.reference_name, "reference_fingerprint": ctx.dataset_fingerprint}
    memo_key = ("fid_reference", str(path))
    if memo_key in ctx.memo:
        return ctx.memo[memo_key], {**attrs, "reference_cache": "hit"}
    stats = _load_reference(path, key)
    attrs["reference_cache"] = "hit" if stats is not None else "miss"
    if stats is None:
        feats = extract_features(ctx.reference[:n_ref], extractor, ctx.fid.batch_size)
        stats = Statistics.of(feats)
        _save_reference(path, key, stats)
    ctx.memo[memo_key] = stats
    return stats, attrs


def _load_reference(path: pathlib.Path, key: dict[str, Any]) -> Statistics | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            if json.loads(str(data["key"])) != key:
                return None
            return Statistics(data["feats"], data["mu"], data["sigma"])
    except (OSError, ValueError, KeyError):  # unreadable or partial file: recompute and overwrite
        return None


def _save_reference(path: pathlib.Path, key: dict[str, Any], stats: Statistics) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.stem}.part{os.getpid()}.npz")  # atomic: concurrent workers may race
    np.savez(part, key=json.dumps(key, sort_keys=True), feats=stats.feats, mu=stats.mu, sigma=stats.sigma)
    part.replace(path)


def generated_features(ctx: EvalContext, extractor: FeatureExtractor) -> np.ndarray:
    """Features of ``ctx.samples()``, computed once per evaluation (shared by FID and KID)."""
    memo_key = ("fid_generated", ctx.fid.mode, extractor.info["sha256"])
    if memo_key not in ctx.memo:
        ctx.memo[memo_key] = extract_features(ctx.samples(), extractor, ctx.fid.batch_size)
    return ctx.memo[memo_key]


def _extractor(ctx: EvalContext) -> FeatureExtractor:
    memo_key = ("fid_extractor", ctx.fid.mode, str(ctx.device))
    if memo_key not in ctx.memo:
        try:
            ctx.memo[memo_key] = load_extractor(ctx.fid, ctx.device)
        except MetricError as err:  # remembered: KID does not try (and download) again
            ctx.memo[memo_key] = err
    found = ctx.memo[memo_key]
    if isinstance(found, MetricError):
        raise found
    return found


def _common_attrs(ctx: EvalContext, extractor: FeatureExtractor, n_generated: int) -> dict[str, Any]:
    return {
        "n_generated": n_generated,
        "mode": ctx.fid.mode,
        "extractor": extractor.info,
        "image_shape": list(ctx.image_shape),
        "library": f"clean-fid {CLEANFID_VERSION}",
    }


class Fid(Metric):
    """Frechet Inception distance of ``ctx.samples()`` to the trial's dataset (clean-fid conventions)."""

    outputs: ClassVar[tuple[str, ...]] = ("fid",)
    compares_samples: ClassVar[bool] = True

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        try:
            extractor = _extractor(ctx)
            ref, ref_attrs = reference_statistics(ctx, extractor)
            gen = Statistics.of(generated_features(ctx, extractor))
            value = gen.distance(ref)
        except MetricError as err:
            return [unavailable("fid", str(err), mode=ctx.fid.mode, reference_fingerprint=ctx.dataset_fingerprint)]
        return [MetricValue("fid", value, None, {**_common_attrs(ctx, extractor, len(gen.feats)), **ref_attrs})]


class Kid(Metric):
    """Kernel Inception distance (raw, not x 1e3), mean and standard deviation over random subsets."""

    outputs: ClassVar[tuple[str, ...]] = ("kid", "kid_std")
    compares_samples: ClassVar[bool] = True

    num_subsets: int = Field(default=100, ge=1)  # clean-fid's default
    max_subset_size: int = Field(default=1000, ge=2)  # clean-fid's default

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        try:
            extractor = _extractor(ctx)
            ref, ref_attrs = reference_statistics(ctx, extractor)
            gen = generated_features(ctx, extractor)
            mean, std = kernel_distance(gen, ref.feats, self.num_subsets, self.max_subset_size, ctx.seed)
        except MetricError as err:
            reason = str(err)
            return [
                unavailable(n, reason, mode=ctx.fid.mode, reference_fingerprint=ctx.dataset_fingerprint)
                for n in ("kid", "kid_std")
            ]
        attrs = {
            **_common_attrs(ctx, extractor, len(gen)),
            **ref_attrs,
            "num_subsets": self.num_subsets,
            "subset_size": min(len(gen), len(ref.feats), self.max_subset_size),
            "seed": ctx.seed,
        }
        return [MetricValue("kid", mean, None, attrs), MetricValue("kid_std", std, None, attrs)]


def compute_fid(
    a: ImageSource,
    b: ImageSource,
    *,
    mode: str = "clean",
    weights: str | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    workers: int | None = None,
) -> float:
    """FID between two image sets, each a uint8 tensor [N, C, H, W] or a folder of image files.

    Same machinery as the harness metric (clean-fid's resize and Inception, parallel resize); b plays
    the reference. Weights are found as for the metric (``$HARNESS_INCEPTION_WEIGHTS``, ``weights``,
    clean-fid's cache, clean-fid's download); raises MetricError when there are none.
    """
    options = FidOptions(mode=mode, weights=weights, batch_size=batch_size)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    extractor = load_extractor(options, dev)
    s1 = Statistics.of(extract_features(a, extractor, batch_size, workers))
    s2 = Statistics.of(extract_features(b, extractor, batch_size, workers))
    return s1.distance(s2)
