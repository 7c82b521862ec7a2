"""Swin checkpoint layouts: Microsoft and mmdet checkpoints written by the tests from the
published key maps convert to torchvision layout and reproduce the backbone exactly."""
import re

import pytest
import torch
from torchvision.models.swin_transformer import PatchMerging

from ivtuning_ros.commands.cli import main
from ivtuning_ros.model import WeightsError, build_backbone, load_config
from ivtuning_ros.model.backbones.swin_weights import (
    concat_to_unfold_order,
    load_swin_checkpoint,
    load_swin_state,
    to_torchvision_layout,
    unfold_to_concat_order,
)

from .conftest import MODELS, randomize_trainable


def swin_state(backbone):
    return {k: v.clone() for k, v in backbone.swin.state_dict().items()}


def _block(key):
    match = re.fullmatch(r"features\.(\d+)\.(\d+)\.(.+)", key)
    return (int(match[1]) - 1) // 2, match[2], match[3]


def to_microsoft(state):
    """torchvision -> Microsoft's original layout (the inverse of the published map)."""
    out = {"head.weight": torch.zeros(10, 8), "norm.weight": torch.ones(8)}
    for key, value in state.items():
        if key.startswith("features.0.0."):
            out["patch_embed.proj." + key.split(".")[-1]] = value
        elif key.startswith("features.0.2."):
            out["patch_embed.norm." + key.split(".")[-1]] = value
        elif re.match(r"features\.\d+\.(reduction|norm)", key):
            index, rest = key.split(".", 2)[1:]
            out[f"layers.{(int(index) - 2) // 2}.downsample.{rest}"] = value
        else:
            stage, block, rest = _block(key)
            rest = rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            out[f"layers.{stage}.blocks.{block}.{rest}"] = value
    return out


def to_mmdet(state, out_norms):
    """torchvision -> mmdet detector layout, PatchMerging in nn.Unfold order."""
    out = {"neck.convs.0.conv.weight": torch.zeros(1)}
    for key, value in to_microsoft(state).items():
        if key.startswith(("head.", "norm.")):
            continue
        key = key.replace("layers.", "stages.").replace("patch_embed.proj.",
                                                        "patch_embed.projection.")
        key = key.replace("attn.", "attn.w_msa.").replace("mlp.fc1.", "ffn.layers.0.0.")
        key = key.replace("mlp.fc2.", "ffn.layers.1.")
        if "downsample" in key:
            value = concat_to_unfold_order(value)
        out["backbone." + key] = value
    for key, value in out_norms.state_dict().items():
        index, name = key.split(".")
        out[f"backbone.norm{index}.{name}"] = value
    return out


@pytest.fixture
def trained_backbone(tiny_backbone):
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in tiny_backbone.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    randomize_trainable(tiny_backbone)
    return tiny_backbone


