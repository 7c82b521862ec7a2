"""SegFormer head: shapes on odd, non-square stage maps, batch independence, gradient flow."""
import math

import torch

from ivtuning_ros.model.heads.segformer import SegFormerHead

CHANNELS = [16, 32, 64, 128]


def stage_maps(batch, height=33, width=41, seed=0):
    """One map per stage, each ceil-halved from the last: 33x41, 17x21, 9x11, 5x6."""
    generator = torch.Generator().manual_seed(seed)
    maps = []
    for channels in CHANNELS:
        maps.append(torch.randn(batch, channels, height, width, generator=generator))
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return maps


def head(**kwargs):
    torch.manual_seed(0)
    return SegFormerHead(CHANNELS, num_classes=5, embed_dim=24, **kwargs)


def test_layout():
    model = head()
    assert len(model.linear_c) == 4
    assert [type(m) for m in model.linear_fuse] == [
        torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU
    ]
    assert model.linear_pred.out_channels == 5
    assert model.dropout.p == 0.1


def test_output_shape_non_square():
    features = stage_maps(batch=2)
    assert [tuple(f.shape[-2:]) for f in features] == [(33, 41), (17, 21), (9, 11), (5, 6)]
    model = head().eval()
    with torch.no_grad():
        assert model(features, (131, 163)).shape == (2, 5, 131, 163)
        assert model(features, (33, 41)).shape == (2, 5, 33, 41)


def test_batch_independence_in_eval():
    model = head().eval()
    features = stage_maps(batch=3)
    with torch.no_grad():
        batched = model(features, (64, 80))
        for index in range(3):
            single = model([f[index : index + 1] for f in features], (64, 80))
            assert torch.allclose(batched[index : index + 1], single, atol=1e-5)


def test_gradients_reach_all_parameters():
    model = head().train()
    features = stage_maps(batch=2)
    logits = model(features, (40, 48))
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    (logits * weights).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
