"""`ivtuning compare` on equal terms: one adapter-free start shared bit for bit by the three
methods, each method's own parameters at their initialisation, each method's own recipe
under one budget, and the seeds' spread."""
import pytest
import torch

from ivtuning_ros.commands.compare import (
    METHODS,
    check_start,
    method_options,
    separations,
    starting_model,
    summarise,
)
from ivtuning_ros.model import build_model, load_config
from ivtuning_ros.model.checkpoint import save_checkpoint

from .conftest import MODELS


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny adapter-free model with random weights as the common start."""
    config = load_config(MODELS / "ivt_tiny_test.yaml", ["method=none"])
    torch.manual_seed(11)
    model = build_model(config, load_weights=False)
    path = tmp_path_factory.mktemp("compare") / "start.pth"
    save_checkpoint(model, config, path)
    return path, model.state_dict()


def own_parts(model) -> dict[str, torch.Tensor]:
    """Everything the method brings itself: trained parts and DRA's reusable modality LoRA."""
    backbone = model.backbone
    parts = {**backbone.adapter_parts(), **backbone.reusable_parts()}
    return {f"{name}.{key}": value for name, part in parts.items()
            for key, value in part.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_starts_from_the_shared_model_with_its_own_parts_untrained(start, method):
    path, shared = start
    model, config = starting_model(path, method, seed=5)
    state = model.state_dict()
    # The start's every tensor (frozen Swin, output norms, heads), bit for bit.
    for name, tensor in shared.items():
        assert torch.equal(state[name], tensor), name
    # The method's own parts are exactly as a fresh build under the seed makes them.
    torch.manual_seed(5)
    fresh = own_parts(build_model(load_config(MODELS / "ivt_tiny_test.yaml",
                                              [f"method={method}"]), load_weights=False))
    mine = own_parts(model)
    assert mine and mine.keys() == fresh.keys()
    for name in fresh:
        assert torch.equal(mine[name], fresh[name]), name
    # Nothing of the method's own is in the start.
    assert not set(mine) & {key.removeprefix("backbone.") for key in shared}
    assert config.method == method
    assert config.input.ir_std == (0.5 if method == "cpal" else 0.25)  # CPAL's own


def test_the_start_is_identical_for_the_three_methods(start):
    path, shared = start
    states = [starting_model(path, method, seed=0)[0].state_dict() for method in METHODS]
    for name in shared:
        assert all(torch.equal(states[0][name], other[name]) for other in states[1:]), name


def test_a_start_with_trained_method_parameters_is_refused(tmp_path):
    config = load_config(MODELS / "ivt_tiny_test.yaml")
    path = tmp_path / "ivtuning.pth"
    save_checkpoint(build_model(config, load_weights=False), config, path)
    with pytest.raises(ValueError, match="is a 'ivtuning' model.*method 'none'"):
        check_start(path)


def test_each_method_trains_with_its_own_recipe_under_one_budget(tmp_path):
    options = {m: method_options(m, steps=150, batch_size=4, seed=1, out=tmp_path)
               for m in METHODS}
    assert {m: o.lr for m, o in options.items()} == {"ivtuning": 1e-4, "cpal": 2e-5,
                                                     "dra": 3e-4}
    assert options["cpal"].schedule == "poly" and options["cpal"].weight_decay == 0.05
    budgets = {(o.iterations, o.batch_size, o.seed, o.warmup_steps, repr(o.augmentation))
               for o in options.values()}
    assert budgets == {(150, 4, 1, 15, repr(options["dra"].augmentation))}


def run(seed, night_map):
    cell = {"mAP": night_map, "mIoU": 0.5}
    return {"seed": seed, "training_s": 10.0, "eval": {"night_rgb_ir": cell}}


def test_the_spread_and_the_differences_it_supports():
    runs = [run(0, 0.10), run(1, 0.20), run(2, 0.30)]
    summary = summarise(runs)
    assert summary["night_rgb_ir"]["mAP"] == {"mean": 0.2, "std": 0.1, "min": 0.1, "max": 0.3}
    assert summary["night_rgb_ir"]["mIoU"]["std"] == 0.0
    close = {"summary": summarise([run(0, 0.25), run(1, 0.35), run(2, 0.45)])}  # 0.15 apart
    far = {"summary": summarise([run(0, 0.55), run(1, 0.65), run(2, 0.75)])}  # 0.45 apart
    found = separations({"a": {"summary": summary}, "b": close, "c": far})
    assert {(s["better"], s["worse"]) for s in found if s["metric"] == "mAP"} == {
        ("c", "a"), ("c", "b")}
