"""The IV-tuning backbone: shapes, frozen parts, the zero-init identity, RGB-only mode,
gradient checkpointing, and the exact equality of the fast prompt path with the paper's
literal eq. 1 (plain prompter modules, test_prompter.py)."""
import importlib.util
import json

import pytest
import torch

from ivtuning_ros.model import build_backbone, load_config
from ivtuning_ros.model.adapters.ivtuning.ir_embed import ir_embed_to_mono, patch_linear
from ivtuning_ros.model.backbones.swin import swin_stages, window_attention

from .conftest import MODELS, randomize_trainable
from .test_prompter import plain_alpha, plain_beta


def images(height, width, batch=1, ir_channels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, 3, height, width, generator=generator)
    ir = torch.randn(batch, ir_channels, height, width, generator=generator)
    return rgb, ir


def literal_forward(backbone, rgb, ir, cascade=True):
    """Paper eq. 1 written out: each MP-beta (eq. 7, plain modules) called twice per layer
    on the previous layer's prompt (IR term recomputed); the second call's output is the
    next layer's prompt."""
    z_vis = backbone.swin.features[0](rgb)
    z_ir = backbone.ir_patch_embed(ir) if ir is not None else None
    prompt = plain_alpha(backbone.mp_alpha, z_vis, z_ir)
    x = z_vis + prompt
    features = []
    for stage, (merge, blocks) in enumerate(swin_stages(backbone.swin)):
        if merge is not None:
            x, prompt = merge(x), merge(prompt)
        betas = backbone.mp_beta[stage]
        for index, block in enumerate(blocks):
            x = x + window_attention(block.norm1(x), block.attn)
            if index < len(betas):
                x = x + plain_beta(betas[index], x, prompt)
            x = x + block.mlp(block.norm2(x))
            if index < len(betas):
                output = plain_beta(betas[index], x, prompt)
                x = x + output
                prompt = output if cascade else prompt  # P^l, or the stage prompt again
        features.append(backbone.out_norms[stage](x).permute(0, 3, 1, 2))
    return features


