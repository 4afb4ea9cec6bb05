#!/usr/bin/env python3
"""Reference outputs of torchvision's crop/resize geometry for tests/geometry.rs.

Writes tests/fixtures/geometry.safetensors (about 0.9 MB):

- ``img/{k}``: three test images, uint8 HWC (240x180, 150x200, 97x61; W x H), cut and resized
  from scikit-image sample photos. Both sides start from these exact pixels.
- ``crop/{k}/{j}/box``: int64 (top, left, height, width); ``crop/{k}/{j}/{S}``: uint8 SxSx3,
  ``torchvision.transforms.functional.resized_crop(pil, top, left, h, w, [S, S],
  antialias=True)`` (PIL's antialiased bilinear).
- ``eval/{k}/{frac}/{S}``: uint8 SxSx3, ``CenterCrop(S)(Resize(int(S / frac))(pil))``.
- ``rrc/{c}/spec`` float64 (width, height, scale0, scale1, ratio0, ratio1),
  ``rrc/{c}/draws`` float64: the random draws ``RandomResizedCrop.get_params`` made, in order
  (area fraction, log aspect ratio, per try; then top and left offsets), ``rrc/{c}/box`` int64
  the (top, left, height, width) it returned.

Outputs are stored as the uint8 PIL produces: ``to_tensor`` of them is exactly ``u8 / 255`` in
float32, so the test divides by 255 and compares in [0, 1] without storing 4x the bytes.

With ``--photos DIR`` it also writes two scikit-image photos at native resolution as JPEG
quality 90 (``coffee.jpg`` 600x400, ``retina.jpg`` a 1000x750 cut of the 1411x1411 fundus
photo) for the DCT-scaling measurement of tests/geometry.rs (``dct_scaling_error_on_photos``).

Run: /tmp/torchvenv/bin/python scripts/torchvision_geometry.py [--photos DIR]
"""

import argparse
import os

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from safetensors.numpy import save_file
from skimage import data

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "geometry.safetensors")


def test_images():
    """Three non-square uint8 RGB images (landscape, portrait, small and odd-sized)."""
    coffee = Image.fromarray(data.coffee()).resize((240, 180), Image.BILINEAR)
    astro = Image.fromarray(data.astronaut()[40:440, 110:410]).resize((150, 200), Image.BILINEAR)
    cat = Image.fromarray(data.chelsea()).resize((97, 61), Image.BILINEAR)
    return [np.ascontiguousarray(np.asarray(im, dtype=np.uint8)) for im in (coffee, astro, cat)]


def crop_boxes(h, w, seed):
    """(top, left, height, width): the whole image, a RandomResizedCrop draw, a small
    off-centre box (upsampled at 112), a thin box."""
    torch.manual_seed(seed)
    rrc = T.RandomResizedCrop.get_params(torch.zeros(3, h, w), [0.2, 1.0], [3 / 4, 4 / 3])
    return [(0, 0, h, w), rrc, (h // 3, w // 5, h // 3, w // 3), (1, 3, h - 7, w // 2)]


class Recorder:
    """Records the draws of get_params: Tensor.uniform_ results and torch.randint results."""

    def __init__(self):
        self.draws = []
        self.uniform = torch.Tensor.uniform_
        self.randint = torch.randint

    def __enter__(self):
        rec = self

        def uniform_(t, a=0.0, b=1.0, **kw):
            out = rec.uniform(t, a, b, **kw)
            rec.draws.append(float(out.item()))
            return out

        def randint(*args, **kw):
            out = rec.randint(*args, **kw)
            rec.draws.append(float(out.item()))
            return out

        torch.Tensor.uniform_ = uniform_
        torch.randint = randint
        return self

    def __exit__(self, *exc):
        torch.Tensor.uniform_ = self.uniform
        torch.randint = self.randint


def rrc_cases():
    """(width, height, scale, ratio) cases, each with a few seeds; two force the fallback."""
    ratio = [3 / 4, 4 / 3]
    cases = [(240, 180, [0.2, 1.0], ratio, 16), (97, 61, [0.2, 1.0], ratio, 8), (32, 32, [0.2, 1.0], ratio, 8)]
    cases += [(500, 375, [0.08, 1.0], ratio, 8), (200, 20, [0.9, 1.0], ratio, 2), (20, 200, [0.9, 1.0], ratio, 2)]
    return cases


def write_photos(directory):
    """JPEG q90 (PIL, libjpeg) of two photos at native resolution, not resampled."""
    os.makedirs(directory, exist_ok=True)
    for name, arr in (("coffee", data.coffee()), ("retina", data.retina()[300:1050, 200:1200])):
        path = os.path.join(directory, f"{name}.jpg")
        Image.fromarray(np.ascontiguousarray(arr)).save(path, quality=90)
        print(f"wrote {path}: {arr.shape[1]}x{arr.shape[0]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", help="also write JPEG photos for the DCT measurement here")
    args = ap.parse_args()
    if args.photos:
        write_photos(args.photos)
    tensors = {}
    images = test_images()
    for k, img in enumerate(images):
        h, w, _ = img.shape
        tensors[f"img/{k}"] = img
        pil = Image.fromarray(img)
        for j, box in enumerate(crop_boxes(h, w, 100 + k)):
            tensors[f"crop/{k}/{j}/box"] = np.array(box, dtype=np.int64)
            sizes = [32, 112] + ([224] if (k, j) == (0, 1) else [])
            for s in sizes:
                out = F.resized_crop(pil, *box, [s, s], interpolation=T.InterpolationMode.BILINEAR, antialias=True)
                tensors[f"crop/{k}/{j}/{s}"] = np.asarray(out, dtype=np.uint8)
        for frac, sizes in ((0.875, [32, 112]), (1.0, [32])):
            for s in sizes:
                tf = T.Compose([T.Resize(int(s / frac)), T.CenterCrop(s)])
                tensors[f"eval/{k}/{frac}/{s}"] = np.asarray(tf(pil), dtype=np.uint8)
    c = 0
    for w, h, scale, ratio, seeds in rrc_cases():
        for seed in range(seeds):
            torch.manual_seed(1000 + seed)
            with Recorder() as rec:
                box = T.RandomResizedCrop.get_params(torch.zeros(3, h, w), scale, ratio)
            tensors[f"rrc/{c}/spec"] = np.array([w, h, scale[0], scale[1], ratio[0], ratio[1]], dtype=np.float64)
            tensors[f"rrc/{c}/draws"] = np.array(rec.draws, dtype=np.float64)
            tensors[f"rrc/{c}/box"] = np.array(box, dtype=np.int64)
            c += 1
    save_file(tensors, OUT)
    print(f"wrote {OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
