"""A file that is not a checkpoint is refused in one line that names the file and the fix."""
import os

import pytest
import torch

from ivtuning_ros.model import load_checkpoint

FIX = "pass a .pth written by `ivtuning train`/`ivtuning export` or `ivtuning convert`"


@pytest.mark.parametrize("content", [b"model: ivt_swin_t\nnot weights\n", os.urandom(4096),
                                     b"PK\x03\x04" + os.urandom(200)],
                         ids=["text", "random_bytes", "broken_zip"])
def test_a_foreign_file_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path} is not an ivtuning_ros checkpoint (")
    assert message.endswith(f"): {FIX}")
    assert "weights_only" not in message


def test_a_torch_file_without_the_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "swin.pth"
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="is not an ivtuning_ros checkpoint") as error:
        load_checkpoint(path)
    assert str(error.value).endswith(FIX) and "\n" not in str(error.value)