@pytest.mark.parametrize("height, width", [(512, 640), (480, 640), (75, 101)])
def test_stage_shapes_for_any_input_size(tiny_backbone, height, width):
    rgb, ir = images(height, width)
    with torch.no_grad():
        out = tiny_backbone(rgb, ir)
    assert out.ir_used
    dims = [16, 32, 64, 128]
    h, w = -(-height // 4), -(-width // 4)
    for stage, feature in enumerate(out.features):
        assert feature.shape == (1, dims[stage], h, w)
        h, w = -(-h // 2), -(-w // 2)


def test_swin_t_runs_at_thermal_camera_resolution():
    backbone = build_backbone(load_config(MODELS / "ivt_swin_t.yaml")).eval()
    rgb, ir = images(512, 640)
    with torch.no_grad():
        out = backbone(rgb, ir)
    assert [tuple(f.shape[1:]) for f in out.features] == [
        (96, 128, 160), (192, 64, 80), (384, 32, 40), (768, 16, 20)]


def test_untrained_prompter_leaves_the_frozen_swin_unchanged(tiny_backbone):
    """s3/s4 start at zero: output == torchvision's own Swin blocks + output norms."""
    rgb, ir = images(192, 256)
    with torch.no_grad():
        ours = tiny_backbone(rgb, ir).features
        x = tiny_backbone.swin.features[0](rgb)
        expected = []
        for stage, (merge, blocks) in enumerate(swin_stages(tiny_backbone.swin)):
            x = blocks(merge(x) if merge is not None else x)  # torchvision's block forward
            expected.append(tiny_backbone.out_norms[stage](x).permute(0, 3, 1, 2))
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("with_ir", [True, False])
def test_fast_prompt_path_equals_literal_eq1(tiny_backbone, train_mode, with_ir):
    randomize_trainable(tiny_backbone)
    tiny_backbone.train(train_mode)
    rgb, ir = images(96, 128, batch=2)
    ir = ir if with_ir else None
    with torch.no_grad():
        fast = tiny_backbone(rgb, ir).features
        literal = literal_forward(tiny_backbone, rgb, ir)
    for a, b in zip(fast, literal, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_train_mode_matches_literal_eq1_in_gradients_too(tiny_config):
    """The module path (training) against eq. 1 with plain modules: the same loss
    gradients for every trainable weight (BatchNorm in train mode on both sides)."""
    fast, literal = (build_backbone(tiny_config) for _ in range(2))
    for backbone in (fast, literal):
        randomize_trainable(backbone)
        backbone.train()
    literal.load_state_dict(fast.state_dict())
    rgb, ir = images(64, 80, batch=2)
    sum(f.square().mean() for f in fast(rgb, ir).features).backward()
    sum(f.square().mean() for f in literal_forward(literal, rgb, ir)).backward()
    scale = max(p.grad.abs().max() for p in literal.parameters() if p.grad is not None)
    for (name, a), b in zip(fast.named_parameters(), literal.parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    plain, checkpointed = (build_backbone(tiny_config) for _ in range(2))
    randomize_trainable(plain)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing = True
    rgb, ir = images(64, 80, batch=2)
    for backbone in (plain, checkpointed):
        backbone.train()
        sum(f.square().mean() for f in backbone(rgb, ir).features).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_patch_embedding_as_linear_equals_the_strided_conv(in_channels):
    """A p x p conv with stride p is a linear map of each patch: same tokens, same
    gradients (the IR embedding, trained, uses it)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, 16, 4, stride=4)
    image = torch.randn(2, in_channels, 24, 36, requires_grad=True)
    fast = patch_linear(image, conv)
    plain = conv(image).permute(0, 2, 3, 1)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(fast.square().sum(), [image, *conv.parameters()])
    plain_grads = torch.autograd.grad(plain.square().sum(), [image, *conv.parameters()])
    for a, b in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_prompt_stream_cascades_rather_than_staying_fixed(tiny_backbone):
    """The fixed per-stage prompt of earlier versions (every layer reading P^0) is a
    different model: the cascaded output must differ from it."""
    randomize_trainable(tiny_backbone)
    rgb, ir = images(64, 96)
    with torch.no_grad():
        cascaded = tiny_backbone(rgb, ir).features
        fixed = literal_forward(tiny_backbone, rgb, ir, cascade=False)
    assert not torch.allclose(cascaded[3], fixed[3], atol=1e-4)


def test_rgb_only_mode_runs_and_reports_it(tiny_backbone):
    randomize_trainable(tiny_backbone)
    rgb, ir = images(64, 96)
    with torch.no_grad():
        fused = tiny_backbone(rgb, ir)
        rgb_only = tiny_backbone(rgb)
    assert fused.ir_used and not rgb_only.ir_used
    assert not torch.allclose(fused.features[0], rgb_only.features[0])


def test_infrared_changes_the_features_once_trained(tiny_backbone):
    randomize_trainable(tiny_backbone)
    rgb, ir = images(64, 96)
    with torch.no_grad():
        a = tiny_backbone(rgb, ir).features[3]
        b = tiny_backbone(rgb, ir * -1.0).features[3]
    assert not torch.allclose(a, b)


def test_only_ir_embedding_prompter_and_norms_receive_gradients(tiny_backbone):
    randomize_trainable(tiny_backbone)
    tiny_backbone.train()
    assert not tiny_backbone.swin.training, "the frozen Swin must stay in eval mode"
    rgb, ir = images(64, 64)
    sum(f.square().mean() for f in tiny_backbone(rgb, ir).features).backward()
    for name, parameter in tiny_backbone.named_parameters():
        if name.startswith("swin."):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None, name


def test_outputs_do_not_depend_on_batch_composition(tiny_backbone):
    randomize_trainable(tiny_backbone)
    rgb, ir = images(64, 80, batch=3)
    with torch.no_grad():
        together = tiny_backbone(rgb, ir).features
        alone = tiny_backbone(rgb[1:2], ir[1:2]).features
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a[1:2], b, rtol=1e-5, atol=1e-5)


def test_three_channel_ir_embedding_converts_exactly_to_mono(tiny_config):
    tiny_config.prompter.ir_in_channels = 3
    torch.manual_seed(0)
    rgb_ir3 = build_backbone(tiny_config).eval()
    randomize_trainable(rgb_ir3)
    tiny_config.prompter.ir_in_channels = 1
    mono = build_backbone(tiny_config).eval()
    state = rgb_ir3.state_dict()
    state["ir_patch_embed.proj.weight"] = ir_embed_to_mono(state["ir_patch_embed.proj.weight"])
    mono.load_state_dict(state)
    rgb, grey = images(64, 64)
    with torch.no_grad():
        a = rgb_ir3(rgb, grey.expand(-1, 3, -1, -1)).features
        b = mono(rgb, grey).features
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ir_shape, message", [
    ((1, 3, 64, 64), "ir must be (B, 1, H, W)"),
    ((1, 1, 32, 64), "register IR onto the RGB image first"),
])
def test_bad_ir_input_names_the_fix(tiny_backbone, ir_shape, message):
    with pytest.raises(ValueError) as error:
        tiny_backbone(torch.zeros(1, 3, 64, 64), torch.zeros(ir_shape))
    assert message in str(error.value)


@pytest.mark.parametrize("config", ["ivt_tiny_test.yaml", "ivt_dinov3_s_realtime.yaml"])
def test_backbone_benchmark_reports_timings_flops_and_ratios(capsys, config):
    """benchmarks/backbone.py on the tiny Swin and the real-time ViT: the JSON it prints has
    every key, and positive ratios (no timing is asserted: the machine is shared)."""
    path = MODELS.parent / "benchmarks" / "backbone.py"
    spec = importlib.util.spec_from_file_location("benchmark_backbone", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:  # one thread: quick even while other processes load the machine
        bench.main(["--config", str(MODELS / config), "--height", "64",
                    "--width", "80", "--repeats", "2", "--warmup", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    variants = {"frozen", "iv_tuning", "dual_branch"}
    assert set(report["latency_ms"]) == variants == set(report["gflops"])
    assert all(set(v) == {"median", "p90"} for v in report["latency_ms"].values())
    assert report["input"] == [64, 80] and report["repeats"] == 2
    assert set(report["ratios"]) == {"iv_tuning_vs_frozen", "iv_tuning_vs_dual"}
    for ratio in report["ratios"].values():
        assert ratio["time"] > 0 and ratio["flops"] > 0 and ratio["target"] > 0
    gflops = report["gflops"]
    assert gflops["frozen"] < gflops["iv_tuning"] < gflops["dual_branch"]
