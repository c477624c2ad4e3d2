"""FLOPs of one forward pass of one image, counted with fvcore plus the handlers fvcore lacks.

Convention (recorded with every value): ``macs_per_image`` is the number of multiply-accumulates of the
linear algebra of one forward pass at batch 1 (convolutions, linear layers, matmul/bmm/baddbmm/addmm/mm,
einsum, and attention's Q K^T and A V); ``flops_per_image = 2 x macs_per_image``. Normalisations,
activations, softmax, residual adds, up/down-sampling and pooling are deliberately not counted (they are
O(activations), not O(activations x width), and counting conventions for them differ between tools);
their groups are listed under ``attrs["ignored_ops"]``.

Why handlers: fvcore has none for ``aten::scaled_dot_product_attention`` (attention would silently count
zero, PAPER.md Sec. 6) nor for ``aten::baddbmm``, and its ``einsum`` handler parses numpy's rounded
FLOP string (off by up to 0.05 %). Every matmul-like handler here counts MACs = numel(output) x K.
"""

from __future__ import annotations

import string
import warnings
from collections import Counter
from math import prod
from typing import Any, ClassVar

import numpy as np
import torch

from harness.metrics.base import EvalContext, Metric, MetricValue, unavailable

with warnings.catch_warnings():  # fvcore.nn's __init__ calls the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn.jit_analysis import JitModelAnalysis
    from fvcore.nn.jit_handles import conv_flop_jit, get_shape

CONVENTION = "flops = 2 x MACs; per image (batch 1); one forward pass; matmul/conv/attention MACs only"


def _mm_like(name: str, a: int, b: int):
    """MACs of a matrix product whose operands are inputs[a] (..., K) and inputs[b] (..., K, N)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        k = get_shape(inputs[a])[-1]
        return Counter({name: prod(get_shape(outputs[0])) * k})

    return handle


def _linear(inputs: list[Any], outputs: list[Any]) -> Counter:
    return Counter({"linear": prod(get_shape(outputs[0])) * get_shape(inputs[1])[-1]})


def _conv(inputs: list[Any], outputs: list[Any]) -> Counter:
    return Counter({"conv": int(sum(conv_flop_jit(inputs, outputs).values()))})


def _attention(inputs: list[Any], outputs: list[Any]) -> Counter:
    """SDPA: q [..., L, E], k [..., S, E], v [..., S, Ev]: L*S*E MACs for Q K^T plus L*S*Ev for A V."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = prod(get_shape(outputs[0])[:-2])  # broadcast batch and heads (GQA: the query heads)
    length, source = q[-2], k[-2]
    return Counter({"scaled_dot_product_attention": batch * length * source * (q[-1] + v[-1])})


def _einsum(inputs: list[Any], outputs: list[Any]) -> Counter:
    """Two operands: product of all index sizes. More: pairwise contractions along numpy's optimal path."""
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    lhs, arrow, out = equation.partition("->")
    terms = lhs.split(",")
    ell = ""
    if "..." in lhs:  # spell the ellipsis out with unused letters
        free = [c for c in string.ascii_letters if c not in equation]
        extra = [len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes, strict=True)]
        ell = "".join(free[: max(extra)])
        terms = [t.replace("...", ell[len(ell) - e :]) for t, e in zip(terms, extra, strict=True)]
        out = out.replace("...", ell)
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        for c, n in zip(term, shape, strict=True):
            sizes[c] = max(sizes.get(c, 1), n)  # broadcast dimensions of size 1
    if not arrow:
        joined = "".join(terms)
        out = ell + "".join(sorted(c for c in sizes if joined.count(c) == 1 and c not in ell))
    if len(terms) <= 2:
        return Counter({"einsum": prod(sizes.values())})
    arrays = [np.zeros([sizes[c] for c in t]) for t in terms]
    path = np.einsum_path(",".join(terms) + "->" + out, *arrays, optimize="optimal")[0][1:]
    live, macs = list(terms), 0
    for pair in path:
        picked = [live[i] for i in pair]
        rest = [t for i, t in enumerate(live) if i not in pair]
        letters = set("".join(picked))
        macs += prod(sizes[c] for c in letters)
        keep = set("".join(rest) + out)
        live = rest + ["".join(sorted(c for c in letters if c in keep))]
    return Counter({"einsum": macs})


COUNTED = {
    "aten::_convolution": _conv,
    "aten::linear": _linear,
    "aten::addmm": _mm_like("addmm", 1, 2),
    "aten::mm": _mm_like("mm", 0, 1),
    "aten::matmul": _mm_like("matmul", 0, 1),
    "aten::bmm": _mm_like("bmm", 0, 1),
    "aten::baddbmm": _mm_like("baddbmm", 1, 2),
    "aten::einsum": _einsum,
    "aten::scaled_dot_product_attention": _attention,
    "aten::_scaled_dot_product_flash_attention_for_cpu": _attention,
    "aten::_scaled_dot_product_flash_attention": _attention,
    "aten::_scaled_dot_product_efficient_attention": _attention,
    "aten::_scaled_dot_product_cudnn_attention": _attention,
}

