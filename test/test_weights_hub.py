"""`ivtuning weights`: downloads from a loopback HTTP server, verified, converted, cached.

The server (python's http.server on 127.0.0.1) serves files the tests make with random
weights in each source's real key layout, under the publisher's path and naming scheme:
torchvision's own SwinTransformer state dict as ``swin_t-<sha256 prefix>.pth`` under
download.pytorch.org's path, an mmdet DINO checkpoint (backbone in mmdet's Swin layout,
the head from the parity fixture that mmdet 3.3 wrote) under download.openmmlab.com's,
and a timm ViT as ``model.safetensors`` behind Hugging Face's resolve endpoint (HEAD with
the commit and LFS sha256 headers, then GET), which huggingface_hub itself calls. The
catalogue entries are the real ones with the test file's URL and a test-sized config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import timm
import torch
import torchvision
import yaml
from safetensors.torch import save
from torchvision.models.swin_transformer import SwinTransformer

from ivtuning_ros.commands.cli import main
from ivtuning_ros.hub import catalog
from ivtuning_ros.hub.cache import NotCached, cached_file, is_cached, resolve
from ivtuning_ros.model import build_model, load_checkpoint, load_config
from ivtuning_ros.model.backbones.swin_weights import load_swin_checkpoint
from ivtuning_ros.model.heads.dino_weights import load_mmdet_dino
from ivtuning_ros.model.postprocess import letterbox_for, postprocess

from .conftest import MODELS, randomize_trainable
from .test_dino_parity import FIXTURE
from .test_weights import to_microsoft, to_mmdet

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Served:
    """Files by URL path; ``truncate``: GET sends only the first bytes of a file (a mirror
    or proxy holding a partial copy), while HEAD still gives the whole file's size."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.truncate: int | None = None
        self.refusals: dict[str, tuple[int, dict[str, str]]] = {}  # path -> status, headers


def _handler(served: Served):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self, body: bytes | None, headers: dict[str, str]) -> None:
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()

        def _refused(self) -> bool:
            if self.path not in served.refusals:
                return False
            status, headers = served.refusals[self.path]
            self.send_response(status)
            for key, value in {**headers, "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()
            return True

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
            body, headers = served.files.get(self.path, (None, {}))
            if not self._refused():
                self._answer(body, headers)

        def do_GET(self) -> None:  # noqa: N802
            if self._refused():
                return
            body, headers = served.files.get(self.path, (None, {}))
            if body is not None and served.truncate:
                body = body[:served.truncate]
            self._answer(body, headers)
            if body is not None:
                self.wfile.write(body)
    return Handler


@pytest.fixture
def server():
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """An empty cache, downloads through the loopback server, test configs in models_dir."""
    monkeypatch.setenv("IVTUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IVTUNING_MIRROR", server.url)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr("ivtuning_ros.commands.weights.package_dir", lambda folder: models)
    return tmp_path / "cache", models


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def use_entry(monkeypatch, name: str, **changes) -> catalog.WeightsEntry:
    entry = dataclasses.replace(catalog.CATALOG[name], **changes)
    monkeypatch.setitem(catalog.CATALOG, name, entry)
    return entry


def write_config(models: Path, name: str, source: str, overrides: dict) -> None:
    data = yaml.safe_load((MODELS / source).read_text())
    for section, values in overrides.items():
        if values is None:
            data.pop(section, None)
        else:
            data[section] = {**data.get(section, {}), **values}
    (models / name).write_text(yaml.safe_dump(data))


# torchvision ---------------------------------------------------------------------------
def tiny_torchvision_swin() -> dict:
    """torchvision's own Swin (its real state-dict layout, classifier included) at the tiny
    test config's sizes."""
    torch.manual_seed(5)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2, 2],
                           num_heads=[1, 2, 2, 4], window_size=[4, 4]).state_dict()


