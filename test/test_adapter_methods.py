"""CPAL and DRA beside IV-tuning (SEED_METHODS.md sections 1-2): identities at
initialisation, gradients past the zero-initialised parts, frozen parts untouched by
training, CPAL's Table IX counts, the Swin counts of the specification, and DRA's modality
file reused by a detection and a segmentation task."""
import pytest
import torch

from ivtuning_ros.data.datasets import open_dataset
from ivtuning_ros.model import (
    ConfigError,
    WeightsError,
    build_model,
    load_config,
    model_summary,
    save_checkpoint,
)
from ivtuning_ros.model.adapters.cpal.modules import CPALLayer, GatedPerception
from ivtuning_ros.model.adapters.dra.modality_file import (
    modality_fingerprint,
    save_modality_file,
)
from ivtuning_ros.model.adapters.lora import LoRA
from ivtuning_ros.model.adapters.two_stream import ir_as_rgb
from ivtuning_ros.model.backbones.swin import frozen_features
from ivtuning_ros.model.checkpoint import frozen_fingerprints, load_checkpoint
from ivtuning_ros.train.loop import TrainOptions, train
from ivtuning_ros.train.modality import ModalityOptions, pretrain_modality

from .conftest import MODELS

TINY = MODELS / "ivt_tiny_test.yaml"
PSST_SMALL = ["dra.psst.prototypes=64", "dra.psst.head_hidden=64"]


def tiny(method: str, *overrides: str, seed: int = 0):
    config = load_config(TINY, [f"method={method}", *overrides])
    torch.manual_seed(seed)
    return build_model(config).eval(), config


def images(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, 64, 80, generator=generator),
            torch.randn(batch, 1, 64, 80, generator=generator))


def frozen(model, image):
    return frozen_features(model.backbone.swin, model.backbone.out_norms, image)


def assert_maps_equal(actual, expected):
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_untrained_cpal_streams_each_equal_the_frozen_swin():
    """Zero up projections and LoRA: each stream is the frozen Swin on its own input, seen
    through additive fusion (the sum), RGB alone, and GPM's identity variant."""
    rgb, ir = images()
    model, _ = tiny("cpal", "cpal.gpm_stages=[]")
    with torch.no_grad():
        both = model.backbone(rgb, ir).features
        rgb_only = model.backbone(rgb).features
        expected_rgb, expected_ir = frozen(model, rgb), frozen(model, ir_as_rgb(ir))
    assert_maps_equal(both, [a + b for a, b in zip(expected_rgb, expected_ir, strict=True)])
    assert_maps_equal(rgb_only, expected_rgb)
    residual, _ = tiny("cpal", "cpal.gpm_residual=true")
    with torch.no_grad():
        assert_maps_equal(residual.backbone(rgb, ir).features, frozen(residual, rgb))


def test_untrained_dra_equals_the_prompted_rgb_stream_and_its_ir_stream_the_swin():
    rgb, ir = images()
    model, _ = tiny("dra", "dra.prompt_length=0")
    backbone = model.backbone
    with torch.no_grad():
        assert_maps_equal(backbone(rgb, ir).features, frozen(model, rgb))  # MoME up = 0
        last = backbone.out_norms[3](backbone.ir_stream(ir_as_rgb(ir))).permute(0, 3, 1, 2)
        assert_maps_equal([last], frozen(model, ir_as_rgb(ir))[3:])  # LoRA B = 0


@pytest.mark.parametrize("method", ["cpal", "dra"])
def test_rgb_only_mode_runs_and_says_so(method):
    model, _ = tiny(method)
    rgb, _ = images()
    with torch.no_grad():
        out = model.backbone(rgb)
    assert not out.ir_used and all(torch.isfinite(f).all() for f in out.features)


