"""Networks (simple diffusion Sec. 4, Fig. 8): every network x stem x dropout placement at tiny size."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from components import build, validate
from components.networks import NETWORKS, DropoutPlacement
from components.networks.blocks import ResBlock, TransformerBlock
from components.stems import STEMS

PLACEMENTS = {
    "off": {},
    "everywhere": {"rate": 0.2},
    "low_res": {"rate": 0.2, "max_resolution": 16},
}


def network(name: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return build("network", {"name": name, **params})


def perturb_output(model: nn.Module) -> None:
    """The output layer is zero at init, which blocks every gradient upstream; give it weights."""
    with torch.no_grad():
        model.out_conv.weight.normal_(0.0, 0.05)


def inputs(b: int = 2, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, side, side, generator=g), torch.linspace(-10, 10, b)


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("stem", sorted(STEMS))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_shapes_and_finite(name: str, stem: str, placement: str) -> None:
    model = network(name, stem=stem, dropout=PLACEMENTS[placement])
    z, logsnr = inputs()
    out = model(z, logsnr)
    assert out.shape == z.shape
    assert torch.isfinite(out).all()
    assert out.abs().max() == 0  # zero-initialised output layer (and zero stem bias)


@pytest.mark.parametrize("stem", sorted(STEMS))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_parameter_gets_a_gradient(name: str, stem: str) -> None:
    model = network(name, stem=stem, num_classes=5)
    perturb_output(model)
    z, logsnr = inputs(4)
    labels = torch.tensor([0, 3, 5, 5])  # 5 = the null label
    model(z, logsnr, labels).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_train_step_changes_output_from_zero(name: str) -> None:
    model = network(name, stem="wavelet")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    z, logsnr = inputs()
    for _ in range(2):
        opt.zero_grad()
        (model(z, logsnr) - z).square().mean().backward()
        opt.step()
    assert model(z, logsnr).abs().max() > 0


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_eval_is_deterministic_and_train_is_not(name: str) -> None:
    model = network(name, dropout={"rate": 0.5})
    perturb_output(model)
    z, logsnr = inputs()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(z, logsnr), model(z, logsnr))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(z, logsnr), model(z, logsnr))


@pytest.mark.parametrize(
    "placement", [{}, {"rate": 0.1}, {"rate": 0.1, "max_resolution": 32}, {"rate": 0.3, "max_resolution": 16}]
)
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_dropout_only_where_placed(name: str, placement: dict) -> None:
    spec = DropoutPlacement(**placement)
    model = network(name, resolution=64, dropout=placement)
    blocks = [m for m in model.modules() if isinstance(m, ResBlock | TransformerBlock)]
    assert {b.resolution for b in blocks} == {64, 32, 16}
    for block in blocks:
        rates = {m.p for m in block.modules() if isinstance(m, nn.Dropout)}
        assert rates == {spec.rate_at(block.resolution)}, block.resolution
    rates_outside = {m.p for m in model.modules() if isinstance(m, nn.Dropout)} - {
        m.p for b in blocks for m in b.modules() if isinstance(m, nn.Dropout)
    }
    assert rates_outside == set()
    if placement.get("max_resolution") == 16:
        assert {b.resolution for b in blocks if b.dropout.p > 0} == {16}


def test_dropout_placement_rule() -> None:
    assert DropoutPlacement().rate_at(8) == 0.0
    assert DropoutPlacement(rate=0.1).rate_at(512) == 0.1
    low = DropoutPlacement(rate=0.1, max_resolution=16)
    assert (low.rate_at(16), low.rate_at(32)) == (0.1, 0.0)
    with pytest.raises(ValueError):
        DropoutPlacement(rate=0.1, where=16)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_class_conditioning_and_null_label(name: str) -> None:
    model = network(name, num_classes=3)
    perturb_output(model)
    z, logsnr = inputs()
    with torch.no_grad():
        null = model(z, logsnr, None)
        assert torch.equal(null, model(z, logsnr, torch.tensor([3, 3])))
        assert not torch.allclose(null, model(z, logsnr, torch.tensor([0, 1])))
        assert not torch.allclose(model(z, logsnr), model(z, logsnr + 1.0))  # conditioned on logSNR


def test_uvit_without_conv_levels() -> None:
    """Stem output at or below the transformer resolution: the U-ViT is a transformer on the grid."""
    for stem, side in [({"name": "wavelet"}, 16), ({"name": "patch", "patch_size": 4}, 8)]:
        model = network("uvit", stem=stem)
        assert len(model.down) == 0 and len(model.up) == 0
        assert model.pos_emb.shape[1] == side * side
        perturb_output(model)
        z, logsnr = inputs()
        model(z, logsnr).square().mean().backward()
        assert model.conv_in.weight.grad.abs().sum() > 0


def test_unet_levels_reach_the_bottom_resolution() -> None:
    model = network("unet", resolution=128, stem="wavelet")  # grid 64: levels 64, 32, 16
    assert len(model.down) == 3
    assert {b.resolution for b in model.middle if isinstance(b, ResBlock)} == {16}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_bf16_autocast(name: str) -> None:
    model = network(name, stem="wavelet")
    perturb_output(model)
    z, logsnr = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(z, logsnr)
    out.float().square().mean().backward()
    assert out.shape == z.shape and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_spec_is_json_and_round_trips(name: str) -> None:
    spec = validate("network", {"name": name, "stem": {"name": "patch"}, "dropout": {"rate": 0.1}})
    dumped = spec.to_spec()
    assert dumped["stem"] == {"name": "patch", "patch_size": 2}
    assert dumped["dropout"] == {"rate": 0.1, "max_resolution": None}
    assert validate("network", json.loads(json.dumps(dumped))) == spec
    assert validate("network", name).stem == {"name": "none"}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_presets_are_data_and_every_key_is_an_override(name: str) -> None:
    cls = NETWORKS[name]
    keys = {frozenset(p) for p in cls.PRESETS.values()}
    assert len(keys) == 1
    assert set(next(iter(keys))) <= set(cls.model_fields)
    for preset in cls.PRESETS:
        for resolution in (32, 64, 128, 256, 512):
            for stem in sorted(STEMS):
                validate("network", {"name": name, "preset": preset, "resolution": resolution, "stem": stem})


def test_override_replaces_the_preset_value() -> None:
    spec = validate("network", {"name": "unet", "widths": [8, 8, 8, 8, 16, 24], "blocks": [2] * 6})
    assert spec.config()["widths"] == (8, 8, 8, 8, 16, 24)
    model = spec.instantiate()
    assert model.conv_in.out_channels == 16 and len(model.down[0]) == 2


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"preset": "huge"}, "preset"),
        ({"widht": 3}, "widht"),
        ({"depht": 3}, "depht"),
        ({"stem": {"name": "wavelet", "levels": 0}}, "levels"),
        ({"stem": "wavlet"}, "wavlet"),
        ({"stem": {"name": "patch", "patch_size": 4}, "resolution": 30}, "resolution"),
        ({"resolution": 1024}, "widths"),
        ({"dropout": {"rate": 1.5}}, "dropout.rate"),
    ],
)
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_bad_specs_name_the_key(name: str, spec: dict, key: str) -> None:
    if key in ("widht",) and name == "uvit" or key == "depht" and name == "unet":
        spec = {"depht": 3} if name == "unet" else {"widht": 3}
    with pytest.raises(ValueError, match=key):
        validate("network", {"name": name, **spec})


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_wrong_image_size_gives_the_stem_error(name: str) -> None:
    model = network(name, stem={"name": "wavelet", "levels": 2})
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 3, 30, 30), torch.zeros(1))