def serve_torchvision(server: Served, monkeypatch, body: bytes, prefix: str | None = None):
    prefix = prefix or hashlib.sha256(body).hexdigest()[:8]
    file_name = f"swin_t-{prefix}.pth"
    server.files[f"/download.pytorch.org/models/{file_name}"] = (body, {})
    return use_entry(monkeypatch, "torchvision:swin_t",
                     location=f"https://download.pytorch.org/models/{file_name}",
                     file_name=file_name, configs=("ivt_tiny_test.yaml",))


def test_get_downloads_verifies_converts_and_caches_a_torchvision_swin(
        cache, server, monkeypatch, capsys):
    _, models = cache
    (models / "ivt_tiny_test.yaml").write_text((MODELS / "ivt_tiny_test.yaml").read_text())
    state = tiny_torchvision_swin()
    entry = serve_torchvision(server, monkeypatch, torch_bytes(state))
    assert main(["weights", "get", "torchvision:swin_t", "--quiet"]) == 0
    assert "verified (sha256 prefix" in capsys.readouterr().out
    assert is_cached(entry) and sorted(p.name for p in cached_file(entry).parent.iterdir()) \
        == ["torchvision--swin_t.json", "torchvision--swin_t.pth"]  # no partial files left
    manifest = json.loads(cached_file(entry).with_suffix(".json").read_text())
    assert manifest["sha256"].startswith(entry.hash_prefix)
    assert manifest["downloaded_from"] == f"{server.url}/download.pytorch.org/models/" \
        f"{entry.file_name}"
    config = load_config(MODELS / "ivt_tiny_test.yaml",
                         ["backbone.weights=torchvision:swin_t"])
    backbone = build_model(config).backbone  # the name resolves from the cache
    for key, value in state.items():
        if key.startswith("features.") and not key.endswith("relative_position_index"):
            assert torch.equal(backbone.swin.state_dict()[key], value), key
    assert main(["weights", "get", "torchvision:swin_t", "--quiet"]) == 0
    assert "already cached" in capsys.readouterr().out