@pytest.mark.parametrize("method", ["cpal", "dra"])
def test_gradients_reach_every_trainable_tensor_after_one_step(method):
    """The zero-initialised up projections and LoRA B would block the gradient of what
    feeds them (the public CPAL code's all-zero prompter never learns); after one step
    every trainable tensor gets a gradient."""
    model, _ = tiny(method, "dra.modality_dropout=0.0" if method == "dra" else
                    "cpal.mcp_dropout=0.0")
    model.backbone.train()
    backbone = model.backbone
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    rgb, ir = images()
    for _ in range(2):
        optimizer.zero_grad()
        sum(f.square().mean() for f in backbone(rgb, ir).features).backward()
        optimizer.step()
    silent = [name for name, p in backbone.named_parameters()
              if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not silent


@pytest.mark.parametrize("method", ["cpal", "dra"])
def test_training_leaves_every_frozen_tensor_bit_identical(method, tmp_path):
    model, config = tiny(method)
    before = frozen_fingerprints(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = _scenes(4)
    train(model, config, dataset, TrainOptions(iterations=2, batch_size=2,
                                               out_dir=str(tmp_path)), torch.device("cpu"),
          progress=False)
    assert frozen_fingerprints(model) == before
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert changed and not any(k.startswith(("backbone.swin.", "backbone.modality_lora."))
                               for k in changed)


def test_cpal_modules_reproduce_table_ix_counts_on_internimage_h():
    """Built with InternImage-H's widths (320 * 2^s, depths 6-6-32-6, DCN groups
    10-20-40-80, 640-wide crops, GPM reduction 5, LoRA r = 8 on offset and mask)."""
    dims, depths, groups, widths = [320, 640, 1280, 2560], [6, 6, 32, 6], [10, 20, 40, 80], \
        [160, 80, 40, 20]

    def count(module):
        return sum(p.numel() for p in module.parameters())

    def mcp(stages):
        return sum(depths[s] * count(CPALLayer(dims[s], 8, 4, 0.1, True)) for s in stages)

    def gpm(stages):
        return sum(count(GatedPerception(dims[s], widths[s], 5)) for s in stages)

    def lora(stages):
        return sum(depths[s] * (count(LoRA(dims[s], 18 * groups[s], 8, 1.0))
                                + count(LoRA(dims[s], 9 * groups[s], 8, 1.0))) for s in stages)

    table = {(3,): (153_984, 2_626_192, 349_440), (2, 3): (565_632, 3_289_648, 1_281_280),
             (1, 2, 3): (604_416, 3_480_176, 1_368_640),
             (0, 1, 2, 3): (624_000, 3_624_560, 1_412_320)}
    for stages, expected in table.items():
        assert (mcp(stages), gpm(stages), lora(stages)) == expected


@pytest.mark.parametrize("overrides, expected", [
    (["method=ivtuning"], 1_284_676),
    (["method=cpal"], 673_912),
    (["method=cpal", "cpal.lora_per_modality=false"], 624_760),
    (["method=dra"], 1_079_412),
])
def test_swin_t_trainable_counts_match_the_specification(overrides, expected):
    config = load_config(MODELS / "ivt_swin_t_realtime.yaml", overrides)
    with torch.device("meta"):
        summary = model_summary(build_model(config, load_weights=False))
    assert summary["backbone_trainable_params"] == expected
    assert summary["reusable_frozen_params"] == (565_248 if "method=dra" in overrides else 0)


def test_a_method_section_without_its_method_is_refused():
    with pytest.raises(ConfigError, match="a 'cpal' section needs method: cpal"):
        load_config(TINY, ["cpal.mcp_hidden=8"])
    with pytest.raises(ConfigError, match="specified for the Swin"):
        load_config(MODELS / "ivt_dinov3_s_realtime.yaml", ["method=dra"])


def test_cpal_refuses_frames_of_another_width():
    model, _ = tiny("cpal")
    with pytest.raises(ValueError, match="input.width"):
        model.backbone(torch.randn(1, 3, 64, 96), torch.randn(1, 1, 64, 96))


def _scenes(length, seed=0):
    return open_dataset("synthetic", length=length, seed=seed, rgb_size=(60, 80),
                        ir_size=(64, 80))


def test_one_modality_file_serves_a_detection_and_a_segmentation_task(tmp_path):
    """Stage 1 once; two task models (detection only, segmentation only) over the same
    frozen Swin and modality file; both reload; another Swin or another modality file is
    refused with the fix."""
    model, config = tiny("dra", *PSST_SMALL)
    base = tmp_path / "base.pth"
    torch.save(model.backbone.swin.state_dict(), base)
    config.backbone.weights = str(base)
    losses = pretrain_modality(model, config, _scenes(4), tmp_path / "ir",
                               ModalityOptions(steps=3, batch_size=2), "synthetic IR",
                               progress=False)
    assert losses["loss"] > 0
    modality = tmp_path / "ir" / "modality.pth"
    for task in ("detection", "segmentation"):
        overrides = [f"backbone.weights={base}", f"dra.modality_lora={modality}",
                     f"{'segmentation' if task == 'detection' else 'detection'}=null",
                     *PSST_SMALL]
        task_model, task_config = tiny("dra", *overrides, seed=1)
        train(task_model, task_config, _scenes(2),
              TrainOptions(iterations=1, batch_size=2, out_dir=str(tmp_path / task)),
              torch.device("cpu"), progress=False)
        restored, _ = load_checkpoint(tmp_path / task / "last.pth")
        assert modality_fingerprint(restored.backbone) == modality_fingerprint(model.backbone)
        assert torch.load(modality, weights_only=True)["fingerprint"] == \
            modality_fingerprint(restored.backbone)
    other_base = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in model.backbone.swin.state_dict().items()}, other_base)
    with pytest.raises(WeightsError, match="learnt on frozen Swin weights"):
        tiny("dra", f"backbone.weights={other_base}", f"dra.modality_lora={modality}")
    task_model, task_config = tiny("dra", f"backbone.weights={base}",
                                   f"dra.modality_lora={modality}")
    save_checkpoint(task_model, task_config, tmp_path / "adapter.pth", adapter=True)
    with torch.no_grad():
        model.backbone.modality_lora.blocks[0][0].up.weight.add_(1.0)
    save_modality_file(model.backbone, config, tmp_path / "other_ir.pth", "synthetic IR")
    payload = torch.load(tmp_path / "adapter.pth", weights_only=True)
    payload["config"]["dra"]["modality_lora"] = str(tmp_path / "other_ir.pth")
    torch.save(payload, tmp_path / "adapter_other.pth")
    with pytest.raises(WeightsError, match="set it to the modality file"):
        load_checkpoint(tmp_path / "adapter_other.pth")
