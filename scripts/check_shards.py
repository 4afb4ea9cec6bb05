"""Check a pack of shards (`moco data pack --format shards`) against its index.json.

    python3 scripts/check_shards.py PACK_DIR [--no-decode]

Opens every shard of every split with Python's tarfile (an independent ustar reader) and
checks that it lists exactly the members `<key>.jpg` and `<key>.cls` of the index, in order,
that each JPEG's data offset and size in the file are the index's, that each `.cls` holds the
index's label in ASCII decimal, that the file size is the index's, and, with Pillow installed
(unless --no-decode), that every JPEG decodes with the index's short side (or a smaller one:
images are never upscaled). Prints "OK: N samples ..." and exits 0, or lists the problems
(the first 20) and exits 1.
"""

import argparse
import io
import json
import os
import sys
import tarfile


def check_shard(path, shard, classes, short_side, decode, problems):
    """Check one shard file against its index entry; returns the number of samples read."""
    if os.path.getsize(path) != shard["bytes"]:
        problems.append(f"{path}: {os.path.getsize(path)} bytes, index says {shard['bytes']}")
    with tarfile.open(path, mode="r:") as tar:
        members = tar.getmembers()
        expected = [f"{k}.{ext}" for k in shard["keys"] for ext in ("jpg", "cls")]
        names = [m.name for m in members]
        if names != expected:
            problems.append(f"{path}: members {names[:4]}... differ from the index's {expected[:4]}...")
            return 0
        for i, key in enumerate(shard["keys"]):
            jpg, cls = members[2 * i], members[2 * i + 1]
            where = f"{path}:{key}"
            if not (jpg.isfile() and cls.isfile()):
                problems.append(f"{where}: not regular files")
            if (jpg.offset_data, jpg.size) != (shard["offsets"][i], shard["sizes"][i]):
                problems.append(
                    f"{where}.jpg: offset/size {jpg.offset_data}/{jpg.size}, index says "
                    f"{shard['offsets'][i]}/{shard['sizes'][i]}"
                )
            label = tar.extractfile(cls).read().decode("ascii")
            if label != str(shard["labels"][i]) or not 0 <= int(label) < classes:
                problems.append(f"{where}.cls: {label!r}, index says {shard['labels'][i]}")
            if decode is not None:
                check_jpeg(decode, tar.extractfile(jpg).read(), where, short_side, problems)
    return len(shard["keys"])


def check_jpeg(image_module, data, where, short_side, problems):
    """The JPEG decodes, and its short side is at most the pack's."""
    try:
        with image_module.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                problems.append(f"{where}.jpg: {im.format}, not JPEG")
            im.load()
            if min(im.size) > short_side:
                problems.append(f"{where}.jpg: {im.size}, short side above {short_side}")
    except Exception as e:  # noqa: BLE001 - any decoder failure is a finding
        problems.append(f"{where}.jpg: does not decode: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pack", help="the pack folder (holds index.json)")
    ap.add_argument("--no-decode", action="store_true", help="skip decoding the JPEGs with Pillow")
    args = ap.parse_args()
    with open(os.path.join(args.pack, "index.json")) as f:
        index = json.load(f)
    if index.get("format") != "moco-shards" or index.get("version") != 1:
        sys.exit(f"{args.pack}/index.json: format {index.get('format')!r} version {index.get('version')!r} unknown")
    decode = None
    if not args.no_decode:
        try:
            from PIL import Image as decode
        except ImportError:
            print("note: Pillow not installed, JPEGs not decoded", file=sys.stderr)
    problems, counts, shards, total_bytes = [], {}, 0, 0
    for name, split in sorted(index["splits"].items()):
        n = 0
        for shard in split["shards"]:
            path = os.path.join(args.pack, shard["name"])
            n += check_shard(path, shard, len(index["classes"]), index["short_side"], decode, problems)
            shards += 1
            total_bytes += shard["bytes"]
        if n != split["samples"]:
            problems.append(f"split {name}: {n} samples read, index says {split['samples']}")
        counts[name] = n
    if problems:
        for p in problems[:20]:
            print(p)
        sys.exit(f"FAILED: {len(problems)} problem(s)")
    per_split = ", ".join(f"{k} {v}" for k, v in counts.items())
    decoded = "decoded with Pillow" if decode is not None else "not decoded"
    print(
        f"OK: {sum(counts.values())} samples ({per_split}) in {shards} shards, "
        f"{total_bytes / 1e6:.1f} MB, {len(index['classes'])} classes; names, offsets, sizes and "
        f"labels match index.json; JPEGs {decoded}, short side <= {index['short_side']}"
    )


if __name__ == "__main__":
    main()
