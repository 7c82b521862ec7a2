"""Full and adapter checkpoints, and mmdet DINO detector conversion, with real files."""
import json
import re

import pytest
import torch

from ivtuning_ros.commands.cli import main
from ivtuning_ros.model import (
    WeightsError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from ivtuning_ros.model.checkpoint import export_base, frozen_prefix, load_checkpoint_as

from .conftest import MODELS, randomize_trainable
from .test_weights import to_mmdet

TINY = str(MODELS / "ivt_tiny_test.yaml")


def randomized_model(config, seed=0, prompter=True):
    torch.manual_seed(seed)
    model = build_model(config).eval()
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if prompter or not name.startswith(("backbone.mp_", "backbone.ir_")):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    if prompter:
        randomize_trainable(model.backbone, seed)
    return model


def outputs(model, config):
    generator = torch.Generator().manual_seed(7)
    rgb = torch.randn(1, 3, 64, 80, generator=generator)
    ir = torch.randn(1, config.prompter.ir_in_channels, 64, 80, generator=generator)
    with torch.inference_mode():
        return model(rgb, ir)


def assert_same_outputs(a, b):
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        assert torch.equal(a[key], b[key]), key


def test_full_checkpoint_round_trip_is_exact(tiny_config, tmp_path):
    model = randomized_model(tiny_config)
    save_checkpoint(model, tiny_config, tmp_path / "full.pth")
    restored, config = load_checkpoint(tmp_path / "full.pth")
    assert config == tiny_config
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    assert_same_outputs(outputs(model, config), outputs(restored.eval(), config))


def test_adapter_holds_only_trainable_parts_and_reloads_exactly(tiny_config, tmp_path):
    base = tmp_path / "swin.pth"
    model = randomized_model(tiny_config)
    torch.save({k: v for k, v in model.backbone.swin.state_dict().items()}, base)
    tiny_config.backbone.weights = str(base)
    save_checkpoint(model, tiny_config, tmp_path / "adapter.pth", adapter=True)
    payload = torch.load(tmp_path / "adapter.pth", weights_only=True)
    assert frozen_prefix(model) == "backbone.swin."
    assert not any(k.startswith("backbone.swin.") for k in payload["state_dict"])
    assert any(k.startswith("backbone.mp_beta.") for k in payload["state_dict"])
    restored, _ = load_checkpoint(tmp_path / "adapter.pth")
    assert_same_outputs(outputs(model, tiny_config), outputs(restored.eval(), tiny_config))


def test_adapter_over_the_wrong_base_fails_clearly(tiny_config, tmp_path):
    right, wrong = tmp_path / "right.pth", tmp_path / "wrong.pth"
    model = randomized_model(tiny_config)
    torch.save(model.backbone.swin.state_dict(), right)
    other = randomized_model(tiny_config, seed=5)
    torch.save(other.backbone.swin.state_dict(), wrong)
    tiny_config.backbone.weights = str(right)
    save_checkpoint(model, tiny_config, tmp_path / "adapter.pth", adapter=True)
    with pytest.raises(WeightsError, match="was trained on frozen backbone weights") as error:
        load_checkpoint(tmp_path / "adapter.pth", base_weights=str(wrong))
    assert "right.pth" in str(error.value) and "wrong.pth" in str(error.value)


def test_a_foreign_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="not an ivtuning_ros checkpoint"):
        load_checkpoint(tmp_path / "x.pth")


def mmdet_dino_state(model):
    """Our detector -> the mmdet DINO layout, by the published key map (REFERENCE_FACTS 4.2)."""
    state = to_mmdet(model.backbone.swin.state_dict(), model.backbone.out_norms)
    for key, value in model.detection.state_dict().items():
        key = re.sub(r"^encoder\.(\d+)\.", r"encoder.layers.\1.", key)
        key = re.sub(r"^decoder\.(\d+)\.self_attn\.", r"decoder.layers.\1.self_attn.attn.", key)
        key = re.sub(r"^decoder\.(\d+)\.", r"decoder.layers.\1.", key)
        key = key.replace("ffn.linear1.", "ffn.layers.0.0.").replace("ffn.linear2.",
                                                                      "ffn.layers.1.")
        key = re.sub(r"\.norm(\d)\.", lambda m: f".norms.{int(m[1]) - 1}.", key)
        key = re.sub(r"^neck\.", "neck.", key)
        key = key.replace("ref_point_head.", "decoder.ref_point_head.")
        key = key.replace("decoder_norm.", "decoder.norm.")
        key = re.sub(r"^(cls_branches|reg_branches)", r"bbox_head.\1", key)
        key = re.sub(r"reg_branches\.(\d+)\.layers\.(\d)",
                     lambda m: f"reg_branches.{m[1]}.{2 * int(m[2])}", key)
        key = key.replace("label_embedding.", "dn_query_generator.label_embedding.")
        state[key] = value
    return state


