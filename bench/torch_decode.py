"""torchvision + PIL's ImageNet input pipeline of MoCo v2, decode included, one core.

What main_moco.py --aug-plus does per training image (ImageFolder's PIL loader, then
TwoCropsTransform): `Image.open(path).convert('RGB')`, then twice
RandomResizedCrop(224, scale=(0.2, 1)), RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8),
RandomGrayscale(0.2), RandomApply(GaussianBlur, p=0.5) (moco.loader.GaussianBlur: PIL's
ImageFilter.GaussianBlur(radius=sigma), sigma uniform in [0.1, 2.0]), RandomHorizontalFlip,
ToTensor, Normalize(ImageNet mean / std). One thread (torch.set_num_threads(1)), no DataLoader
workers: per-core throughput. The files are the first N of train/<class>/ in sorted order (the
list `moco bench augment` and bench/torch_augment.py take); they are read once before timing,
so the page cache holds them and the figures are decode + augment, not disk.

Figures (median of --reps passes over the N files, after one untimed pass; the variants
alternate within each rep):

- decode_augment_img_per_s: open + decode + convert + two views. The headline figure.
- decode_ms_per_img / decode_img_per_s: `Image.open(p).convert('RGB')` alone.
- augment_img_per_s: the two views alone on images decoded beforehand (torch_augment.py's
  figure, at --size).
- cpu_*: the same from process CPU time (time.process_time), for a machine others share.
- with --draft, draft_*: the same with `img.draft('RGB', (size, size))` before convert, as
  naive pipelines do. NOT EQUIVALENT: libjpeg then decodes at 1/2, 1/4 or 1/8 scale where both
  sides stay >= size, so RandomResizedCrop draws its box from the reduced image (a 0.2-area
  crop of a half-size image is upsampled to 224 from a quarter of the pixels). With size 224
  only images whose short side is >= 448 are reduced at all (draft_reduced_images counts them).

    bench/.venv/bin/python bench/torch_decode.py --data /tmp/imagenet-like-5k --images 500 --draft
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import PIL
import PIL.features
import torch
import torchvision
from PIL import Image, ImageFilter
from torchvision import transforms as T


def files(root: str, limit: int) -> list[str]:
    base = os.path.join(root, "train") if os.path.isdir(os.path.join(root, "train")) else root
    out = []
    for c in sorted(os.listdir(base)):
        d = os.path.join(base, c)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg", ".png"))]
    out.sort()
    return out[:limit]


class GaussianBlur:
    """moco.loader.GaussianBlur (MoCo v2, after SimCLR)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.sigma[0], self.sigma[1])))


def load(path: str) -> Image.Image:
    # torchvision.datasets.folder.pil_loader
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def load_draft(path: str, size: int) -> tuple[Image.Image, bool]:
    with open(path, "rb") as f:
        img = Image.open(f)
        full = img.size
        img.draft("RGB", (size, size))
        img = img.convert("RGB")
    return img, img.size != full


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/imagenet-like-5k")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--draft", action="store_true", help="also time the draft-mode decode (not equivalent)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    paths = files(a.data, a.images)
    if not paths:
        sys.exit(f"{a.data}: no images under <class>/ folders")
    file_bytes = 0
    for p in paths:  # into the page cache
        with open(p, "rb") as f:
            file_bytes += len(f.read())
    tf = T.Compose(
        [
            T.RandomResizedCrop(a.size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )

    def decode_only() -> None:
        for p in paths:
            load(p)

    def full() -> None:
        for p in paths:
            im = load(p)
            tf(im)
            tf(im)

    def draft_decode_only() -> None:
        for p in paths:
            load_draft(p, a.size)

    def draft_full() -> None:
        for p in paths:
            im, _ = load_draft(p, a.size)
            tf(im)
            tf(im)

    decoded = [load(p) for p in paths]
    pixels = sum(im.size[0] * im.size[1] for im in decoded)

    def augment_only() -> None:
        for im in decoded:
            tf(im)
            tf(im)

    passes = {"decode": decode_only, "decode_augment": full, "augment": augment_only}
    reduced = 0
    if a.draft:
        passes["draft_decode"] = draft_decode_only
        passes["draft_decode_augment"] = draft_full
        reduced = sum(load_draft(p, a.size)[1] for p in paths)
    for f in passes.values():  # warm-up
        f()
    ts: dict[str, list[float]] = {k: [] for k in passes}
    cpu: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(a.reps):
        for k, f in passes.items():
            t, c = time.perf_counter(), time.process_time()
            f()
            ts[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    n = len(paths)
    med = {k: statistics.median(v) for k, v in ts.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "impl": "torchvision",
        "images": n,
        "size": a.size,
        "views": 2,
        "pipeline": "moco_v2_aug_plus",
        "decode_img_per_s": n / med["decode"],
        "decode_ms_per_img": 1e3 * med["decode"] / n,
        "augment_img_per_s": n / med["augment"],
        "decode_augment_img_per_s": n / med["decode_augment"],
        "mean_megapixels": pixels / n / 1e6,
        "mean_file_kb": file_bytes / n / 1e3,
        "reps": a.reps,
        "seconds": {k: [round(x, 4) for x in v] for k, v in ts.items()},
        # The same passes in process CPU seconds: on a shared machine (other processes on the
        # cores) wall time counts their share too; CPU time does not (cache sharing still does).
        "cpu_seconds": {k: [round(x, 4) for x in v] for k, v in cpu.items()},
        "cpu_decode_ms_per_img": 1e3 * cmed["decode"] / n,
        "cpu_augment_img_per_s": n / cmed["augment"],
        "cpu_decode_augment_img_per_s": n / cmed["decode_augment"],
    }
    if a.draft:
        out.update(
            {
                "draft_note": "not equivalent: img.draft('RGB', (size, size)) before convert; crops drawn from the reduced image",
                "draft_reduced_images": reduced,
                "draft_decode_ms_per_img": 1e3 * med["draft_decode"] / n,
                "draft_decode_augment_img_per_s": n / med["draft_decode_augment"],
                "cpu_draft_decode_ms_per_img": 1e3 * cmed["draft_decode"] / n,
                "cpu_draft_decode_augment_img_per_s": n / cmed["draft_decode_augment"],
            }
        )
    out["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
