"""Deformable attention: grid_sample result against loops with explicit bilinear weights."""
import math

import pytest
import torch

from ivtuning_ros.model.heads.deformable_attention import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attention,
)

SHAPES = [(5, 7), (3, 2), (1, 4), (4, 4), (2, 9)]


def bilinear(feature, x, y):
    """feature (D, H, W) at continuous pixel coordinates (x, y); zeros outside the map."""
    _, height, width = feature.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(feature.shape[0], dtype=feature.dtype)
    for row, weight_y in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for col, weight_x in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= row < height and 0 <= col < width:
                out += weight_y * weight_x * feature[:, row, col]
    return out


def reference(value, shapes, locations, weights):
    """Loop-based deformable attention in float64, same arguments as the function."""
    value, locations, weights = value.double(), locations.double(), weights.double()
    batch, _, heads, head_dim = value.shape
    num_query, _, levels, points, _ = locations.shape[1:]
    starts = [sum(h * w for h, w in shapes[:level]) for level in range(levels)]
    out = torch.zeros(batch, num_query, heads, head_dim, dtype=torch.float64)
    for b in range(batch):
        for level, (height, width) in enumerate(shapes):
            level_value = value[b, starts[level] : starts[level] + height * width]
            maps = level_value.permute(1, 2, 0).reshape(heads, head_dim, height, width)
            for q in range(num_query):
                for h in range(heads):
                    for p in range(points):
                        loc_x, loc_y = locations[b, q, h, level, p].tolist()
                        sample = bilinear(maps[h], loc_x * width - 0.5, loc_y * height - 0.5)
                        out[b, q, h] += weights[b, q, h, level, p] * sample
    return out.reshape(batch, num_query, heads * head_dim)


def random_inputs(shapes, batch=2, num_query=3, heads=2, head_dim=4, points=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, head_dim, generator=generator)
    # Some locations fall outside [0, 1] to exercise the zero padding.
    size = (batch, num_query, heads, len(shapes), points)
    locations = torch.rand(*size, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(*size[:3], len(shapes) * points, generator=generator).softmax(-1)
    return value, locations, weights.view(size)


@pytest.mark.parametrize("levels", [1, 3, 5])
@pytest.mark.parametrize("heads", [1, 2, 8])
@pytest.mark.parametrize("points", [1, 4])
def test_function_matches_reference(levels, heads, points):
    shapes = SHAPES[:levels]
    value, locations, weights = random_inputs(shapes, heads=heads, points=points)
    out = multi_scale_deformable_attention(value, shapes, locations, weights)
    expected = reference(value, shapes, locations, weights).float()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_batch_is_independent():
    shapes = SHAPES[:3]
    value, locations, weights = random_inputs(shapes, heads=8)
    batched = multi_scale_deformable_attention(value, shapes, locations, weights)
    for b in range(2):
        alone = multi_scale_deformable_attention(
            value[b : b + 1], shapes, locations[b : b + 1], weights[b : b + 1]
        )
        assert torch.equal(alone[0], batched[b])


def make_module(levels=3, seed=0):
    torch.manual_seed(seed)
    module = MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=levels)
    # The Deformable DETR init zeroes the query-dependent weights; make them matter.
    with torch.no_grad():
        for layer in (module.sampling_offsets, module.attention_weights):
            layer.weight.normal_(0.0, 0.2)
            layer.bias.normal_(0.0, 0.5)
    return module.eval()


def module_inputs(shapes, ref_dim, seed=1):
    generator = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    query = torch.randn(2, 5, 16, generator=generator)
    value = torch.randn(2, tokens, 16, generator=generator)
    reference_points = torch.rand(2, 5, len(shapes), ref_dim, generator=generator)
    return query, reference_points, value


def hand_built(module, query, reference_points, value, shapes, projected=None):
    """The module's forward from its own layers, with the reference sampler."""
    batch, num_query, _ = query.shape
    heads, levels, points = module.num_heads, module.num_levels, module.num_points
    offsets = module.sampling_offsets(query).view(batch, num_query, heads, levels, points, 2)
    weights = module.attention_weights(query).view(batch, num_query, heads, levels * points)
    weights = weights.softmax(-1).view(batch, num_query, heads, levels, points)
    ref = reference_points[:, :, None, :, None, :]
    if reference_points.shape[-1] == 2:
        sizes = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)
        locations = ref + offsets / sizes[:, None, :]
    else:
        locations = ref[..., :2] + offsets / points * ref[..., 2:] * 0.5
    if projected is None:
        projected = module.value_proj(value)
    projected = projected.view(batch, -1, heads, module.embed_dim // heads)
    sampled = reference(projected, shapes, locations, weights).float()
    return module.output_proj(sampled)


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_matches_hand_built(ref_dim):
    shapes = SHAPES[:3]
    module = make_module()
    query, reference_points, value = module_inputs(shapes, ref_dim)
    with torch.no_grad():
        out = module(query, reference_points, value, shapes)
        expected = hand_built(module, query, reference_points, value, shapes)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_padding_mask_removes_masked_values():
    shapes = SHAPES[:3]
    module = make_module()
    query, reference_points, value = module_inputs(shapes, 2)
    level0 = shapes[0][0] * shapes[0][1]
    mask = torch.zeros(2, value.shape[1], dtype=torch.bool)
    mask[:, :level0] = True
    with torch.no_grad():
        masked = module(query, reference_points, value, shapes, value_padding_mask=mask)
        projected = module.value_proj(value)
        projected[:, :level0] = 0.0
        expected = hand_built(module, query, reference_points, value, shapes, projected)
        unmasked = module(query, reference_points, value, shapes)
    torch.testing.assert_close(masked, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(masked, unmasked)


def test_initial_offsets_point_each_head_its_own_way():
    module = MultiScaleDeformableAttention(embed_dim=16, num_heads=4, num_levels=2, num_points=3)
    bias = module.sampling_offsets.bias.view(4, 2, 3, 2)
    # Heads at 0, 90, 180, 270 degrees; point p reaches p + 1 pixels on every level.
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    expected = directions[:, None, None, :] * torch.tensor([1.0, 2.0, 3.0])[:, None]
    torch.testing.assert_close(bias, expected.expand(-1, 2, -1, -1), atol=1e-6, rtol=0)
    assert not module.attention_weights.weight.any() and not module.attention_weights.bias.any()


def test_rejects_reference_points_of_other_widths():
    shapes = SHAPES[:3]
    module = make_module()
    query, reference_points, value = module_inputs(shapes, 3)
    with pytest.raises(ValueError, match="reference_points"):
        module(query, reference_points, value, shapes)


def test_bfloat16_autocast_is_close_to_float32():
    shapes = SHAPES[:3]
    module = make_module()
    query, reference_points, value = module_inputs(shapes, 4)
    with torch.no_grad():
        expected = module(query, reference_points, value, shapes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(query, reference_points, value, shapes)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_matches_eager():
    shapes = SHAPES[:3]
    module = make_module().cuda()
    inputs = [t.cuda() for t in module_inputs(shapes, 2)]
    static = [t.clone() for t in inputs]
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                module(*static, shapes)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(*static, shapes)

        # Replay on new inputs, so the graph must read the static buffers.
        fresh = [t.cuda() for t in module_inputs(shapes, 2, seed=2)]
        for buffer, new in zip(static, fresh, strict=True):
            buffer.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static_out, module(*fresh, shapes), rtol=1e-5, atol=1e-5)