def test_mmdet_dino_checkpoint_converts_and_reproduces_outputs(tiny_config, tmp_path):
    model = randomized_model(tiny_config, prompter=False)  # mmdet DINO has no prompter
    state = mmdet_dino_state(model)
    assert "bbox_head.reg_branches.0.4.weight" in state
    assert "decoder.layers.1.self_attn.attn.in_proj_weight" in state
    assert "encoder.layers.0.ffn.layers.0.0.weight" in state
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "dino.pth")
    assert main(["convert", str(tmp_path / "dino.pth"), str(tmp_path / "ours.pth"),
                 "--config", TINY, "--quiet"]) == 0
    restored, _ = load_checkpoint(tmp_path / "ours.pth")
    expected, got = outputs(model, tiny_config), outputs(restored.eval(), tiny_config)
    for key in ("pred_logits", "pred_boxes"):
        assert torch.equal(expected[key], got[key]), key


def test_mmdet_dino_with_other_classes_is_reported(tiny_config, tmp_path, capsys):
    state = mmdet_dino_state(randomized_model(tiny_config, prompter=False))
    torch.save({"state_dict": state}, tmp_path / "dino.pth")
    code = main(["convert", str(tmp_path / "dino.pth"), str(tmp_path / "ours.pth"),
                 "--config", TINY, "--set", "detection.classes=[a, b]", "--quiet"])
    assert code == 2
    assert "check detection.classes" in capsys.readouterr().err


def test_mmdet_dino_needs_a_config(tiny_config, tmp_path, capsys):
    state = mmdet_dino_state(randomized_model(tiny_config, prompter=False))
    torch.save({"state_dict": state}, tmp_path / "dino.pth")
    assert main(["convert", str(tmp_path / "dino.pth"), str(tmp_path / "o.pth"), "--quiet"]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_info_covers_the_full_model(capsys):
    assert main(["info", str(MODELS / "ivt_swin_t_realtime.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["detection_head_params"] > 0 and info["segmentation_head_params"] > 0
    assert info["trainable_params"] == (info["backbone_trainable_params"]
                                        + info["neck_norm_params"]
                                        + info["detection_head_params"]
                                        + info["segmentation_head_params"])
    assert 0 < info["adapter_checkpoint_mb"] < 100


def test_bench_reports_every_component(capsys):
    assert main(["bench", "--config", TINY, "--repeats", "2", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["latency_ms"]) == {
        "backbone", "backbone_frozen_only", "neck_encoder", "query_selection", "decoder",
        "segmentation_head", "model_forward"}
    assert all(v["p50"] > 0 for v in report["latency_ms"].values())
    assert report["input"] == [64, 80]
    engine = report["engine"]
    assert {"iv_tuning", "rgb_only", "dual_branch"} <= set(engine)
    assert set(engine["iv_tuning"]["latency_ms"]) == {"preprocess", "model", "postprocess",
                                                      "total"}
    assert engine["rgb_only"]["throughput_fps"] > 0
    assert 0 < engine["pre_post_share_of_model"] < 1


def test_a_checkpoint_seeds_a_model_of_another_method(tiny_config, tmp_path):
    """--init with --set method=...: the new method's model takes the frozen Swin, output
    norms and heads of the checkpoint; its own parts start as built (CPAL: zero prompts)."""
    model = randomized_model(tiny_config)
    save_checkpoint(model, tiny_config, tmp_path / "full.pth")
    cpal, config = load_checkpoint_as(tmp_path / "full.pth", ["method=cpal"])
    assert config.method == "cpal"
    source = model.state_dict()
    shared = [k for k in cpal.state_dict() if k in source]
    assert any(k.startswith("backbone.swin.") for k in shared)
    assert any(k.startswith(("detection.", "segmentation.")) for k in shared)
    assert all(torch.equal(cpal.state_dict()[k], source[k]) for k in shared)
    export_base(cpal, config, tmp_path / "run")
    assert config.backbone.weights.endswith("base_swin.pth")
    assert torch.load(config.backbone.weights, weights_only=True).keys() == \
        cpal.backbone.swin.state_dict().keys()
