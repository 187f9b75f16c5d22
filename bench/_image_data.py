"""A big, realistic-ish image for the pull benchmark: many files of mixed sizes per layer,
half compressible text and half random bytes, so gzip and tar parsing both get real work."""

from __future__ import annotations

import os
import random

from tests.image import images
from tests.image.layers import Entry, directory, file


def build_big_image(total_mb: int, layers: int) -> images.Image:
    rng = random.Random(42)
    per_layer = total_mb * 1_000_000 // layers
    built: list[tuple[list[Entry], str]] = []
    for n in range(layers):
        entries: list[Entry] = [directory(f"layer{n}")]
        size = 0
        i = 0
        while size < per_layer:
            # Mostly small files (as in distro images), a few large ones.
            length = rng.choice([512, 4096, 20_000, 100_000, 2_000_000])
            text = i % 2 == 0
            data = (
                (b"criruntime benchmark line %d\n" % i) * (length // 28)
                if text
                else os.urandom(length)
            )
            d = f"layer{n}/d{i // 100}"
            if i % 100 == 0:
                entries.append(directory(d))
            entries.append(file(f"{d}/f{i}", data))
            size += len(data)
            i += 1
        built.append((entries, "gzip"))
    return images.build(built)
