"""``shapes``: the embedded default dataset, procedurally generated, deterministic per seed, any resolution.

Each image is a smooth background (a linear colour gradient plus a faint low-frequency ripple) with one to
three filled shapes (circle, rectangle/square, equilateral triangle) of random colour, size, position and
rotation, painted largest first. Fine detail comes from hard (aliased) shape edges, an optional dark
one-to-two pixel outline, a stripe or checker texture inside about two thirds of the shapes, and mild
per-pixel Gaussian noise (sigma = 0.03 of the range). So both global coherence (the layout, the gradient)
and high-frequency content (edges, texture, noise) are part of what a model must learn, which is what the
resolution-dependent parts of simple diffusion (schedule shift, stems, multiscale loss) act upon.

Scenes are drawn in image-width units, so one (seed, index) gives the same layout at every resolution;
texture periods are clamped to at least 2 pixels. Parameters are drawn per chunk of ``CHUNK`` images from
``default_rng([seed, chunk, stream])``, so the first k images of a larger set equal a set of k images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from pydantic import Field, model_validator

from components.datasets.base import MIN_IMAGES, ImageDataset, ReadLimits, cache_file, load_arrays, save_arrays
from components.registry import Component

GENERATOR_VERSION = 1  # bump whenever the pixels a (seed, index) produces change
CHUNK = 64  # images drawn and rendered together
MAX_SHAPES = 3
SHAPE_TYPES = ["circle", "rectangle", "triangle"]  # label = index of the largest shape's type
TRIANGLE_SCALE = 1.4  # circumradius / size, so triangles are about as large as circles
NOISE_STD = 0.03  # per-pixel Gaussian noise, fraction of the [0, 1] range


@dataclass(frozen=True)
class SceneStyle:
    """What a scene may contain. The defaults are the full dataset; every other style draws the same random
    numbers and then leaves things out, so a (seed, index) keeps its layout, colours and background."""

    max_shapes: int = MAX_SHAPES  # shapes per image: 1 .. 3 drawn uniformly, then at most max_shapes
    min_size: float = 0.10  # radius / half-width, image widths
    max_size: float = 0.32
    textures: bool = True  # stripes and checkers inside about two thirds of the shapes
    outlines: bool = True  # a dark rim on about half of the shapes
    noise_std: float = NOISE_STD  # per-pixel Gaussian noise, fraction of the [0, 1] range
    max_offset: float = 0.3  # shape centres lie within 0.5 +- max_offset image widths of the image centre
    gradient: bool = True  # a two-colour gradient with a ripple behind the shapes; False: the first colour only
    rotate: bool = True  # shapes at random angles; False: upright (square edges on the pixel grid)


def draw_scenes(rng: np.random.Generator, n: int, style: SceneStyle = SceneStyle()) -> dict[str, np.ndarray]:
    """Scene parameters of ``n`` images; shape slots sorted by area, largest first (slot 0 always active)."""
    count = np.minimum(rng.integers(1, MAX_SHAPES + 1, n), style.max_shapes)  # same draws in every style
    p = {
        "kind": rng.integers(0, len(SHAPE_TYPES), (n, MAX_SHAPES)),
        "size": rng.uniform(style.min_size, style.max_size, (n, MAX_SHAPES)),
        "aspect": np.where(rng.random((n, MAX_SHAPES)) < 0.4, 1.0, rng.uniform(0.45, 1.0, (n, MAX_SHAPES))),
        "cx": rng.uniform(0.5 - style.max_offset, 0.5 + style.max_offset, (n, MAX_SHAPES)),
        "cy": rng.uniform(0.5 - style.max_offset, 0.5 + style.max_offset, (n, MAX_SHAPES)),
        "angle": rng.uniform(0.0, 2 * math.pi, (n, MAX_SHAPES)),
        "colour": rng.random((n, MAX_SHAPES, 3)),
        "texture": rng.integers(0, 3, (n, MAX_SHAPES)),  # 0 flat, 1 stripes, 2 checker
        "period": rng.uniform(0.035, 0.12, (n, MAX_SHAPES)),  # texture period, image widths
        "tex_angle": rng.uniform(0.0, math.pi, (n, MAX_SHAPES)),
        "shade": rng.uniform(0.35, 0.75, (n, MAX_SHAPES)),  # second texture tone = shade * colour
        "outline": rng.random((n, MAX_SHAPES)) < 0.5,
    }
    if not style.textures:
        p["texture"] = np.zeros_like(p["texture"])
    if not style.outlines:
        p["outline"] = np.zeros_like(p["outline"])
    if not style.rotate:
        p["angle"] = np.zeros_like(p["angle"])
    background = {
        "bg0": rng.random((n, 3)),
        "bg1": rng.random((n, 3)),
        "bg_angle": rng.uniform(0.0, 2 * math.pi, n),
        "ripple_amp": rng.uniform(0.0, 0.08, n),
        "ripple_freq": rng.uniform(0.5, 2.0, n),  # cycles per image width
        "ripple_angle": rng.uniform(0.0, 2 * math.pi, n),
        "ripple_phase": rng.uniform(0.0, 2 * math.pi, n),
    }
    if not style.gradient:
        background["bg1"] = background["bg0"]
        background["ripple_amp"] = np.zeros_like(background["ripple_amp"])
    area_factor = np.array([math.pi, 4.0, 3.0 * math.sqrt(3.0) / 4.0 * TRIANGLE_SCALE**2])  # area / size^2
    aspect = np.where(p["kind"] == 1, p["aspect"], 1.0)
    area = area_factor[p["kind"]] * p["size"] ** 2 * aspect
    active = np.arange(MAX_SHAPES)[None, :] < count[:, None]
    order = np.argsort(-np.where(active, area, -1.0), axis=1, kind="stable")
    p = {k: np.take_along_axis(v, order[..., None] if v.ndim == 3 else order, axis=1) for k, v in p.items()}
    p["active"] = np.take_along_axis(active, order, axis=1)
    return {**p, **background}


def render(
    p: dict[str, np.ndarray], resolution: int, rng: np.random.Generator, noise_std: float = NOISE_STD
) -> np.ndarray:
    """Pixels of the scenes ``p``: uint8 ``[n, 3, R, R]``; ``rng`` draws the per-pixel noise (``noise_std``)."""
    r = resolution
    f32 = np.float32
    coord = ((np.arange(r, dtype=f32) + 0.5) / r).astype(f32)
    gx, gy = coord[None, None, :], coord[None, :, None]  # [1, 1, R], [1, R, 1]

    def col(v: np.ndarray) -> np.ndarray:  # [n] -> [n, 1, 1]
        return v.astype(f32)[:, None, None]

    s = (np.cos(col(p["bg_angle"])) * (gx - 0.5) + np.sin(col(p["bg_angle"])) * (gy - 0.5)) / math.sqrt(2) + 0.5
    ra = col(p["ripple_angle"])
    ripple = col(p["ripple_amp"]) * np.sin(
        2 * math.pi * col(p["ripple_freq"]) * (np.cos(ra) * gx + np.sin(ra) * gy) + col(p["ripple_phase"])
    )
    bg0, bg1 = p["bg0"].astype(f32)[:, :, None, None], p["bg1"].astype(f32)[:, :, None, None]
    img = bg0 * (1 - s[:, None]) + bg1 * s[:, None] + ripple[:, None]  # [n, 3, R, R]

    tri_normals = [(math.cos(2 * math.pi * k / 3), math.sin(2 * math.pi * k / 3)) for k in range(3)]
    for j in range(MAX_SHAPES):
        dx, dy = gx - col(p["cx"][:, j]), gy - col(p["cy"][:, j])  # [n, R, R]
        c, sn = np.cos(col(p["angle"][:, j])), np.sin(col(p["angle"][:, j]))
        xr, yr = c * dx + sn * dy, -sn * dx + c * dy  # shape-local coordinates
        size, kind = col(p["size"][:, j]), col(p["kind"][:, j])
        d_circle = np.sqrt(dx * dx + dy * dy) - size
        d_rect = np.maximum(np.abs(xr) - size, np.abs(yr) - size * col(p["aspect"][:, j]))
        d_tri = np.maximum.reduce([xr * a + yr * b for a, b in tri_normals]) - TRIANGLE_SCALE * size / 2
        dist = np.where(kind == 0, d_circle, np.where(kind == 1, d_rect, d_tri))  # < 0 inside
        inside = (dist <= 0) & p["active"][:, j, None, None]

        ta = col(p["tex_angle"][:, j])
        period = np.maximum(col(p["period"][:, j]), f32(2.0 / r))  # at least 2 pixels
        u = np.floor((np.cos(ta) * xr + np.sin(ta) * yr) / period)
        v = np.floor((-np.sin(ta) * xr + np.cos(ta) * yr) / period)
        texture = col(p["texture"][:, j])
        tone = np.where(texture == 1, u % 2, np.where(texture == 2, (u + v) % 2, 0.0))  # {0, 1}
        factor = 1.0 - tone * (1.0 - col(p["shade"][:, j]))
        edge = p["outline"][:, j, None, None] & (dist > -1.5 / r)  # dark rim, 1-2 pixels wide
        factor = np.where(edge, f32(0.25), factor)
        colour = p["colour"][:, j].astype(f32)[:, :, None, None]  # [n, 3, 1, 1]
        img = np.where(inside[:, None], colour * factor[:, None], img)

    img = img + rng.standard_normal(img.shape, dtype=f32) * f32(noise_std)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def generate_shapes(
    num_images: int, resolution: int, seed: int, style: SceneStyle = SceneStyle()
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 ``[N, 3, R, R]``, labels int64 ``[N]``), deterministic in (seed, resolution, style)."""
    images, labels = [], []
    for chunk in range((num_images + CHUNK - 1) // CHUNK):
        scenes = draw_scenes(np.random.default_rng([seed, chunk, 0]), CHUNK, style)
        take = min(CHUNK, num_images - chunk * CHUNK)
        scenes = {k: v[:take] for k, v in scenes.items()}
        images.append(render(scenes, resolution, np.random.default_rng([seed, chunk, 1]), style.noise_std))
        labels.append(scenes["kind"][:, 0].astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


class Shapes(Component):
    """Procedural shapes on gradients (the embedded default; nothing is downloaded).

    With ``labels=True`` the label is the type of the largest shape (``SHAPE_TYPES``; 3 classes). With
    ``cache_dir`` set, the generated set is saved to ``<cache_dir>/datasets/`` keyed by (seed, resolution,
    num_images, labels, style, generator version) and loaded from there next time. The style fields
    (``SceneStyle``) simplify the scenes: for example ``max_shapes: 1``, ``textures: false`` and
    ``outlines: false`` give one flat shape per image, which small models learn in far fewer steps.
    """

    resolution: int = Field(32, ge=8)  # image side, pixels
    num_images: int = Field(1024, ge=MIN_IMAGES)
    seed: int = Field(0, ge=0)
    labels: bool = False  # class = type of the largest shape
    cache_dir: str | None = None  # None: generate in memory, write nothing
    max_shapes: int = Field(MAX_SHAPES, ge=1, le=MAX_SHAPES)  # at most this many shapes per image
    min_size: float = Field(0.10, gt=0, le=0.5)  # shape radius / half-width, image widths
    max_size: float = Field(0.32, gt=0, le=0.5)
    textures: bool = True  # stripes and checkers inside about two thirds of the shapes
    outlines: bool = True  # a dark rim on about half of the shapes
    noise_std: float = Field(NOISE_STD, ge=0, le=0.5)  # per-pixel Gaussian noise, fraction of the range
    max_offset: float = Field(0.3, ge=0, le=0.5)  # shape centres within 0.5 +- max_offset image widths
    gradient: bool = True  # a two-colour gradient with a ripple behind the shapes; false: one flat colour
    rotate: bool = True  # shapes at random angles; false: upright

    @model_validator(mode="after")
    def _sizes_ordered(self) -> Shapes:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size: must not exceed max_size (got {self.min_size} > {self.max_size})")
        return self

    @property
    def style(self) -> SceneStyle:
        """The scene style these fields describe."""
        return SceneStyle(**{f.name: getattr(self, f.name) for f in fields(SceneStyle)})

    def probe(self, limits: ReadLimits) -> int:
        """Generated, so nothing to read: the number of images ``instantiate`` returns."""
        return self.num_images

    def instantiate(self) -> ImageDataset:
        style = "" if self.style == SceneStyle() else "-style" + "_".join(map(str, vars(self.style).values()))
        key = (
            f"shapes-v{GENERATOR_VERSION}-seed{self.seed}-res{self.resolution}-n{self.num_images}"
            f"-labels{int(self.labels)}{style}.npz"
        )
        path = cache_file(self.cache_dir, key)
        cached = load_arrays(path)
        if cached is not None and cached["images"].shape == (self.num_images, 3, self.resolution, self.resolution):
            images, labels = cached["images"], cached["labels"]
        else:
            images, labels = generate_shapes(self.num_images, self.resolution, self.seed, self.style)
            save_arrays(path, images=images, labels=labels)
        return ImageDataset(
            torch.from_numpy(np.ascontiguousarray(images)),
            torch.from_numpy(labels.astype(np.int64)) if self.labels else None,
            list(SHAPE_TYPES) if self.labels else None,
        )
