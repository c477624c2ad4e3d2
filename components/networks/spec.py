"""What every network spec shares: preset lookup and overrides, the stem, the dropout placement.

A network spec is a frozen pydantic model (``Component``); ``instantiate()`` builds the ``nn.Module``.
Every key of the network's presets is an optional field (``None`` = the preset's value), so a study can
start from a preset and change one thing; ``config()`` is the merged result.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from components.registry import Component, ComponentError, did_you_mean, validate_spec
from components.stems import STEMS


class DropoutPlacement(BaseModel):
    """Where dropout is active (simple diffusion Sec. 4: dropout only at low resolution helps).

    A block gets dropout ``rate`` when its feature maps are at most ``max_resolution`` on a side;
    ``max_resolution: null`` means every block; ``rate: 0`` means no dropout anywhere.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    rate: float = Field(0.0, ge=0.0, lt=1.0)  # dropout probability in the chosen blocks
    max_resolution: int | None = Field(None, gt=0)  # feature-map side, pixels of the network's grid

    def rate_at(self, resolution: int) -> float:
        """The dropout probability of a block whose feature maps are ``resolution`` on a side."""
        if self.max_resolution is None or resolution <= self.max_resolution:
            return self.rate
        return 0.0


class NetworkSpec(Component):
    """Fields shared by every network. Subclasses set ``PRESETS`` and declare each preset key as an
    optional override field, then implement ``check(config)`` and ``instantiate()``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    preset: str = "tiny"  # a key of PRESETS
    resolution: int = Field(32, gt=0)  # image side d, pixels; the harness sets it
    in_channels: int = Field(3, gt=0)  # image channels
    num_classes: int = Field(0, ge=0)  # 0 = unconditional; label num_classes = null label
    stem: dict[str, Any] = Field(default_factory=lambda: {"name": "none"}, validate_default=True)
    dropout: DropoutPlacement = DropoutPlacement()
    _stem: tuple[dict[str, Any], Component] | None = PrivateAttr(default=None)  # (the stem field, validated)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in cls.PRESETS:
            known = sorted(cls.PRESETS)
            raise ValueError(f"unknown preset '{v}'{did_you_mean(v, known)} known: {', '.join(known)}")
        return v

    @field_validator("stem", mode="before")
    @classmethod
    def _normalise_stem(cls, v: Any) -> dict[str, Any]:
        """A stem name or mapping -> ``{"name": ..., **every parameter}`` (plain, JSON-able)."""
        try:
            spec = validate_spec("stem", STEMS, v)
        except ComponentError as err:
            raise ValueError(f"{err.key}: {err.message}") from None
        return {"name": spec.name, **spec.model_dump(mode="json")}

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        factor = self.stem_spec.factor
        if self.resolution % factor:
            raise ValueError(
                f"resolution: {self.resolution} is not divisible by the factor {factor} of stem '{self.stem['name']}'"
            )
        self.check(self.config())
        return self

    @property
    def stem_spec(self) -> Component:
        """The validated stem spec (``factor``, ``out_channels``, ``make``), validated once per stem."""
        if self._stem is None or self._stem[0] is not self.stem:
            self._stem = (self.stem, validate_spec("stem", STEMS, self.stem))
        return self._stem[1]

    @property
    def grid(self) -> int:
        """Side of the feature maps of the network's first convolution: resolution / stem factor."""
        return self.resolution // self.stem_spec.factor

    def config(self) -> dict[str, Any]:
        """The preset's values with every non-None override applied."""
        merged = dict(self.PRESETS[self.preset])
        for key in merged:
            value = getattr(self, key)
            if value is not None:
                merged[key] = value
        return merged

    def core_width(self) -> int:  # pragma: no cover - overridden
        """Channels of the lowest-resolution part, where the capacity is (simple diffusion Sec. 4: scale at
        16 x 16): the U-Net's bottom width, the U-ViT's transformer width. Training recipes scale with it."""
        raise NotImplementedError

    def check(self, config: dict[str, Any]) -> None:  # pragma: no cover - overridden
        """Raise ValueError (message starting with the key) when ``config`` does not fit the grid."""


def halvings(grid: int, stop: int) -> list[int]:
    """[grid, grid/2, ...] while the side is above ``stop`` and even: the sides of the levels."""
    sides = [grid]
    while sides[-1] > stop and sides[-1] % 2 == 0:
        sides.append(sides[-1] // 2)
    return sides


def last(values: tuple[int, ...], n: int, key: str, what: str) -> tuple[int, ...]:
    """The last ``n`` entries of a finest-first per-level list, or a ValueError naming ``key``."""
    if len(values) < n:
        raise ValueError(f"{key}: has {len(values)} entries but {what} needs {n}")
    return tuple(values[len(values) - n :])
