"""Parity of our DINO head with mmdet 3.3's DINO (4-scale), and converting its checkpoints.

`test/fixtures/dino_parity.pt` is written by `tools/make_dino_parity_fixture.py` (in a
throwaway venv with mmdet; see its docstring). It holds a random-weight mmdet DINO
checkpoint without backbone keys, neck inputs and mmdet's outputs stage by stage. The
checkpoint goes through `ivtuning convert` into `ivt_tiny_test.yaml` (plus the
fixture's overrides); our head then runs on the same neck inputs.

Tolerances: everything is fp32 and differs only by rounding order (our deformable
attention sums per level, mmcv stacks the levels and sums once; LayerNorm and GEMM
orders differ). Measured maxima, unpadded and padded alike, values of order 1:
encoder memory 1.8e-6, top-k encoder logits 1.4e-6, anchors 5.7e-7, decoder logits
2.9e-6, boxes 6.6e-7. ATOL = RTOL = 1e-5 leaves a margin of 3x over that (and 2x
over the 4.8e-6 once measured on a 256-wide head). Real differences are far above
it: a swapped inverse_sigmoid eps (decoder 1e-3, head 1e-5; the fixture has anchors
within 1e-3 of 0 or 1) shows as 6e-4 to 6e-3, a wrong sine temperature as 1. The
query order is checked through the anchors (two swapped ranks move anchors by far
more than ATOL); the generator refuses inputs whose adjacent top-k scores differ by
under 1e-4, so rounding cannot swap them.

Boxes are compared as mmdet returns them: normalised to each image's valid region
(``img_shape``), which in the padded case is smaller than the batch input.
"""
from pathlib import Path

import pytest
import torch
from torch import Tensor

from ivtuning_ros.commands.cli import main
from ivtuning_ros.model import build_model, load_checkpoint, load_config
from ivtuning_ros.model.heads.dino import DINOHead

from .conftest import MODELS
from .test_weights import to_mmdet

FIXTURE = Path(__file__).parent / "fixtures" / "dino_parity.pt"
TINY = str(MODELS / "ivt_tiny_test.yaml")
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def parity() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def convert(checkpoint: Path, output: Path, overrides: list[str]) -> int:
    """`ivtuning convert` of an mmdet DINO checkpoint into the tiny config."""
    args = ["convert", str(checkpoint), str(output), "--config", TINY, "--quiet", "--force"]
    for override in overrides:
        args += ["--set", override]
    return main(args)


@pytest.fixture(scope="module")
def head(parity: dict, tmp_path_factory: pytest.TempPathFactory) -> DINOHead:
    """Our head with the fixture's mmdet weights, converted by `ivtuning convert`."""
    output = tmp_path_factory.mktemp("parity") / "ours.pth"
    assert convert(FIXTURE, output, parity["meta"]["overrides"]) == 0
    model, _ = load_checkpoint(output)
    return model.detection


def stage_0(case: dict) -> Tensor:
    """Zeros in the shape of Swin stage 0 (stride 4, half of stage 1's width): not read by
    a 4-scale head, but it gives the network input size as in the real model."""
    stage_1 = case["features"][0]
    height, width = case["batch_input_shape"]
    return stage_1.new_zeros(stage_1.shape[0], stage_1.shape[1] // 2, height // 4, width // 4)


def run_head(head: DINOHead, case: dict, **kwargs: Tensor) -> tuple[Tensor, dict, dict]:
    """Encoder memory, training-mode outputs (every layer) and eval outputs of one case."""
    features = [stage_0(case), *case["features"]]
    captured = {}
    hook = head.encoder[-1].register_forward_hook(
        lambda _module, _inputs, output: captured.update(memory=output))
    try:
        with torch.no_grad():
            layers = head.train()(features, **kwargs)  # no dropout: eval values, all layers
            final = head.eval()(features, **kwargs)
    finally:
        hook.remove()
    return captured["memory"], layers, final


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL,
                               msg=lambda message: f"{what}: {message}")


def assert_parity(case: dict, memory: Tensor, layers: dict, final: dict) -> None:
    """Stage by stage: memory, query selection, every decoder layer, the eval outputs.

    Memory is compared on real tokens only: padded tokens are masked out of every
    later stage, so their values are free.
    """
    valid = ~case["memory_mask"]
    assert_close(memory[valid], case["memory"][valid], "encoder memory")
    assert_close(layers["enc_outputs"]["pred_boxes"], case["topk_boxes"],
                 "selected anchors (query selection and its order)")
    assert_close(layers["enc_outputs"]["pred_logits"], case["topk_logits"],
                 "encoder logits of the selected queries")
    for index, outputs in enumerate([*layers["aux_outputs"], layers]):
        assert_close(outputs["pred_logits"], case["layer_logits"][index],
                     f"decoder layer {index} logits")
        assert_close(outputs["pred_boxes"], case["layer_boxes"][index],
                     f"decoder layer {index} boxes")
    assert_close(final["pred_logits"], case["layer_logits"][-1], "eval pred_logits")
    assert_close(final["pred_boxes"], case["layer_boxes"][-1], "eval pred_boxes")


