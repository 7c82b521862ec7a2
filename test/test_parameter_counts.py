"""The paper's parameter counts (Tables VIII, IX; section IV-E) and `ivtuning info`."""
import json
import subprocess
import sys

import pytest

from ivtuning_ros.commands.cli import main
from ivtuning_ros.model import build_backbone, load_config, parameter_summary

from .conftest import MODELS

SWIN_L = MODELS / "ivt_swin_l.yaml"


def summary(*overrides):
    config = load_config(SWIN_L, overrides)
    return parameter_summary(build_backbone(config, load_weights=False))


def test_swin_l_trainable_params_match_table_viii():
    trainable = summary()["backbone_trainable_params"]
    assert abs(trainable - 5.03e6) / 5.03e6 < 0.005


@pytest.mark.parametrize("ratio, paper_millions", [
    (0.0, 5.023), (0.25, 5.026), (0.5, 5.030), (0.75, 5.034), (1.0, 5.038),
])
def test_split_ratio_sweep_matches_table_ix(ratio, paper_millions):
    trainable = summary(f"prompter.split_ratio={ratio}")["backbone_trainable_params"]
    assert abs(trainable / 1e6 - paper_millions) <= 0.002


def test_mp_alpha_alone_is_under_one_million():
    result = summary("prompter.beta_blocks=0")
    assert result["mp_alpha_params"] < 1e6
    assert result["backbone_trainable_params"] < 1e6
    beta_rows = [row for row in result["modules"] if row["name"].startswith("mp_beta")]
    assert all(row["params"] == 0 for row in beta_rows)


def test_beta_blocks_counts_from_the_first_block():
    backbone = build_backbone(load_config(SWIN_L, ["prompter.beta_blocks=5"]), load_weights=False)
    assert [len(stage) for stage in backbone.mp_beta] == [2, 2, 1, 0]


def test_frozen_and_trainable_partition_the_parameters():
    backbone = build_backbone(load_config(MODELS / "ivt_swin_t.yaml"), load_weights=False)
    result = parameter_summary(backbone)
    frozen = sum(p.numel() for p in backbone.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    assert frozen == result["backbone_frozen_params"]
    assert trainable == result["backbone_trainable_params"] + result["neck_norm_params"]
    assert sum(row["params"] for row in result["modules"]) == frozen + result[
        "backbone_trainable_params"]


def test_info_json(capsys):
    assert main(["info", str(SWIN_L), "--json", "--set", "prompter.split_ratio=0.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result["backbone_frozen_params"], int)
    assert abs(result["backbone_trainable_params"] / 1e6 - 5.030) <= 0.002


def test_info_table_is_readable(capsys):
    assert main(["info", str(SWIN_L)]) == 0
    out = capsys.readouterr().out
    assert "trainable backbone params (#TP)" in out
    assert "mp_beta.stage2 (18 blocks)" in out


def test_console_script_reports_bad_config_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "ivtuning_ros.commands.cli", "info", str(SWIN_L), "--set",
         "prompter.x=1"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown config key(s) prompter.x" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("config, paper_millions", [
    ("ivt_swin_l_cpnet_vt5000.yaml", 5.03),   # Tables I (5.0) and VIII (5.03)
    ("ivt_eva02_l_cpnet_vt5000.yaml", 7.5),   # Table VI (7.5; Table I rounds to 7.6)
])
def test_info_reproduces_the_sod_configs_tp(capsys, config, paper_millions):
    assert main(["info", str(MODELS / config), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    trainable = result["backbone_trainable_params"] / 1e6
    assert abs(trainable - paper_millions) / paper_millions < 0.01
    assert result["sod_head_params"] > 0  # the decoder trains but is not in #TP
    assert result["trainable_params"] > result["backbone_trainable_params"] + result[
        "sod_head_params"] - 1
