"""The complete model: every config runs end to end on CPU, deterministically and
independently of batch composition and of the floating-point dtype; DINO's structural
contracts hold."""
import copy

import pytest
import torch

from ivtuning_ros.model import build_model, load_config

from .conftest import MODELS

# Swin-L configs run at a small input to keep the suite fast.
CONFIG_INPUTS = {
    "ivt_tiny_test.yaml": (64, 80),
    "ivt_swin_t_realtime.yaml": (128, 160),
    "ivt_swin_l_dino_m3fd.yaml": (96, 128),
    "ivt_swin_l_segformer_mfnet.yaml": (96, 128),
}


def inputs(config, height, width, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, 3, height, width, generator=generator)
    ir = torch.randn(batch, config.prompter.ir_in_channels, height, width, generator=generator)
    return rgb, ir


@pytest.mark.parametrize("name", sorted(CONFIG_INPUTS))
def test_every_config_runs_end_to_end(name):
    config = load_config(MODELS / name)
    torch.manual_seed(0)
    model = build_model(config).eval()
    height, width = CONFIG_INPUTS[name]
    with torch.inference_mode():
        out = model(*inputs(config, height, width))
    assert out["ir_used"] is True
    if config.detection:
        classes = len(config.detection.classes)
        queries = out["pred_logits"].shape[1]
        assert out["pred_logits"].shape == (1, queries, classes)
        assert out["pred_boxes"].shape == (1, queries, 4)
        assert queries <= config.detection.num_queries
        assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    if config.segmentation:
        assert out["seg_logits"].shape == (1, len(config.segmentation.classes), height, width)
    assert all(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor))


def test_paper_detector_config_matches_the_reference_sizes():
    config = load_config(MODELS / "ivt_swin_l_dino_m3fd.yaml")
    det = config.detection
    assert (det.num_queries, det.num_levels, det.encoder_layers, det.decoder_layers) == (
        900, 5, 6, 6)
    assert (det.num_heads, det.num_points, det.ffn_dim, det.hidden_dim) == (8, 4, 2048, 256)
    assert det.classes == ["People", "Car", "Bus", "Motorcycle", "Lamp", "Truck"]
    assert len(load_config(MODELS / "ivt_swin_l_segformer_mfnet.yaml").segmentation.classes) == 9


def test_outputs_are_deterministic(tiny_model, tiny_config):
    rgb, ir = inputs(tiny_config, 64, 80)
    with torch.inference_mode():
        first, second = tiny_model(rgb, ir), tiny_model(rgb, ir)
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        assert torch.equal(first[key], second[key])


def test_outputs_do_not_depend_on_batch_composition(tiny_model, tiny_config):
    rgb, ir = inputs(tiny_config, 64, 80, batch=3)
    with torch.inference_mode():
        together = tiny_model(rgb, ir)
        alone = tiny_model(rgb[2:], ir[2:])
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        torch.testing.assert_close(together[key][2:], alone[key], rtol=1e-4, atol=1e-5)


def test_untrained_prompter_makes_ir_irrelevant(tiny_config):
    """s3/s4 start at zero: before training, IR cannot change any output."""
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    rgb, ir = inputs(tiny_config, 64, 80)
    with torch.inference_mode():
        fused, rgb_only = model(rgb, ir), model(rgb)
    assert not rgb_only["ir_used"]
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        torch.testing.assert_close(fused[key], rgb_only[key], rtol=1e-5, atol=1e-6)


def test_training_mode_returns_every_layer_and_the_encoder_proposals(tiny_model, tiny_config):
    tiny_model.train()
    out = tiny_model(*inputs(tiny_config, 64, 80, batch=2))
    layers = tiny_config.detection.decoder_layers
    assert len(out["aux_outputs"]) == layers - 1
    assert out["enc_outputs"]["pred_boxes"].shape == out["pred_boxes"].shape
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum() + out["seg_logits"].mean()
    loss = loss + sum(a["pred_boxes"].sum() for a in out["aux_outputs"])
    loss.backward()
    frozen = [p for n, p in tiny_model.named_parameters() if n.startswith("backbone.swin.")]
    assert all(p.grad is None for p in frozen)
    assert tiny_model.detection.query_embedding.weight.grad is not None


def test_eval_mode_computes_only_the_last_layer(tiny_model, tiny_config):
    with torch.inference_mode():
        out = tiny_model(*inputs(tiny_config, 64, 80))
    assert "aux_outputs" not in out and "enc_outputs" not in out


def test_a_model_needs_a_head(tiny_config):
    tiny_config.detection = tiny_config.segmentation = None
    with pytest.raises(ValueError, match="needs at least one head"):
        build_model(tiny_config)


@pytest.mark.parametrize("valid_sizes", [None, torch.tensor([[45.0, 80.0]])])
def test_a_float64_model_equals_the_float32_one(tiny_model, tiny_config, valid_sizes):
    """No constant of the forward is pinned to float32: the whole model runs in float64."""
    rgb, ir = inputs(tiny_config, 64, 80)
    with torch.inference_mode():
        expected = tiny_model(rgb, ir, valid_sizes=valid_sizes)
        model = copy.deepcopy(tiny_model).to(torch.float64)
        out = model(rgb.double(), ir.double(),
                    valid_sizes=None if valid_sizes is None else valid_sizes.double())
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        assert out[key].dtype == torch.float64
        torch.testing.assert_close(out[key].float(), expected[key], rtol=0, atol=1e-4)


@pytest.mark.parametrize("valid_sizes", [None, torch.tensor([[45.0, 80.0]])])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_runs(tiny_model, tiny_config, dtype, valid_sizes):
    """A plain half-precision model (no autocast), on the CPU: geometry is computed in
    float32 and cast where it meets the weights."""
    rgb, ir = inputs(tiny_config, 64, 80)
    model = tiny_model.to(dtype)
    with torch.inference_mode():
        out = model(rgb.to(dtype), ir.to(dtype), valid_sizes=valid_sizes)
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        assert out[key].dtype == dtype and torch.isfinite(out[key]).all()
