"""IV-tuning on timm's plain ViTs: the paper's #TP (Tables I, VII), the zero-init identity
against timm's own forward for every block family, the cascaded stream against a literal
per-layer formulation, frozen weights under training, the feature pyramid's strides, and
timm-layout and EVA02-layout checkpoints.

The identity and cascade tests run each family at test size (64 wide, 8 layers: the same
timm classes, block types, prefix tokens, rotary or absolute position embeddings and,
for SAM, windowed and global layers); the counts use the full models on the meta device.
"""
import pytest
import torch

from ivtuning_ros.model import (
    BackboneConfig,
    ConfigError,
    PrompterConfig,
    WeightsError,
    build_backbone,
    load_config,
    parameter_summary,
)
from ivtuning_ros.model.backbones.vit import block_residuals, embed, patch_grid

from .conftest import MODELS, randomize_trainable
from .test_prompter import plain_alpha, plain_beta

FAMILIES = ["eva02_l", "clip_l", "mae_l", "sam_h", "dinov3_l", "dinov3_s"]
LAYERS = [1, 3, 5, 7]


def small(variant: str, **overrides) -> BackboneConfig:
    """A test-size model of the variant's family, reading four layers."""
    values = {"variant": variant, "embed_dim": 64, "depths": [8], "num_heads": [2],
              "feature_layers": LAYERS}
    return BackboneConfig(**{**values, **overrides})


def small_backbone(variant: str, ir_channels: int = 1, **overrides):
    torch.manual_seed(0)
    prompter = PrompterConfig(beta_hidden=16, ir_in_channels=ir_channels)
    return build_backbone(small(variant, **overrides), prompter, load_weights=False).eval()


def images(height=160, width=224, batch=2, ir_channels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=generator),
            torch.randn(batch, ir_channels, height, width, generator=generator))


@pytest.mark.parametrize("config_name, low, high", [
    ("ivt_eva02_l_segformer_mfnet.yaml", 7.5, 7.6),
    ("ivt_clip_l_segformer_mfnet.yaml", 7.5, 7.6),
    ("ivt_mae_l_segformer_mfnet.yaml", 7.5, 7.6),
    ("ivt_dinov3_l_segformer_mfnet.yaml", 7.5, 7.6),
    ("ivt_sam_h_segformer_mfnet.yaml", 12.15, 12.25),
])
def test_trainable_backbone_params_match_tables_i_and_vii(config_name, low, high):
    with torch.device("meta"):
        backbone = build_backbone(load_config(MODELS / config_name), load_weights=False)
    trainable = parameter_summary(backbone)["backbone_trainable_params"] / 1e6
    assert low <= trainable <= high