def test_a_file_without_a_publisher_hash_is_checked_for_length_and_its_hash_recorded(
        cache, server, monkeypatch, capsys):
    """Microsoft's Swin release (original layout, no hash anywhere): the length is checked,
    the sha256 printed and recorded; the converted file is the torchvision Swin's."""
    (cache[1] / "ivt_tiny_test.yaml").write_text((MODELS / "ivt_tiny_test.yaml").read_text())
    state = tiny_torchvision_swin()
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    body = torch_bytes({"model": to_microsoft(features)})
    entry = catalog.CATALOG["microsoft:swin_l_22k"]
    server.files["/github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                 f"{entry.file_name}"] = (body, {})
    entry = use_entry(monkeypatch, entry.name, configs=("ivt_tiny_test.yaml",))
    assert main(["weights", "get", entry.name, "--quiet"]) == 0
    digest = hashlib.sha256(body).hexdigest()
    assert f"no publisher hash: sha256 printed and recorded on first download; sha256 " \
        f"{digest}" in capsys.readouterr().out
    manifest = json.loads(cached_file(entry).with_suffix(".json").read_text())
    assert manifest["sha256"] == digest
    cached = torch.load(cached_file(entry), weights_only=True)
    assert torch.equal(cached["features.3.1.attn.qkv.weight"],
                       state["features.3.1.attn.qkv.weight"])


def test_a_wrong_hash_fails_in_one_line_and_keeps_nothing(cache, server, monkeypatch, capsys):
    body = torch_bytes(tiny_torchvision_swin())
    entry = serve_torchvision(server, monkeypatch, body, prefix="00000000")
    assert main(["weights", "get", "torchvision:swin_t", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256 prefix is 00000000" in err, err
    assert "run `ivtuning weights get torchvision:swin_t` again" in err
    assert not is_cached(entry) and not any(p.is_file() for p in cache[0].rglob("*"))


def test_a_truncated_download_fails_in_one_line_and_keeps_nothing(cache, server, monkeypatch,
                                                                  capsys):
    body = torch_bytes(tiny_torchvision_swin())
    entry = serve_torchvision(server, monkeypatch, body)
    server.truncate = len(body) // 2
    assert main(["weights", "get", "torchvision:swin_t", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"stopped after {len(body) // 2} of {len(body)} bytes " \
        "(truncated" in err, err
    assert not is_cached(entry) and not any(p.is_file() for p in cache[0].rglob("*"))


def test_no_network_fails_in_one_line(cache, monkeypatch, capsys):
    monkeypatch.setenv("IVTUNING_MIRROR", "http://127.0.0.1:9")  # discard port: refused
    assert main(["weights", "get", "dino_swin_l_coco", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach 127.0.0.1:9" in err, err
    assert "`ivtuning weights import dino_swin_l_coco FILE`" in err


def test_a_file_the_server_lacks_fails_in_one_line(cache, capsys):
    """The mirror (the loopback server) has no such path: HTTP 404 from the size request."""
    assert main(["weights", "get", "dino_swin_l_coco", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answered HTTP 404" in err, err
    assert "`ivtuning weights import dino_swin_l_coco FILE`" in err


# timm / huggingface_hub ------------------------------------------------------------------
VIT_SIZES = {"embed_dim": 64, "depths": [2], "num_heads": [2], "feature_layers": None}


def serve_timm(server: Served, monkeypatch, models: Path) -> tuple[dict, catalog.WeightsEntry]:
    """A DINOv3 ViT-S in timm's layout (timm's own module at test size) as the hub's
    model.safetensors; the config the entry checks against has the same sizes."""
    write_config(models, "vit_test.yaml", "ivt_dinov3_s_realtime.yaml", {"backbone": VIT_SIZES})
    torch.manual_seed(6)
    vit = timm.create_model("vit_small_patch16_dinov3", pretrained=False, embed_dim=64,
                            depth=2, num_heads=2)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    body = save(state)
    entry = use_entry(monkeypatch, "timm:dinov3_s", configs=("vit_test.yaml",))
    server.files[f"/{entry.location}/resolve/main/model.safetensors"] = (body, {
        "X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})
    return state, entry


def test_get_fetches_a_timm_vit_through_huggingface_hub(cache, server, monkeypatch, capsys):
    state, entry = serve_timm(server, monkeypatch, cache[1])
    assert main(["weights", "get", "timm:dinov3_s", "--quiet"]) == 0
    assert "verified (sha256 published by the Hugging Face hub" in capsys.readouterr().out
    cached = torch.load(cached_file(entry), weights_only=True)
    assert all(torch.equal(cached[k], v) for k, v in state.items())
    config = load_config(cache[1] / "vit_test.yaml", ["backbone.weights=timm:dinov3_s"])
    vit = build_model(config).backbone.vit
    assert torch.equal(vit.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    assert not (cache[0] / ".downloads").exists()


def test_a_hub_file_that_differs_from_its_published_hash_is_refused(cache, server, monkeypatch,
                                                                    capsys):
    _, entry = serve_timm(server, monkeypatch, cache[1])
    path = f"/{entry.location}/resolve/main/model.safetensors"
    body, headers = server.files[path]
    server.files[path] = (body, {**headers, "ETag": f'"{"ab" * 32}"'})
    assert main(["weights", "get", "timm:dinov3_s", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the publisher's sha256 is abababab" in err, err
    assert not is_cached(entry) and not any(p.is_file() for p in cache[0].rglob("*"))


def test_a_truncated_hub_download_and_no_hub_fail_in_one_line(cache, server, monkeypatch,
                                                              capsys):
    _, entry = serve_timm(server, monkeypatch, cache[1])
    server.truncate = 1000
    assert main(["weights", "get", "timm:dinov3_s", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is truncated" in err, err
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert main(["weights", "get", "timm:dinov3_s", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach 127.0.0.1:9" in err, err
    assert not is_cached(entry) and not any(p.is_file() for p in cache[0].rglob("*"))


def test_a_gated_hub_file_names_the_licence_and_the_login(cache, server, monkeypatch, capsys):
    """The hub's answer for a licence not yet accepted (401, ``X-Error-Code: GatedRepo``)."""
    _, entry = serve_timm(server, monkeypatch, cache[1])
    server.refusals[f"/{entry.location}/resolve/main/model.safetensors"] = (
        401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"})
    assert main(["weights", "get", "timm:dinov3_s", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is gated: accept its licence (dinov3-license)" in err, err
    assert "`hf auth login`" in err and not is_cached(entry)


# mmdet DINO -------------------------------------------------------------------------------
@pytest.fixture
def coco_detector(cache, server, monkeypatch):
    """mmdet's DINO checkpoint as its model zoo publishes it ({"meta", "state_dict"}), random
    weights: the tiny Swin in mmdet's layout plus the parity fixture's head (keys written
    by mmdet 3.3), served under its zoo path with the name's hash prefix."""
    parity = torch.load(FIXTURE, weights_only=True)
    config_data = {"detection": dict(item.split("=", 1) for item in [
        o.removeprefix("detection.") for o in parity["meta"]["overrides"]]),
        "segmentation": None}
    config_data["detection"] = {k: int(v) for k, v in config_data["detection"].items()}
    write_config(cache[1], "tiny_dino_coco.yaml", "ivt_tiny_test.yaml", config_data)
    config = load_config(cache[1] / "tiny_dino_coco.yaml")
    torch.manual_seed(7)
    source = build_model(config, load_weights=False)
    with torch.no_grad():
        for parameter in source.backbone.out_norms.parameters():
            parameter.normal_()
    swin = to_mmdet(source.backbone.swin.state_dict(), source.backbone.out_norms)
    state = {**{k: v for k, v in swin.items() if k.startswith("backbone.")},
             **parity["state_dict"]}
    body = torch_bytes({"meta": {"mmdet_version": "3.3.0"}, "state_dict": state})
    file_name = f"dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-" \
                f"{hashlib.sha256(body).hexdigest()[:8]}.pth"
    folder = "/download.openmmlab.com/mmdetection/v3.0/dino/dino-5scale_swin-l_8xb2-12e_coco"
    server.files[f"{folder}/{file_name}"] = (body, {})
    use_entry(monkeypatch, "dino_swin_l_coco", file_name=file_name,
              location=f"https://{folder[1:]}/{file_name}", configs=("tiny_dino_coco.yaml",))
    return config, state


def test_a_converted_coco_detector_with_the_prompter_untrained_is_the_detector_exactly(
        coco_detector, capsys):
    """IV-tuning on RGB + IR, prompter untrained, against the same mmdet weights loaded
    without IV-tuning (the frozen Swin alone, no prompts, no IR): identical bits."""
    config, state = coco_detector
    assert main(["weights", "get", "dino_swin_l_coco", "--quiet"]) == 0
    assert "IV-tuning's prompter untrained" in capsys.readouterr().out
    tuned, _ = load_checkpoint("dino_swin_l_coco")  # the name, resolved from the cache
    plain = build_model(config, load_weights=False).eval()
    load_mmdet_dino(plain, state)
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randn(2, 3, 64, 80, generator=generator)
    ir = torch.randn(2, 1, 64, 80, generator=generator)
    with torch.inference_mode():
        ours = tuned.eval()(rgb, ir)
        theirs = plain.heads(plain.backbone.forward_frozen(rgb), (64, 80))
    assert ours["ir_used"]
    assert torch.equal(ours["pred_logits"], theirs["pred_logits"])
    assert torch.equal(ours["pred_boxes"], theirs["pred_boxes"])
    letterbox = letterbox_for(480, 600, 64, 80)
    detections = [postprocess(out["pred_logits"], out["pred_boxes"], letterbox, num_select=10)
                  for out in (ours, theirs)]
    for a, b in zip(*detections, strict=True):
        assert len(a["scores"]) == 10
        assert all(torch.equal(a[k], b[k]) for k in ("scores", "labels", "boxes"))
    randomize_trainable(tuned.backbone)  # a tuned prompter: IR now changes the outputs
    with torch.inference_mode():
        assert not torch.equal(tuned(rgb, ir)["pred_boxes"], theirs["pred_boxes"])


# names, path, import, facts --------------------------------------------------------------
def test_an_uncached_name_is_refused_with_the_command_that_fetches_it(cache, capsys):
    with pytest.raises(NotCached) as error:
        resolve("dino_swin_l_coco")
    message = str(error.value)
    assert "\n" not in message and "`ivtuning weights get dino_swin_l_coco`" in message
    assert str(cache[0]) in message
    assert main(["weights", "path", "timm:sam_h"]) == 2
    assert "`ivtuning weights get timm:sam_h`" in capsys.readouterr().err
    assert resolve("models/some.pth") == "models/some.pth"  # a path stays a path


def test_import_verifies_converts_and_caches_a_file_fetched_elsewhere(
        cache, server, monkeypatch, tmp_path, capsys):
    (cache[1] / "ivt_tiny_test.yaml").write_text((MODELS / "ivt_tiny_test.yaml").read_text())
    body = torch_bytes(tiny_torchvision_swin())
    entry = serve_torchvision(server, monkeypatch, body)
    wrong = tmp_path / "other.pth"
    wrong.write_bytes(body + b"\0")
    assert main(["weights", "import", "torchvision:swin_t", str(wrong)]) == 2
    assert "has sha256" in capsys.readouterr().err and not is_cached(entry)
    copied = tmp_path / entry.file_name
    copied.write_bytes(body)
    assert main(["weights", "import", "torchvision:swin_t", str(copied)]) == 0
    assert main(["weights", "path", "torchvision:swin_t"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(cached_file(entry)))
    load_swin_checkpoint(build_model(load_config(MODELS / "ivt_tiny_test.yaml"),
                                     load_weights=False).backbone, cached_file(entry))


def test_list_shows_every_entry_and_what_is_cached(cache, capsys):
    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["cache"] == str(cache[0])
    assert [row["name"] for row in listing["weights"]] == list(catalog.CATALOG)
    assert not any(row["cached"] for row in listing["weights"])


def test_catalogue_facts_match_the_installed_libraries():
    """URLs and hash prefixes from torchvision's weight enums; hub ids and licences from
    timm's pretrained configs; every config named exists and has the entry's variant."""
    from torchvision.models import Swin_B_Weights, Swin_S_Weights, Swin_T_Weights

    for name, weights in (("swin_t", Swin_T_Weights), ("swin_s", Swin_S_Weights),
                          ("swin_b", Swin_B_Weights)):
        entry = catalog.CATALOG[f"torchvision:{name}"]
        assert entry.location == weights.IMAGENET1K_V1.url, torchvision.__version__
        assert entry.size_mb == pytest.approx(weights.IMAGENET1K_V1.meta["_file_size"], 0.01)
        assert entry.hash_prefix and entry.location.endswith(entry.file_name)
    for entry in catalog.CATALOG.values():
        if entry.source == "timm":
            cfg = timm.models.get_pretrained_cfg(entry.location.removeprefix("timm/"))
            assert (cfg.hf_hub_id, cfg.license) == (entry.location, entry.licence), entry.name
        for config_name in entry.configs:
            config = load_config(MODELS / config_name)
            variant = entry.name.split(":")[-1].removesuffix("_22k")
            if entry.converter != "mmdet_dino":
                assert config.backbone.variant == variant, (entry.name, config_name)
    assert catalog.CATALOG["dino_swin_l_coco"].hash_prefix == "a654145f"
