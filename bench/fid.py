"""FID of the harness vs ``cleanfid.fid.compute_fid`` on the same samples, reference and feature extractor.

Run:  .venv/bin/python bench/fid.py [--n 1024] [--resolution 32] [--batch-size 64] [--mode clean]
      [--device cpu] [--extractor auto|small|inception_v3]

Generated images stay in memory (a uint8 tensor; clean-fid gets them through ``gen=``, batch by batch);
the reference set is a folder of PNGs for both. The extractor is clean-fid's Inception file when one is
found (``$HARNESS_INCEPTION_WEIGHTS`` or clean-fid's cache, never downloaded here), else a small random
stand-in TorchScript network with the same interface (``harness/metrics/standin.py``), which the output
says; ``--extractor inception_v3`` uses the real architecture with random weights instead (the real
network's cost without the file). Printed: images/s of each (generated + reference images over wall
time, everything included: loading the extractor, resizing, features, statistics, Frechet distance),
their ratio, |delta FID|, a breakdown (features vs distance) and the harness's warm path, whose
reference statistics come from its cache (what every trial after the first pays).
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")  # scipy's sqrtm deprecation/singularity notes inside clean-fid

from cleanfid import fid as cleanfid_fid  # noqa: E402
from cleanfid.inception_torchscript import InceptionV3W  # noqa: E402

from harness.metrics import METRICS, EvalContext, FidOptions, compute_fid, inception  # noqa: E402
from harness.metrics.features import extract_features, write_folder  # noqa: E402
from harness.metrics.fid import Statistics  # noqa: E402
from harness.metrics.standin import save_standin  # noqa: E402


class _LinalgWithDisp:
    """``scipy.linalg`` for clean-fid 0.1.35 on SciPy >= 1.18, which removed ``sqrtm(..., disp=False)``
    (clean-fid unpacks ``covmean, _``): the same ``sqrtm``, its error estimate returned as None."""

    def __getattr__(self, name: str):
        return getattr(scipy.linalg, name)

    @staticmethod
    def sqrtm(a, disp=True, **kwargs):
        root = scipy.linalg.sqrtm(a, **kwargs)
        return (root, None) if disp is False else root


if "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters:
    cleanfid_fid.linalg = _LinalgWithDisp()


def toy_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random colour fields plus texture: uint8 [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)
    return (low * 200 + torch.rand(n, 3, size, size, generator=g) * 55).to(torch.uint8)


def weights_file(workdir: Path, extractor: str) -> tuple[Path, str]:
    if extractor == "auto":
        try:
            path, source = inception.locate_weights(FidOptions(), allow_download=False)
            return path, f"Inception weights from {source}: {path}"
        except inception.MetricError:
            extractor = "small"
    if extractor == "small":
        path = save_standin(workdir / "standin.pt")
        return path, "small random stand-in TorchScript network (same interface, 17 MMACs per image)"
    path = save_standin(workdir / "standin.pt", arch="inception_v3")
    return path, "Inception v3 architecture with random weights (same interface and cost as the real file)"


def exact_fid(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID by an independent route: with S_i = A_i^T A_i (centred features / sqrt(n_i - 1)),
    Tr((S1 S2)^(1/2)) is the sum of the singular values of A1 A2^T (float64, no square root of a matrix)."""
    a1, a2 = (torch.from_numpy(f.astype(np.float64)) for f in (feats1, feats2))
    c1, c2 = ((a - a.mean(0)) / np.sqrt(len(a) - 1) for a in (a1, a2))
    diff = a1.mean(0) - a2.mean(0)
    nuclear = torch.linalg.svdvals(c1 @ c2.T).sum()
    return float(diff @ diff + (c1 * c1).sum() + (c2 * c2).sum() - 2 * nuclear)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="generated images = reference images")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mode", default="clean", choices=["clean", "legacy_tensorflow"])
    parser.add_argument("--device", default="cpu", help="where both sides run the extractor (cpu, cuda)")
    parser.add_argument(
        "--extractor",
        default="auto",
        choices=["auto", "small", "inception_v3"],
        help="auto: the real Inception file if found, else the small stand-in; inception_v3: the real "
        "architecture with random weights (the real cost, for machines without the file)",
    )
    args = parser.parse_args()
    n = args.n // args.batch_size * args.batch_size  # clean-fid's gen= path needs whole batches
    device = torch.device(args.device)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fid-"))
    try:
        weights, note = weights_file(workdir, args.extractor)
        os.environ[inception.ENV_VAR] = str(weights)
        # clean-fid's own wrapper class, loading the same file under the name it expects
        (workdir / "cleanfid").mkdir()
        shutil.copyfile(weights, workdir / "cleanfid" / inception.FILE_NAME)

        generated = toy_images(n, args.resolution, seed=1)
        reference = toy_images(n, args.resolution, seed=2)
        ref_dir = write_folder(reference, workdir / "reference")

        def cleanfid_run() -> float:
            batches = iter(generated.split(args.batch_size))
            model = (
                InceptionV3W(str(workdir / "cleanfid"), download=False, resize_inside=args.mode == "legacy_tensorflow")
                .to(device)
                .eval()
            )
            return cleanfid_fid.compute_fid(
                gen=lambda z: next(batches),
                fdir2=str(ref_dir),
                mode=args.mode,
                num_gen=n,
                batch_size=args.batch_size,
                device=device,
                custom_feat_extractor=model,
                num_workers=os.cpu_count() or 1,
                verbose=False,
                use_dataparallel=False,
            )

        def harness_run() -> float:
            return compute_fid(generated, ref_dir, mode=args.mode, batch_size=args.batch_size, device=device)

        theirs, t_theirs = timed(cleanfid_run)
        ours, t_ours = timed(harness_run)

        # breakdown: features of the generated set, then the Frechet distance, each way
        extractor = inception.load_extractor(FidOptions(mode=args.mode), device)
        batches = iter(generated.split(args.batch_size))
        feats_theirs, t_feat_theirs = timed(
            lambda: cleanfid_fid.get_model_features(
                lambda z: next(batches),
                extractor.model,
                mode=args.mode,
                num_gen=n,
                batch_size=args.batch_size,
                device=device,
                verbose=False,
            )
        )
        feats, t_feat_ours = timed(lambda: extract_features(generated, extractor, args.batch_size))
        ref_feats = extract_features(ref_dir, extractor, args.batch_size)
        s_gen, s_ref = Statistics.of(feats), Statistics.of(ref_feats)
        _, t_fd_theirs = timed(lambda: cleanfid_fid.frechet_distance(s_gen.mu, s_gen.sigma, s_ref.mu, s_ref.sigma))
        _, t_fd_ours = timed(lambda: s_gen.distance(s_ref))

        # the metric as a trial runs it: first trial fills the reference cache, the next ones hit it
        def trial() -> float:
            ctx = EvalContext(
                network=torch.nn.Identity(),
                image_shape=tuple(reference.shape[1:]),
                device=device,
                dtype=torch.float32,
                samples=lambda: generated,
                reference=reference,
                dataset_fingerprint="bench-toy",
                fid=FidOptions(mode=args.mode, batch_size=args.batch_size),
                seed=0,
                cache_dir=workdir / "cache",
            )
            (value,) = METRICS["fid"]().compute(ctx)
            return value.value, value.attrs["reference_cache"]

        (cold_value, cold_cache), t_cold = timed(trial)
        (warm_value, warm_cache), t_warm = timed(trial)

        total = 2 * n
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); device {device}"
        )
        print(f"extractor: {note}")
        print(
            f"data: {n} generated (in memory) + {n} reference (PNG folder) images, "
            f"{args.resolution}x{args.resolution}, mode {args.mode}, batch {args.batch_size}"
        )
        print(f"cleanfid.fid.compute_fid : FID {theirs:.6f} {t_theirs:7.2f} s {total / t_theirs:8.1f} images/s")
        print(f"harness compute_fid      : FID {ours:.6f} {t_ours:7.2f} s {total / t_ours:8.1f} images/s")
        print(f"speed-up {t_theirs / t_ours:.2f}x   |delta FID| = {abs(theirs - ours):.2e}")
        print(
            f"breakdown, {n} generated images: features clean-fid {t_feat_theirs:.2f} s vs harness "
            f"{t_feat_ours:.2f} s ({t_feat_theirs / t_feat_ours:.2f}x); Frechet distance scipy sqrtm "
            f"{t_fd_theirs:.2f} s vs harness {t_fd_ours:.3f} s"
        )
        print(
            f"harness metric, trial 1 (reference cache {cold_cache}): FID {cold_value:.6f} {t_cold:6.2f} s; "
            f"trial 2 (reference cache {warm_cache}): FID {warm_value:.6f} {t_warm:6.2f} s "
            f"({n / t_warm:.1f} generated images/s, {t_theirs / t_warm:.2f}x clean-fid)"
        )
        print(
            f"feature check: max |harness - clean-fid| over generated features = "
            f"{np.abs(feats - feats_theirs).max():.1e}"
        )
        exact = exact_fid(feats, ref_feats)
        print(
            f"distance check on the harness's features: exact FID (nuclear norm, float64) {exact:.6f}; "
            f"|harness - exact| = {abs(s_gen.distance(s_ref) - exact):.1e}, |scipy sqrtm - exact| = "
            f"{abs(cleanfid_fid.frechet_distance(s_gen.mu, s_gen.sigma, s_ref.mu, s_ref.sigma) - exact):.1e}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
