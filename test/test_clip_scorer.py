"""The paper's CLIP quality scorer (`ClipScorer`) on a local open_clip ViT-B/32 checkpoint:
random weights written by the test, since the released weights cannot be downloaded here.
It loads exactly that file, scores by the paper's prompt contrast, refuses a path that is not
a file, and fills M2PN's memory in `ivtuning train-fusion --clip`."""
import csv

import pytest
import torch
import torch.nn.functional as F

from ivtuning_ros.commands.cli import main
from ivtuning_ros.image_fusion.quality import NEGATIVE, POSITIVE, ClipScorer

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    # fp16 on disk (300 MB instead of 600); the reference takes the same rounding.
    state = {key: value.half() for key, value in model.state_dict().items()}
    path = tmp_path_factory.mktemp("clip") / "vit_b_32_random.pt"
    torch.save(state, path)
    model.load_state_dict(state)
    return path, model


def test_clip_scorer_loads_the_file_and_scores_by_the_prompt_contrast(clip_checkpoint):
    path, reference = clip_checkpoint
    scorer = ClipScorer(path)
    loaded = scorer.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in reference.state_dict().items())

    fused = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(1))
    scores = scorer.score(fused, fused, fused)
    # By hand: grey to RGB at 224x224, CLIP's normalisation, cosine to each prompt.
    image = F.interpolate(fused.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear",
                          align_corners=False)
    mean = torch.tensor([0.4815, 0.4578, 0.4082]).view(1, 3, 1, 1)
    std = torch.tensor([0.2686, 0.2613, 0.2758]).view(1, 3, 1, 1)
    tokens = open_clip.get_tokenizer("ViT-B-32")(list(POSITIVE + NEGATIVE))
    with torch.no_grad():
        images = F.normalize(reference.encode_image((image - mean) / std), dim=-1)
        texts = F.normalize(reference.encode_text(tokens), dim=-1)
    cosine = images @ texts.T
    expected = torch.sigmoid(cosine[:, :3].mean(1) - cosine[:, 3:].mean(1))
    assert scores.shape == (2,)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_a_clip_path_that_is_not_a_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="local open_clip ViT-B/32 checkpoint"):
        ClipScorer(tmp_path / "missing.pt")


def test_train_fusion_fills_the_memory_with_clip_scores(clip_checkpoint, tmp_path):
    path, _ = clip_checkpoint
    assert main(["train-fusion", "--data", "synthetic", "--scene-scale", "0.25", "--length",
                 "2", "--batch-size", "2", "--dim", "16", "--steps", "1", "--clip", str(path),
                 "--out", str(tmp_path), "--quiet"]) == 0
    with open(tmp_path / "log.csv") as log:
        (row,) = list(csv.DictReader(log))
    assert 0 < float(row["quality"]) < 1