def outputs(backbone, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randn(1, 3, 96, 64, generator=generator)
    ir = torch.randn(1, 1, 96, 64, generator=generator)
    with torch.no_grad():
        return backbone(rgb, ir).features


def fresh_backbone(config, state):
    torch.manual_seed(99)
    backbone = build_backbone(config).eval()
    backbone.load_state_dict(state, strict=False)  # prompter only; Swin comes from the file
    return backbone


def test_unfold_order_round_trip_and_semantics():
    """mmdet's Unfold-based PatchMerging with its weights == torchvision's with converted ones."""
    torch.manual_seed(0)
    merge = PatchMerging(8).eval()
    with torch.no_grad():
        merge.norm.weight.normal_()
        merge.norm.bias.normal_()
    x = torch.randn(2, 6, 10, 8)
    unfolded = torch.nn.functional.unfold(x.permute(0, 3, 1, 2), 2, stride=2)
    unfolded = unfolded.transpose(1, 2).reshape(2, 3, 5, 32)
    mm_weight = concat_to_unfold_order(merge.reduction.weight)
    mm_norm_w, mm_norm_b = (concat_to_unfold_order(t) for t in (merge.norm.weight,
                                                                  merge.norm.bias))
    with torch.no_grad():
        mmdet = torch.nn.functional.layer_norm(unfolded, (32,), mm_norm_w, mm_norm_b)
        mmdet = mmdet @ mm_weight.T
        torch.testing.assert_close(mmdet, merge(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(unfold_to_concat_order(mm_weight), merge.reduction.weight)
    assert not torch.equal(mm_weight, merge.reduction.weight)


def test_microsoft_checkpoint_reproduces_the_backbone(trained_backbone, tiny_config, tmp_path):
    path = tmp_path / "swin_ms.pth"
    torch.save({"model": to_microsoft(swin_state(trained_backbone))}, path)
    tiny_config.backbone.weights = str(path)
    restored = fresh_backbone(tiny_config, {k: v for k, v in trained_backbone.state_dict().items()
                                            if not k.startswith("swin.")})
    for a, b in zip(outputs(trained_backbone), outputs(restored), strict=True):
        assert torch.equal(a, b)


def test_mmdet_checkpoint_reproduces_backbone_and_output_norms(trained_backbone, tiny_config,
                                                               tmp_path):
    path = tmp_path / "dino_swin_mmdet.pth"
    torch.save({"state_dict": to_mmdet(swin_state(trained_backbone), trained_backbone.out_norms),
                "meta": {}}, path)
    tiny_config.backbone.weights = str(path)
    prompter_only = {k: v for k, v in trained_backbone.state_dict().items()
                     if not k.startswith(("swin.", "out_norms."))}
    restored = fresh_backbone(tiny_config, prompter_only)
    for a, b in zip(outputs(trained_backbone), outputs(restored), strict=True):
        assert torch.equal(a, b)


def test_missing_and_unexpected_keys_are_listed(trained_backbone):
    state = to_torchvision_layout(to_microsoft(swin_state(trained_backbone)))
    del state["features.1.0.norm1.weight"]
    state["features.9.0.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError) as error:
        load_swin_state(trained_backbone, state)
    message = str(error.value)
    assert "missing (1): features.1.0.norm1.weight" in message
    assert "unexpected (1): features.9.0.extra" in message


def test_unplaceable_keys_in_a_foreign_layout_are_listed(trained_backbone):
    state = to_microsoft(swin_state(trained_backbone))
    state["layers.0.blocks.0.adapter.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"layers\.0\.blocks\.0\.adapter\.weight"):
        to_torchvision_layout(state)


def test_wrong_variant_is_reported_with_shapes(trained_backbone, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(swin_state(trained_backbone), path)
    other = build_backbone(load_config(MODELS / "ivt_tiny_test.yaml",
                                       ["backbone.embed_dim=24", "backbone.num_heads=[1,2,2,4]"]))
    with pytest.raises(WeightsError, match="wrong variant or window_size"):
        load_swin_checkpoint(other, path)


def test_convert_command_writes_a_loadable_checkpoint(trained_backbone, tmp_path):
    source, target = tmp_path / "ms.pth", tmp_path / "out" / "tv.pth"
    torch.save({"model": to_microsoft(swin_state(trained_backbone))}, source)
    config = str(MODELS / "ivt_tiny_test.yaml")
    assert main(["convert", str(source), str(target), "--config", config, "--quiet"]) == 0
    converted = torch.load(target, weights_only=True)
    expected = {k: v for k, v in swin_state(trained_backbone).items()
                if not k.endswith("relative_position_index")}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert main(["convert", str(source), str(target), "--quiet"]) == 2  # exists, no --force


def test_convert_command_fails_in_one_line_on_a_missing_file(tmp_path, capsys):
    # In-process (the console script is `main`; a subprocess costs ~8 s here).
    assert main(["convert", str(tmp_path / "none.pth"), str(tmp_path / "out.pth"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ivtuning convert: error: checkpoint '{tmp_path / 'none.pth'}' does not exist")
