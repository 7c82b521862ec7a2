"""The weights catalogue: every public checkpoint the project fetches by name, in one table.

Each entry says what the file is, where it comes from (``source``: ``torchvision`` and
``url`` download a URL with torch.hub; ``timm`` downloads the hub file timm's pretrained
config names, with huggingface_hub), how it is verified, its licence, the model configs
that use it and the converter that turns it into this project's layout. Where each fact
comes from is in ``provenance``; tests check the torchvision URLs and the timm hub ids and
licences against the installed libraries.

Verification: ``sha256`` where the full hash is known; else the publisher's hash prefix in
the file name (torchvision's and mmdet's ``name-<first 8 hex digits of sha256>.pth``, checked
by torch.hub as torchvision does); for the timm files, Hugging Face's LFS hash (the file's
sha256, which huggingface_hub stores the file under) is checked against the bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SOURCES = ("torchvision", "url", "timm")
# converter -> what the cached file is and which setting takes it
CONVERTERS = {"swin": "Swin backbone, torchvision layout (backbone.weights)",
              "vit": "ViT backbone, timm layout (backbone.weights)",
              "mmdet_dino": "full ivtuning checkpoint (the node's checkpoint)"}
HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.pth$")  # torch.hub's rule for a hash in a name


@dataclass(frozen=True)
class WeightsEntry:
    """One public checkpoint.

    ``location``: the URL (``torchvision``, ``url``) or the Hugging Face hub id (``timm``);
    ``file_name``: the publisher's file name; ``size_mb``: the download's size, approximate
    where the publisher states none; ``configs``: model configs under models/, the first is
    the one the converter checks against (``mmdet_dino``: converts into).
    """

    name: str
    what: str
    source: str
    location: str
    file_name: str
    size_mb: float
    licence: str
    configs: tuple[str, ...]
    converter: str
    provenance: str
    sha256: str | None = None

    @property
    def hash_prefix(self) -> str | None:
        """The publisher's sha256 prefix carried in the file name, if any."""
        match = HASH_PREFIX.search(self.file_name)
        return match[1] if match else None

    @property
    def verification(self) -> str:
        """How a download of this entry is checked, in a few words."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.hash_prefix:
            return f"sha256 prefix {self.hash_prefix} (publisher's file name)"
        if self.source == "timm":
            return "sha256 published by the Hugging Face hub (LFS)"
        return "no publisher hash: sha256 printed and recorded on first download"

    @property
    def cache_file(self) -> str:
        """The converted file's name in the cache (``:`` is not portable in file names)."""
        return self.name.replace(":", "--") + ".pth"


_TORCHVISION = ("URL and hash prefix: torchvision.models.Swin_{}_Weights.IMAGENET1K_V1.url "
                "(torchvision 0.29), size: its meta _file_size")
_TIMM = "hub id and licence: timm 1.0 get_pretrained_cfg('{}')"

