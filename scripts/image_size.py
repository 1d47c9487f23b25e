"""The image's size as a registry sees it: uncompressed (`docker image inspect`) and compressed
(every layer through gzip -1 as `docker save IMAGE | gzip -1` would; a fair, slightly high stand-in
for what a registry stores), with a table of the layers and what made each. Exits 1 above a limit.

usage: python scripts/image_size.py IMAGE [--max-gb 8.5] [--max-compressed-gb 5.0]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass

GB = 1e9
CHUNK = 1 << 20


@dataclass
class Layer:
    size: int  # uncompressed bytes of the layer's tar
    gzipped: int  # the same through gzip -1
    created_by: str


def gzip1_size(stream) -> tuple[int, int]:  # noqa: ANN001 - a tarfile member's file object
    """(bytes read, bytes gzip -1 makes of them), streaming: nothing is written to disk."""
    packer, raw, packed = zlib.compressobj(1, zlib.DEFLATED, 31), 0, 0
    while block := stream.read(CHUNK):
        raw += len(block)
        packed += len(packer.compress(block))
    return raw, packed + len(packer.flush())


def measure(image: str) -> tuple[int, list[Layer]]:
    """The image's size and its layers, bottom first, from one pass over `docker save` (the
    classic layout, <id>/layer.tar, or the OCI one, blobs/sha256/<digest>: small files are kept
    until manifest.json says which are layers)."""
    size = int(subprocess.run(["docker", "image", "inspect", image, "--format", "{{.Size}}"],
                              check=True, capture_output=True, text=True).stdout)
    sizes: dict[str, tuple[int, int]] = {}
    small: dict[str, bytes] = {}
    with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    data = tar.extractfile(member)
                    if member.size > CHUNK:
                        sizes[member.name] = gzip1_size(data)
                    else:
                        small[member.name] = data.read()
    if proc.returncode:
        sys.exit(f"docker save {image} failed ({proc.returncode})")
    for name, data in small.items():
        packed = zlib.compressobj(1, zlib.DEFLATED, 31)
        sizes.setdefault(name, (len(data), len(packed.compress(data) + packed.flush())))
    manifest = json.loads(small["manifest.json"])[0]
    config = json.loads(small[manifest["Config"]])
    steps = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
    return size, [Layer(*sizes[name], created_by=step) for name, step in zip(manifest["Layers"], steps)]


def short(step: str, width: int = 80) -> str:
    """What made a layer, without the classic builder's `|N ARG=value ...` and shell prefixes."""
    step = re.sub(r"^\|\d+ (\S+=\S* )*", "", step)
    step = re.sub(r"^(/bin/(ba)?sh (-o pipefail )?-c )(#\(nop\) )?", "", step).strip()
    step = re.sub(r"\s+", " ", step) or "(the base image)"
    return step if len(step) <= width else step[:width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--max-gb", type=float, default=8.5, help="uncompressed limit (GB, 10^9 bytes)")
    parser.add_argument("--max-compressed-gb", type=float, default=5.0, help="gzip -1 limit (GB)")
    args = parser.parse_args(argv)
    size, layers = measure(args.image)
    packed = sum(layer.gzipped for layer in layers)
    print(f"| layer | uncompressed | gzip -1 | made by |\n|---|---:|---:|---|")
    for i, layer in enumerate(layers, 1):
        if layer.size > 1024 * 1024 or i == 1:
            print(f"| {i} | {layer.size / GB:.2f} GB | {layer.gzipped / GB:.2f} GB | `{short(layer.created_by)}` |")
    print(f"| all | {size / GB:.2f} GB | {packed / GB:.2f} GB | {len(layers)} layers (the smallest not listed) |")
    failed = [f"{what} {value / GB:.2f} GB is above the limit of {limit} GB"
              for what, value, limit in (("uncompressed", size, args.max_gb),
                                         ("compressed", packed, args.max_compressed_gb)) if value > limit * GB]
    for line in failed:
        print(f"image-size: {args.image}: {line}", file=sys.stderr)
    if not failed:
        print(f"image-size: {args.image}: {size / GB:.2f} GB uncompressed (limit {args.max_gb}), "
              f"{packed / GB:.2f} GB compressed (limit {args.max_compressed_gb})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
