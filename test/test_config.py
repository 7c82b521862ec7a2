"""Model configs: every shipped YAML loads; overrides and mistakes behave."""
import pytest

from ivtuning_ros.model import ConfigError, load_config
from ivtuning_ros.model.config import config_from_dict

from .conftest import MODELS


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    backbone = config.backbone
    assert len(backbone.stage_dims) == 4
    if backbone.family == "swin":
        assert len(backbone.depths) == len(backbone.num_heads) == 4
        assert backbone.stage_dims[1] == 2 * backbone.embed_dim
    else:  # a plain ViT: one stage; the pyramid's maps are C/4, C/2, C, C wide
        assert len(backbone.depths) == len(backbone.num_heads) == 1
        assert backbone.stage_dims[2:] == [backbone.embed_dim] * 2


def test_paper_config_is_swin_l_with_three_channel_ir():
    config = load_config(MODELS / "ivt_swin_l.yaml")
    assert config.backbone.embed_dim == 192
    assert config.backbone.depths == [2, 2, 18, 2]
    assert config.backbone.num_heads == [6, 12, 24, 48]
    assert config.backbone.window_size == 12
    assert config.prompter.ir_in_channels == 3
    assert (config.prompter.alpha_hidden, config.prompter.beta_hidden) == (8, 64)
    assert config.prompter.split_ratio == 0.25


def test_overrides_parse_values_as_yaml():
    config = load_config(MODELS / "ivt_swin_l.yaml",
                         ["prompter.split_ratio=0.5", "prompter.beta_blocks=3",
                          "backbone.depths=[2, 2, 6, 2]"])
    assert config.prompter.split_ratio == 0.5
    assert config.prompter.beta_blocks == 3
    assert config.backbone.depths == [2, 2, 6, 2]


@pytest.mark.parametrize("override, message", [
    ("prompter.bogus=1", "unknown config key(s) prompter.bogus"),
    ("prompter.split_ratio=1.5", "split_ratio must lie in [0, 1]"),
    ("backbone.variant=swin_xl", "backbone.variant 'swin_xl' is unknown"),
    ("prompter.split_ratio", "not of the form key=value"),
    ("prompter.beta_blocks=-1", "beta_blocks must be >= 0"),
])
def test_bad_values_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=None) as error:
        load_config(MODELS / "ivt_swin_l.yaml", [override])
    assert message in str(error.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_relative_weights_path_resolves_against_config_folder(tmp_path):
    (tmp_path / "m.yaml").write_text("backbone: {variant: swin_t, weights: w/swin.pth}\n")
    assert load_config(tmp_path / "m.yaml").backbone.weights == str(tmp_path / "w/swin.pth")


def test_to_dict_round_trips():
    config = load_config(MODELS / "ivt_swin_l.yaml")
    assert config_from_dict(config.to_dict()) == config