# O(activations) ops not counted (see the module docstring); fvcore already ignores reshapes and copies.
_IGNORED_GROUPS = {
    "elementwise and activations": """add add_ sub sub_ rsub mul mul_ div div_ neg pow sqrt rsqrt exp log
        sin cos tanh sigmoid silu silu_ gelu relu relu_ mish softmax log_softmax square abs reciprocal erf
        lerp addcmul where clamp_min clamp_max minimum maximum lt le ne sign outer round log1p""",
    "reductions and normalisations": """mean sum var std norm linalg_vector_norm amax amin logsumexp
        group_norm layer_norm batch_norm instance_norm rms_norm""",
    "resampling, pooling, padding": """upsample_nearest2d upsample_bilinear2d upsample_bicubic2d avg_pool2d
        max_pool2d adaptive_avg_pool2d pixel_shuffle pixel_unshuffle pad reflection_pad2d replication_pad2d
        flip repeat repeat_interleave tile""",
    "data movement, constants, regularisation": """dropout feature_dropout embedding one_hot clone movedim
        unflatten expand_as view_as _unsafe_view as_strided alias lift_fresh ones_like empty_like rand_like
        randn_like linspace scalar_tensor new_ones fill_ zero_ cumsum swapaxes numpy_T mT resolve_conj
        resolve_neg masked_fill_""",
}
IGNORED = sorted(f"aten::{op}" for ops in _IGNORED_GROUPS.values() for op in ops.split())


def flop_analysis(network: torch.nn.Module, image_shape: tuple[int, int, int]) -> JitModelAnalysis:
    """fvcore analysis of ``network(z [1, C, H, W], logsnr [1])`` with this module's handlers only
    (``JitModelAnalysis``, not ``FlopCountAnalysis``, whose default handlers count norms and upsampling)."""
    param = next(network.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    z = torch.zeros((1, *image_shape), device=device, dtype=dtype)
    logsnr = torch.zeros(1, device=device, dtype=dtype)
    analysis = JitModelAnalysis(network, (z, logsnr))
    analysis.set_op_handle(**COUNTED)
    analysis.set_op_handle(**{op: None for op in IGNORED})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis


def count_flops(network: torch.nn.Module, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """``macs_per_image``, ``flops_per_image`` (2 x MACs), ``params``, ``by_operator``, ``unsupported_ops``.

    ``network`` is called once as ``network(z [1, C, H, W], logsnr [1])`` (traced, no gradients)."""
    analysis = flop_analysis(network, image_shape)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs = int(analysis.total())
    finally:
        network.train(was_training)
    return {
        "macs_per_image": macs,
        "flops_per_image": 2 * macs,
        "params": sum(p.numel() for p in network.parameters()),
        "by_operator": {k: int(v) for k, v in sorted(analysis.by_operator().items())},
        "unsupported_ops": dict(sorted(analysis.unsupported_ops().items())),
    }


def flops_of(ctx: EvalContext) -> dict[str, Any]:
    """``count_flops`` of the context's network, computed once per evaluation (FLOPs and MFU share it)."""
    key = ("flops", tuple(ctx.image_shape))
    if key not in ctx.memo:
        ctx.memo[key] = count_flops(ctx.network, ctx.image_shape)
    return ctx.memo[key]


class Flops(Metric):
    """FLOPs and MACs of one forward pass of one image, and the parameter count."""

    outputs: ClassVar[tuple[str, ...]] = ("flops_per_image", "macs_per_image", "params")

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        try:
            counts = flops_of(ctx)
        except Exception as err:  # a network fvcore cannot trace must not end the trial
            reason = f"fvcore could not trace the network: {type(err).__name__}: {str(err).splitlines()[0]}"
            return [unavailable(n, reason) for n in ("flops_per_image", "macs_per_image", "params")]
        attrs = {
            "convention": CONVENTION,
            "counter": "fvcore 0.1.5 + harness handlers",
            "image_shape": list(ctx.image_shape),
            "by_operator": counts["by_operator"],
            "unsupported_ops": counts["unsupported_ops"],
            "ignored_ops": sorted(_IGNORED_GROUPS),
        }
        return [
            MetricValue("flops_per_image", counts["flops_per_image"], "FLOP", attrs),
            MetricValue("macs_per_image", counts["macs_per_image"], "MAC", attrs),
            MetricValue("params", counts["params"], "parameters", {"counted": "all parameters"}),
        ]