CATALOG: dict[str, WeightsEntry] = {entry.name: entry for entry in (
    WeightsEntry("torchvision:swin_t", "Swin-T, ImageNet-1k (81.5% top-1)", "torchvision",
                 "https://download.pytorch.org/models/swin_t-704ceda3.pth",
                 "swin_t-704ceda3.pth", 108.2, "BSD-3-Clause (torchvision)",
                 ("ivt_swin_t.yaml", "ivt_swin_t_realtime.yaml", "cpal_swin_t_realtime.yaml",
                  "dra_swin_t_realtime.yaml"), "swin", _TORCHVISION.format("T")),
    WeightsEntry("torchvision:swin_s", "Swin-S, ImageNet-1k (83.2% top-1)", "torchvision",
                 "https://download.pytorch.org/models/swin_s-5e29d889.pth",
                 "swin_s-5e29d889.pth", 189.8, "BSD-3-Clause (torchvision)",
                 ("ivt_swin_s.yaml",), "swin", _TORCHVISION.format("S")),
    WeightsEntry("torchvision:swin_b", "Swin-B, ImageNet-1k (83.6% top-1)", "torchvision",
                 "https://download.pytorch.org/models/swin_b-68c6b09e.pth",
                 "swin_b-68c6b09e.pth", 335.4, "BSD-3-Clause (torchvision)",
                 ("ivt_swin_b.yaml",), "swin", _TORCHVISION.format("B")),
    WeightsEntry("microsoft:swin_l_22k", "Swin-L 384 (window 12), ImageNet-22k: the paper's "
                 "pre-trained model", "url",
                 "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                 "swin_large_patch4_window12_384_22k.pth",
                 "swin_large_patch4_window12_384_22k.pth", 915.0, "MIT (Swin Transformer)",
                 ("ivt_swin_l.yaml", "ivt_swin_l_dino_m3fd.yaml",
                  "ivt_swin_l_segformer_mfnet.yaml"), "swin",
                 "URL: mmdetection configs/dino/dino-5scale_swin-l_8xb2-12e_coco.py "
                 "(`pretrained`); size approximate (195M backbone + 33.6M ImageNet-22k head "
                 "parameters, fp32)"),
    WeightsEntry("timm:eva02_l", "EVA02-L/14 MIM on Merged-38M (Tables I, III, VII)", "timm",
                 "timm/eva02_large_patch14_224.mim_m38m", "model.safetensors", 1220.0, "mit",
                 ("ivt_eva02_l_segformer_mfnet.yaml",), "vit",
                 _TIMM.format("eva02_large_patch14_224.mim_m38m")),
    WeightsEntry("timm:clip_l", "CLIP ViT-L/14, OpenAI (Table VII)", "timm",
                 "timm/vit_large_patch14_clip_224.openai", "model.safetensors", 1220.0,
                 "apache-2.0", ("ivt_clip_l_segformer_mfnet.yaml",), "vit",
                 _TIMM.format("vit_large_patch14_clip_224.openai")),
    WeightsEntry("timm:mae_l", "MAE ViT-L/16 pre-trained on ImageNet-1k (Table VII)", "timm",
                 "timm/vit_large_patch16_224.mae", "model.safetensors", 1210.0, "cc-by-nc-4.0",
                 ("ivt_mae_l_segformer_mfnet.yaml",), "vit",
                 _TIMM.format("vit_large_patch16_224.mae")),
    WeightsEntry("timm:sam_h", "SAM ViT-H image encoder, SA-1B (Table VII)", "timm",
                 "timm/samvit_huge_patch16.sa1b", "model.safetensors", 2550.0, "apache-2.0",
                 ("ivt_sam_h_segformer_mfnet.yaml",), "vit",
                 _TIMM.format("samvit_huge_patch16.sa1b")),
    WeightsEntry("timm:dinov3_l", "DINOv3 ViT-L/16, LVD-1689M (Table VII)", "timm",
                 "timm/vit_large_patch16_dinov3.lvd1689m", "model.safetensors", 1210.0,
                 "dinov3-license", ("ivt_dinov3_l_segformer_mfnet.yaml",), "vit",
                 _TIMM.format("vit_large_patch16_dinov3.lvd1689m")),
    WeightsEntry("timm:dinov3_s", "DINOv3 ViT-S/16, LVD-1689M (the real-time ViT)", "timm",
                 "timm/vit_small_patch16_dinov3.lvd1689m", "model.safetensors", 87.0,
                 "dinov3-license", ("ivt_dinov3_s_realtime.yaml",), "vit",
                 _TIMM.format("vit_small_patch16_dinov3.lvd1689m")),
    WeightsEntry("dino_swin_l_coco", "DINO-5scale Swin-L, COCO 12 epochs (57.2 box AP), "
                 "mmdet 3.x", "url",
                 "https://download.openmmlab.com/mmdetection/v3.0/dino/"
                 "dino-5scale_swin-l_8xb2-12e_coco/"
                 "dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth",
                 "dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth", 880.0,
                 "Apache-2.0 (mmdetection)", ("dino_swin_l_coco.yaml",), "mmdet_dino",
                 "URL and AP: mmdetection configs/dino/README.md; size approximate "
                 "(218M parameters, fp32)"),
)}


def known_names() -> list[str]:
    return list(CATALOG)


def is_catalogue_name(value: str | None) -> bool:
    """Whether a setting's value names a catalogue entry (rather than a file)."""
    return bool(value) and value in CATALOG


def find(name: str) -> WeightsEntry:
    """The entry called ``name``; `KeyError` with the known names otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"'{name}' is not in the weights catalogue; known: "
                       f"{', '.join(CATALOG)} (`ivtuning weights list`)") from None
