"""torchvision's MoCo v2 CIFAR augmentation, timed as `moco bench augment` times the harness's.

The same files (the first N of train/<class>/ in sorted order), decoded once with PIL, then each
image through the two-view transform of the official CIFAR demo / MoCo v2 without blur:
RandomResizedCrop(32, scale=(0.2, 1)), RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8),
RandomGrayscale(0.2), RandomHorizontalFlip, ToTensor, Normalize. One thread
(torch.set_num_threads(1)): per-core throughput. Prints one JSON object (--json writes it too).

    bench/.venv/bin/python bench/torch_augment.py --data ../shared/data/cifar10-jpeg --images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from PIL import Image
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    paths = files(a.data, a.images)
    if not paths:
        sys.exit(f"{a.data}: no images under <class>/ folders")
    t = time.perf_counter()
    imgs = [Image.open(p).convert("RGB") for p in paths]
    decode_s = time.perf_counter() - t
    tf = T.Compose(
        [
            T.RandomResizedCrop(a.size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
        ]
    )

    def one_pass() -> None:
        for im in imgs:
            tf(im)
            tf(im)

    one_pass()
    ts = []
    for _ in range(a.reps):
        t = time.perf_counter()
        one_pass()
        ts.append(time.perf_counter() - t)
    out = {
        "impl": "torchvision",
        "images": len(imgs),
        "size": a.size,
        "decode_img_per_s": len(imgs) / decode_s,
        "augment_img_per_s": len(imgs) / statistics.median(ts),
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
