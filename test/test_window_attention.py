"""Window attention: torchvision's result where the shift rules agree, mmdet's rule where not."""
import pytest
import torch
from torchvision.models.swin_transformer import ShiftedWindowAttention

from ivtuning_ros.model.backbones.swin import window_attention


def attention_module(window, shift, dim=16, heads=2, seed=0):
    torch.manual_seed(seed)
    module = ShiftedWindowAttention(dim, [window, window], [shift, shift], heads).eval()
    with torch.no_grad():
        module.relative_position_bias_table.normal_()
    return module


@pytest.mark.parametrize("height, width", [(12, 12), (13, 9), (8, 20), (17, 17)])
@pytest.mark.parametrize("shift", [0, 2])
def test_matches_torchvision_when_maps_exceed_the_window(height, width, shift):
    module = attention_module(4, shift)
    x = torch.randn(2, height, width, 16)
    with torch.no_grad():
        torch.testing.assert_close(window_attention(x, module), module(x), rtol=1e-5, atol=1e-5)


def reference_attention(x, module):
    """Loop-based window attention, shifting whenever shift > 0 (mmdet's rule)."""
    window, shift = module.window_size[0], module.shift_size[0]
    batch, height, width, channels = x.shape
    heads = module.num_heads
    pad_h, pad_w = -(-height // window) * window, -(-width // window) * window
    padded = torch.nn.functional.pad(x, (0, 0, 0, pad_w - width, 0, pad_h - height))
    rolled = torch.roll(padded, (-shift, -shift), (1, 2))

    def region(index, size):
        if not shift:
            return 0
        return 0 if index < size - window else (1 if index < size - shift else 2)

    bias = module.get_relative_position_bias()[0]
    out = torch.zeros_like(rolled)
    for top in range(0, pad_h, window):
        for left in range(0, pad_w, window):
            cells = [(top + i, left + j) for i in range(window) for j in range(window)]
            tokens = torch.stack([rolled[:, r, c] for r, c in cells], 1)  # B, N, C
            q, k, v = module.qkv(tokens).view(batch, len(cells), 3, heads, -1).unbind(2)
            logits = torch.einsum("bnhd,bmhd->bhnm", q, k) / (channels // heads) ** 0.5 + bias
            for n, (r1, c1) in enumerate(cells):
                for m, (r2, c2) in enumerate(cells):
                    if (region(r1, pad_h), region(c1, pad_w)) != (region(r2, pad_h),
                                                                   region(c2, pad_w)):
                        logits[:, :, n, m] -= 100.0
            mixed = torch.einsum("bhnm,bmhd->bnhd", logits.softmax(-1), v).reshape(batch, -1,
                                                                                   channels)
            mixed = module.proj(mixed)
            for n, (r, c) in enumerate(cells):
                out[:, r, c] = mixed[:, n]
    return torch.roll(out, (shift, shift), (1, 2))[:, :height, :width]


@pytest.mark.parametrize("height, width", [(4, 4), (3, 4), (6, 7)])
def test_keeps_the_shift_on_maps_within_one_window(height, width):
    module = attention_module(4, 2)
    x = torch.randn(1, height, width, 16)
    with torch.no_grad():
        ours = window_attention(x, module)
        torch.testing.assert_close(ours, reference_attention(x, module), rtol=1e-4, atol=1e-5)
        if max(height, width) <= 4:
            assert not torch.allclose(ours, module(x), atol=1e-3), "torchvision drops the shift"
