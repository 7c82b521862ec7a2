"""Engine memory stays bounded: pipelines per frame layout live in an LRU of
``max_layouts`` entries, the display grid is one entry, and process memory stays flat
over a stream whose frame size keeps changing."""
import os

import numpy as np
import pytest
import torch

from ivtuning_ros.runtime import Engine, EngineOptions

MIB = 2 ** 20


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def distinct_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    sizes: dict[tuple[int, int], None] = {}
    while len(sizes) < count:
        sizes[tuple(int(v) for v in rng.integers(64, 701, 2))] = None
    return list(sizes)


def random_frame(rng, size, with_ir):
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    ir_size = (size[0] // 2 + 1, size[1] // 2 + 1)
    ir = rng.integers(0, 65535, ir_size, dtype=np.uint16) if with_ir else None
    return rgb, ir


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux /proc")
def test_memory_stays_flat_over_200_frame_sizes(tiny_model, tiny_config):
    """Without the LRU every size kept its buffers: about +110 MiB over these sizes."""
    engine = Engine(tiny_model, tiny_config, EngineOptions(max_layouts=4))
    rng = np.random.default_rng(1)
    sizes = distinct_sizes(220)
    for index, size in enumerate(sizes[:20]):  # warm-up: lazy set-up, allocator arenas
        engine.infer(*random_frame(rng, size, with_ir=index % 2 == 1))
    warm = rss_bytes()
    for index, size in enumerate(sizes[20:]):
        result = engine.infer(*random_frame(rng, size, with_ir=index % 2 == 1))
        assert result.class_map.shape == size
        assert len(engine._pipelines) <= 4
    growth = rss_bytes() - warm
    assert growth < 30 * MIB, f"RSS grew {growth / MIB:.1f} MiB over 200 frame sizes"


def test_a_reused_layout_is_not_rebuilt_while_in_the_lru(tiny_model, tiny_config):
    engine = Engine(tiny_model, tiny_config, EngineOptions(max_layouts=2))
    rng = np.random.default_rng(2)
    a, b, c = ((64, 80), False), ((72, 96), False), ((72, 96), True)  # c: b's size with IR

    def pipeline(layout):
        size, with_ir = layout
        engine.infer(*random_frame(rng, size, with_ir))
        return next(reversed(engine._pipelines.values()))  # the most recently used

    first_a, first_b = pipeline(a), pipeline(b)
    assert pipeline(a) is first_a  # a is now the most recent, b the least
    pipeline(c)  # evicts b
    assert len(engine._pipelines) == 2
    assert first_b.buffers is None and first_b.graph is None  # released, not just unlisted
    assert pipeline(a) is first_a
    second_b = pipeline(b)  # rebuilt after its eviction; evicts c
    assert second_b is not first_b and second_b.buffers is not None
    assert pipeline(a) is first_a


@pytest.mark.parametrize("max_layouts", [0, -1, 1.5, True])
def test_max_layouts_must_be_a_positive_integer(tiny_model, tiny_config, max_layouts):
    with pytest.raises(ValueError, match="max_layouts must be an integer >= 1"):
        Engine(tiny_model, tiny_config, EngineOptions(max_layouts=max_layouts))


def test_display_grid_is_one_cached_float32_entry(tiny_model, tiny_config):
    engine = Engine(tiny_model, tiny_config)
    rng = np.random.default_rng(3)
    ir = rng.integers(0, 65535, (40, 50), dtype=np.uint16)
    homography = np.array([[1.9, 0.05, 12.0], [-0.03, 1.85, 20.0], [2e-5, 1e-5, 1.0]])
    first = engine.register_ir(ir, homography, (72, 96, 3))
    grid = engine._display_grid[1]
    assert grid.dtype == torch.float32 and grid.device == engine.device
    assert grid.shape == (1, 72, 96, 2)
    again = engine.register_ir(ir, homography.copy(), (72, 96, 3))
    assert engine._display_grid[1] is grid  # same rig and sizes: reused
    np.testing.assert_array_equal(again, first)
    engine.register_ir(ir, homography + np.diag([0.0, 0.0, 0.01]), (72, 96, 3))
    assert engine._display_grid[1] is not grid  # the rig moved: recomputed, one entry kept
    engine.register_ir(ir, homography, (48, 64, 3))
    assert engine._display_grid[1].shape == (1, 48, 64, 2)
