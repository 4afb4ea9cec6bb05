"""An ImageNet-like ImageFolder of JPEGs, made offline from the photos scikit-image ships.

    OUT/train/n00000000/n00000000_0.JPEG ... OUT/train/n00000099/...
    OUT/test/n00000000/n00000000_test_0.JPEG ...

(the harness's ImageFolder source reads train/ and test/). Each image: class c's source photo
(c mod P of the photos below, so classes sharing a photo differ by their tint and rotation), a
class-specific colour tint (per-channel gains 0.7-1.3) and rotation (0/90/180/270 degrees),
then per image a random crop of 30-100% of the (rotated) photo's area at the output's aspect
ratio, resized (bicubic) to an ImageNet-like size, a random horizontal flip, saved by PIL at
--quality. Sizes follow ILSVRC-2012 train's shape: the long side 500 for 70% of the images
(log-uniform 300-800 otherwise), short/long 0.75 (500x375) for half, 0.666 (500x333) for a
quarter, square for 10%, uniform 0.6-0.95 for the rest; 75% landscape. ~2% are saved as
grayscale ('L') JPEGs and ~5% as progressive JPEGs (ImageNet has both); the rest baseline,
4:2:0 chroma subsampling (PIL's default, as most camera JPEGs). Photos that are grayscale in
scikit-image become colour through their class tint (only the 'L' files are grayscale).

Only photos bundled in the scikit-image wheel are used (no pooch downloads): astronaut,
coffee, chelsea, rocket, immunohistochemistry, hubble_deep_field, retina, the stereo pair's
motorcycle left/right, and the grayscale camera, coins, moon, clock, grass, gravel, brick,
cell. The crops are upscaled from photos of 0.1-2 MP, so the files are smoother (smaller) than
camera JPEGs of the same size; --noise adds Gaussian noise (sigma in grey levels) before
saving to bring the entropy, and the bytes per image, closer to ImageNet's ~110 KB.

Deterministic for a given --seed (each image draws from its own generator seeded by (seed,
split, class, index)). Single process.

    python scripts/make_imagenet_like.py --out /tmp/imagenet-like-5k --train 5000 --test 1000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np
from PIL import Image


def sources() -> list[tuple[str, Image.Image]]:
    """The bundled photos as RGB PIL images (grayscale ones replicated to three channels)."""
    import skimage.data as d

    out = []
    colour = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina"]
    gray = ["camera", "coins", "moon", "clock", "grass", "gravel", "brick", "cell"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in colour:
            out.append((n, Image.fromarray(getattr(d, n)()).convert("RGB")))
        left, right, _ = d.stereo_motorcycle()
        out.append(("motorcycle_left", Image.fromarray(left).convert("RGB")))
        out.append(("motorcycle_right", Image.fromarray(right).convert("RGB")))
        for n in gray:
            out.append((n, Image.fromarray(getattr(d, n)()).convert("RGB")))
    return out


def output_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) drawn to resemble ILSVRC-2012 train."""
    long = 500 if rng.random() < 0.7 else int(round(math.exp(rng.uniform(math.log(300), math.log(800)))))
    u = rng.random()
    ratio = 0.75 if u < 0.5 else 2 / 3 if u < 0.75 else 1.0 if u < 0.85 else rng.uniform(0.6, 0.95)
    short = max(1, int(round(long * ratio)))  # 500 x 2/3 -> 333, as ImageNet's
    return (long, short) if rng.random() < 0.75 else (short, long)


def make(src: Image.Image, gains: np.ndarray, rng: np.random.Generator, noise: float) -> Image.Image:
    w, h = output_size(rng)
    aspect = w / h
    sw, sh = src.size
    area = sw * sh * rng.uniform(0.3, 1.0)
    cw = min(sw, max(8, int(round(math.sqrt(area * aspect)))))
    ch = min(sh, max(8, int(round(cw / aspect))))
    cw = min(sw, max(8, int(round(ch * aspect))))  # re-fit if the height was clamped
    x0 = int(rng.integers(0, sw - cw + 1))
    y0 = int(rng.integers(0, sh - ch + 1))
    im = src.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(im, dtype=np.float32) * gains
    if noise > 0:
        a += rng.normal(0.0, noise, size=a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=5000, help="train images in all, spread evenly over the classes")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--noise", type=float, default=6.0, help="Gaussian noise sigma, grey levels (0: none)")
    ap.add_argument("--gray", type=float, default=0.02, help="fraction saved as grayscale 'L' JPEGs")
    ap.add_argument("--progressive", type=float, default=0.05, help="fraction saved as progressive JPEGs")
    ap.add_argument("--ext", default="JPEG", help="file extension (ImageNet's is JPEG)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    srcs = sources()
    P = len(srcs)
    rot = [None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270]
    classes = []
    for c in range(a.classes):
        crng = np.random.default_rng([a.seed, 7, c])
        r = int(crng.integers(0, 4)) if c >= P else 0  # the first use of each photo upright
        name, im = srcs[c % P]
        if rot[r] is not None:
            im = im.transpose(rot[r])
        gains = crng.uniform(0.7, 1.3, size=3).astype(np.float32)
        classes.append((f"n{c:08d}", name, im, gains))
    total_bytes = 0
    n = 0
    sum_w = sum_h = 0
    n_gray = n_prog = 0
    for split_id, (split, count) in enumerate((("train", a.train), ("test", a.test))):
        for c, (wnid, _, src, gains) in enumerate(classes):
            k = count // a.classes + (1 if c < count % a.classes else 0)
            d = os.path.join(a.out, split, wnid)
            os.makedirs(d, exist_ok=True)
            for i in range(k):
                rng = np.random.default_rng([a.seed, split_id, c, i])
                im = make(src, gains, rng, a.noise)
                kw = {"quality": a.quality}
                if rng.random() < a.gray:
                    im = im.convert("L")
                    n_gray += 1
                if rng.random() < a.progressive:
                    kw["progressive"] = True
                    kw["optimize"] = True
                    n_prog += 1
                stem = f"{wnid}_{i}" if split == "train" else f"{wnid}_test_{i}"
                path = os.path.join(d, f"{stem}.{a.ext}")
                im.save(path + ".tmp", "JPEG", **kw)
                os.replace(path + ".tmp", path)
                total_bytes += os.path.getsize(path)
                sum_w += im.size[0]
                sum_h += im.size[1]
                n += 1
        print(f"{split}: {count} images ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    dt = time.perf_counter() - t0
    print(
        f"{a.out}: {n} images ({a.train} train, {a.test} test, {a.classes} classes, {P} source photos), "
        f"{total_bytes / 1e6:.1f} MB ({total_bytes / max(n, 1) / 1e3:.1f} KB per image), "
        f"mean {sum_w / max(n, 1):.0f} x {sum_h / max(n, 1):.0f} px, "
        f"{n_gray} grayscale, {n_prog} progressive, {dt:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