def test_fixture_sizes_match_the_tiny_config(parity: dict) -> None:
    """The generator's sizes are those of ivt_tiny_test.yaml with the fixture's overrides."""
    meta = parity["meta"]
    config = load_config(TINY, meta["overrides"])
    detection = config.detection
    assert [config.backbone.stage_dims[s] for s in detection.backbone_stages] == \
        meta["stage_dims"]
    assert (detection.hidden_dim, detection.num_heads, detection.num_points, detection.ffn_dim,
            detection.encoder_layers, detection.decoder_layers, detection.num_queries,
            detection.num_levels, len(detection.classes)) == (
        meta["hidden_dim"], meta["num_heads"], meta["num_points"], meta["ffn_dim"],
        meta["encoder_layers"], meta["decoder_layers"], meta["num_queries"],
        meta["num_levels"], meta["num_classes"])


def test_unpadded_batch_matches_mmdet(head: DINOHead, parity: dict) -> None:
    """Every image fills the batch input: mmdet runs without masks, we without valid_sizes."""
    case = parity["cases"]["unpadded"]
    assert_parity(case, *run_head(head, case))


def test_padded_batch_matches_mmdet(head: DINOHead, parity: dict) -> None:
    """Images at the top left of a larger batch input: masks and valid ratios per image."""
    case = parity["cases"]["padded"]
    assert case["img_shapes"] != [case["batch_input_shape"]] * len(case["img_shapes"])
    valid_sizes = torch.tensor(case["img_shapes"], dtype=torch.float32)
    assert_parity(case, *run_head(head, case, valid_sizes=valid_sizes))


def test_converting_without_backbone_reports_it(parity: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """A head-only checkpoint converts; the backbone it lacks is named on stderr."""
    assert convert(FIXTURE, tmp_path / "ours.pth", parity["meta"]["overrides"]) == 0
    assert "checkpoint has no backbone" in capsys.readouterr().err


def test_four_scale_checkpoint_with_swin_keeps_output_norm_0(
        parity: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """mmdet's Swin with out_indices (1, 2, 3) has no norm0; the rest loads exactly."""
    overrides = parity["meta"]["overrides"]
    torch.manual_seed(3)
    source = build_model(load_config(TINY, overrides), load_weights=False)
    with torch.no_grad():
        for parameter in source.backbone.out_norms.parameters():
            parameter.normal_()
    swin = to_mmdet(source.backbone.swin.state_dict(), source.backbone.out_norms)
    state = {k: v for k, v in swin.items()
             if k.startswith("backbone.") and not k.startswith("backbone.norm0.")}
    torch.save({"state_dict": {**state, **parity["state_dict"]}}, tmp_path / "dino.pth")
    assert convert(tmp_path / "dino.pth", tmp_path / "ours.pth", overrides) == 0
    assert "out_norms.0.*" in capsys.readouterr().err
    restored = load_checkpoint(tmp_path / "ours.pth")[0].backbone.state_dict()
    for key, value in source.backbone.state_dict().items():
        if key.startswith(("swin.", "out_norms.")) and not key.startswith("out_norms.0."):
            assert torch.equal(restored[key], value), key
    assert torch.equal(restored["out_norms.0.weight"], torch.ones(16))  # its initialisation


def test_five_scale_checkpoint_into_a_four_scale_config_is_reported(
        parity: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A neck with four backbone maps + one extra level against our three + one."""
    state = dict(parity["state_dict"])
    state["neck.convs.3.conv.weight"] = torch.zeros(32, 256, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "dino.pth")
    assert convert(tmp_path / "dino.pth", tmp_path / "ours.pth",
                   parity["meta"]["overrides"]) == 2
    assert "checkpoint's DINO is 5-scale" in capsys.readouterr().err


def test_missing_head_weights_stay_an_error(parity: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """Only backbone parts may be absent: a missing head tensor fails the conversion."""
    state = {k: v for k, v in parity["state_dict"].items()
             if k != "bbox_head.cls_branches.0.weight"}
    torch.save({"state_dict": state}, tmp_path / "dino.pth")
    assert convert(tmp_path / "dino.pth", tmp_path / "ours.pth",
                   parity["meta"]["overrides"]) == 2
    assert "missing (1): detection.cls_branches.0.weight" in capsys.readouterr().err
