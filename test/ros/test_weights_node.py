"""The node takes a weights catalogue name as its checkpoint, over real DDS: resolved from
the cache (``IVTUNING_CACHE``), or refused in one line that names the command fetching it.

The cache is seeded as `ivtuning weights get dino_swin_l_coco` fills it: a random-weight
detector in mmdet's layout (the tiny Swin plus the parity fixture's head) converted by
`convert_into_cache` under the entry's name, with a test-sized config."""
import dataclasses

import pytest
import torch
import yaml

rclpy = pytest.importorskip("rclpy")

from ivtuning_ros.hub.cache import get_command  # noqa: E402
from ivtuning_ros.hub.catalog import CATALOG  # noqa: E402
from ivtuning_ros.hub.convert import convert_into_cache  # noqa: E402
from ivtuning_ros.model import build_model, load_config  # noqa: E402

from ..conftest import MODELS  # noqa: E402
from ..test_dino_parity import FIXTURE  # noqa: E402
from ..test_weights import to_mmdet  # noqa: E402
from .harness import Harness  # noqa: E402
from .test_parameters import perception_node  # noqa: E402

NAME = "dino_swin_l_coco"


@pytest.fixture
def seeded_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IVTUNING_CACHE", str(tmp_path / "cache"))
    parity = torch.load(FIXTURE, weights_only=True)
    data = yaml.safe_load((MODELS / "ivt_tiny_test.yaml").read_text())
    for override in parity["meta"]["overrides"]:
        key, value = override.removeprefix("detection.").split("=")
        data["detection"][key] = int(value)
    (tmp_path / "tiny_coco.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "tiny_coco.yaml")
    torch.manual_seed(0)
    model = build_model(config, load_weights=False)
    swin = to_mmdet(model.backbone.swin.state_dict(), model.backbone.out_norms)
    source = tmp_path / "dino.pth"
    torch.save({"state_dict": {**{k: v for k, v in swin.items() if k.startswith("backbone.")},
                               **parity["state_dict"]}}, source)
    entry = dataclasses.replace(CATALOG[NAME], configs=("tiny_coco.yaml",))
    path, _ = convert_into_cache(entry, source, tmp_path, {"sha256": "test"})
    return path


def test_the_node_runs_a_cached_weights_name(ros_context, seeded_cache):
    harness = Harness(ros_context, outputs=("detections",), model_config="", checkpoint=NAME)
    try:
        _, message = harness.send_and_wait("detections")
        assert harness.node._config.name == "ivt_tiny_test"  # the converted file's model
        assert harness.node._trained_on == "coco"  # /diagnostics weights_trained_on
        assert len(message.detections) > 0
    finally:
        harness.close()


def test_an_uncached_name_fails_configure_in_one_line(ros_context, tmp_path, monkeypatch):
    monkeypatch.setenv("IVTUNING_CACHE", str(tmp_path / "empty"))
    node = perception_node(ros_context, model_config="", checkpoint=NAME)
    try:
        node.trigger_configure()
        state = node._state
        assert state.startswith(f"configure failed: weights '{NAME}' are not in the cache "
                                f"{tmp_path / 'empty'}: run `{get_command(NAME)}`"), state
        assert "\n" not in state
    finally:
        node.destroy_node()
