#!/usr/bin/env python3
"""Check that an exported encoder is a PyTorch model: load `model.safetensors` into torchvision's
ResNet (CIFAR stem adjusted) with strict=True, run it on the inputs `moco embed --with-inputs`
recorded, and compare with the features the harness computed for the same images.

    moco push RUN --repo me/x --export-only /tmp/export
    moco embed /tmp/export/model.safetensors --data PATH --limit 256 --with-inputs --out /tmp/feats.safetensors
    bench/.venv/bin/python bench/torch_check_export.py /tmp/export /tmp/feats.safetensors

Exit 1 when the largest absolute difference exceeds --tol (relative to the features' scale).
Not part of CI (needs PyTorch: `just bench-venv`)."""

import argparse
import json
import sys
from pathlib import Path

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

LAYERS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
          "resnet50": (Bottleneck, [3, 4, 6, 3])}


class NarrowResNet(ResNet):
    """torchvision's ResNet with the first stage `width` channels instead of 64 (same names)."""

    def __init__(self, block, layers, width):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, 1000)


def build(cfg):
    arch, width = cfg["arch"], cfg["width"]
    block, layers = LAYERS[arch]
    # Exactly the model card's snippet when the width is torchvision's.
    model = getattr(torchvision.models, arch)() if width == 64 else NarrowResNet(block, layers, width)
    if cfg["stem"] == "cifar":
        model.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    feat = width * 8 * block.expansion
    if cfg["head"] == "mlp":
        model.fc = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, cfg["dim"]))
    else:
        model.fc = nn.Linear(feat, cfg["dim"])
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="folder with model.safetensors and config.json")
    ap.add_argument("embed", type=Path, help="moco embed --with-inputs output")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |diff| / max |feature|")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = json.loads((a.export / "config.json").read_text())
    with safe_open(str(a.export / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta.get("format") == "pt", f"metadata format is {meta.get('format')!r}, expected 'pt'"
    model = build(cfg)
    state = load_file(str(a.export / "model.safetensors"))
    model.load_state_dict(state, strict=True)  # raises on any missing/unexpected name or shape
    model.fc = nn.Identity()
    model.eval()
    emb = load_file(str(a.embed))
    x, ours = emb["inputs"], emb["features"]
    with torch.no_grad():
        theirs = model(x)
    diff = (theirs - ours).abs().max().item()
    scale = ours.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(theirs, ours, dim=1).min().item()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; {cfg['arch']} width {cfg['width']} "
          f"{cfg['stem']} stem, {len(state)} tensors loaded with strict=True")
    print(f"{x.shape[0]} images {tuple(x.shape[1:])}: features {tuple(ours.shape)}; "
          f"max |torch - moco embed| = {diff:.3e} (max |feature| {scale:.3e}, relative {diff / scale:.3e}); "
          f"min cosine {cos:.7f}")
    ok = diff <= a.tol * scale
    print("OK" if ok else f"FAIL: relative difference above {a.tol}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