@pytest.mark.parametrize("variant", FAMILIES)
def test_untrained_prompter_leaves_each_vit_unchanged(variant):
    backbone = small_backbone(variant)
    rgb, ir = images()
    with torch.inference_mode():
        reference = backbone.vit.forward_intermediates(rgb, indices=LAYERS, norm=False,
                                                       intermediates_only=True)
        for infrared in (ir, ir * 50.0, None):
            prompted = backbone.layer_maps(rgb, infrared)
            for a, b in zip(prompted, reference, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def literal_layers(backbone, rgb, ir):
    """Eq. 1 per layer, written out on the patch tokens with plain prompter modules."""
    x, layout = embed(backbone.vit, rgb)
    z_ir = backbone.ir_patch_embed(ir) if ir is not None else None
    prompt = plain_alpha(backbone.mp_alpha, patch_grid(x, layout), z_ir)
    grid = patch_grid(x, layout) + prompt
    x = _with_patches(x, grid, layout)
    maps = []
    for index, block in enumerate(backbone.vit.blocks[: LAYERS[-1] + 1]):
        attention, mlp = block_residuals(block, layout)
        beta = backbone.mp_beta[0][index]
        x = attention(x)
        x = _with_patches(x, patch_grid(x, layout) + plain_beta(beta, patch_grid(x, layout),
                                                                 prompt), layout)
        x = mlp(x)
        prompt = plain_beta(beta, patch_grid(x, layout), prompt)  # P^l
        x = _with_patches(x, patch_grid(x, layout) + prompt, layout)
        if index in LAYERS:
            maps.append(patch_grid(x, layout).permute(0, 3, 1, 2))
    return maps


def _with_patches(x, grid, layout):
    if not layout.sequence:
        return grid
    return torch.cat([x[:, : layout.prefix], grid.flatten(1, 2)], dim=1)


@pytest.mark.parametrize("variant", ["dinov3_s", "sam_h", "clip_l"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_cascaded_stream_equals_the_literal_per_layer_formulation(variant, train_mode):
    backbone = small_backbone(variant)
    randomize_trainable(backbone)
    backbone.train(train_mode)
    rgb, ir = images()
    with torch.no_grad():
        fast = backbone.layer_maps(rgb, ir)
        literal = literal_layers(backbone, rgb, ir)
    for a, b in zip(fast, literal, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_an_optimiser_step_changes_only_trainable_tensors():
    backbone = small_backbone("dinov3_s").train()
    randomize_trainable(backbone)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad],
                                  lr=1e-2)
    rgb, ir = images(batch=2)
    sum(f.square().mean() for f in backbone(rgb, ir).features).backward()
    optimizer.step()
    after = backbone.state_dict()
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    frozen = [k for k in before if k.startswith("vit.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not any(name.startswith("vit.") for name in trainable)
    assert all(not torch.equal(before[k], after[k]) for k in trainable)
    assert not backbone.vit.training


def test_pyramid_gives_strides_4_to_32_for_640x512():
    config = load_config(MODELS / "ivt_dinov3_s_realtime.yaml")
    backbone = build_backbone(config, load_weights=False).eval()
    with torch.inference_mode():
        features = backbone(*images(512, 640, batch=1)).features
    assert [tuple(f.shape[1:]) for f in features] == [
        (dim, 512 // stride, 640 // stride)
        for dim, stride in zip(config.backbone.stage_dims, (4, 8, 16, 32), strict=True)]


def to_eva02_layout(state: dict) -> dict:
    """timm's Eva keys -> the original EVA02 checkpoint's (the inverse of timm's filter)."""
    renames = [("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."), ("mlp.fc2.", "mlp.w3."),
               ("mlp.norm.", "mlp.ffn_ln."), ("attn.q_proj.bias", "attn.q_bias"),
               ("attn.v_proj.bias", "attn.v_bias")]
    out = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return {"module": {**out, "mask_token": torch.zeros(1, 1, value.shape[-1])}}


def test_timm_and_eva02_layout_checkpoints_give_identical_features(tmp_path):
    source = small_backbone("eva02_l")
    with torch.no_grad():
        for parameter in source.vit.parameters():
            parameter.normal_(0, 0.05)
    state = source.vit.state_dict()
    assert "blocks.0.mlp.fc1_g.weight" in state and "blocks.0.attn.q_proj.bias" in state
    torch.save(state, tmp_path / "timm.pth")
    torch.save(to_eva02_layout(state), tmp_path / "eva02.pt")
    rgb, ir = images(batch=1)
    outputs = []
    for name in ("timm.pth", "eva02.pt"):
        config = small("eva02_l", weights=str(tmp_path / name))
        loaded = build_backbone(config, PrompterConfig(beta_hidden=16)).eval()
        with torch.inference_mode():
            outputs.append(loaded.layer_maps(rgb, ir))
    with torch.inference_mode():
        expected = source.layer_maps(rgb, ir)
    for a, b, c in zip(*outputs, expected, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_a_patch_14_checkpoint_is_resampled_into_a_patch_16_backbone(tmp_path):
    patch14 = small_backbone("eva02_l", patch_size=14)
    torch.save(patch14.vit.state_dict(), tmp_path / "p14.pth")
    loaded = build_backbone(small("eva02_l", weights=str(tmp_path / "p14.pth")),
                            load_weights=True)
    assert loaded.vit.patch_embed.proj.weight.shape[-2:] == (16, 16)
    assert torch.equal(loaded.vit.blocks[0].attn.q_proj.weight,
                       patch14.vit.blocks[0].attn.q_proj.weight)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    torch.save(small_backbone("mae_l").vit.state_dict(), tmp_path / "mae.pth")
    with pytest.raises(WeightsError, match="ViT weights do not fit"):
        build_backbone(small("clip_l", embed_dim=96, weights=str(tmp_path / "mae.pth")))


@pytest.mark.parametrize("overrides, message", [
    ({"depths": [4, 4], "num_heads": [2, 2]}, "plain ViT: give depths as"),
    ({"feature_layers": [0, 1, 2]}, "four increasing layer indices"),
    ({"feature_layers": [0, 1, 2, 8]}, "four increasing layer indices"),
])
def test_bad_vit_config_names_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small("dinov3_s", **overrides)
