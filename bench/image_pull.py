"""Benchmark: PullImage (pull + unpack) of a multi-layer image of >= 200 MB from a local
docker-registry on 127.0.0.1, criruntime vs containerd 1.6, both over CRI and both started by
bench/harness.py in the same run. Each run pulls into an empty store (the image is removed and
the daemons' GC given its turn in between). Target: criruntime <= 1.0x containerd.

    .venv/bin/python -m bench image_pull
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from bench._image_data import build_big_image
from bench.harness import RuntimeUnderTest, Setup, Timing, containerd, criruntime, report
from criruntime.api.runtime.v1 import api_pb2 as api
from tests.image import images
from tests.image.registry_env import start_registry

IMAGE_MB = 240
LAYERS = 8
RUNS = 3


def _pulls(rt: RuntimeUnderTest, ref: str) -> Timing:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        image_id = rt.image.PullImage(
            api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=600
        ).image_ref
        samples.append(time.perf_counter() - started)
        rt.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=image_id)))
        time.sleep(1.0)  # containerd's GC runs asynchronously after a remove
    return Timing(samples)


def run() -> str:
    work = tempfile.mkdtemp(prefix="bench-reg-", dir="/tmp")
    registry = start_registry(work, os.path.join(work, "storage"), "bench")
    try:
        img = build_big_image(IMAGE_MB, LAYERS)
        images.push(registry.url, "bench/big", img, ["latest"])
        compressed = sum(len(b) for b in img.blobs.values()) / 1e6
        ref = f"{registry.host}/bench/big:latest"
        with (
            tempfile.TemporaryDirectory() as conf_dir,
            tempfile.TemporaryDirectory() as bin_dir,
        ):
            setup = Setup(cni_conf_dir=conf_dir, cni_bin_dirs=[bin_dir], registry=registry.host)
            with criruntime(setup) as ours:
                mine = _pulls(ours, ref)
            with containerd(setup) as theirs:
                other = _pulls(theirs, ref)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    title = (
        f"image pull + unpack, {LAYERS} gzip layers, {IMAGE_MB} MB unpacked, "
        f"{compressed:.0f} MB compressed, {RUNS} pulls each"
    )
    return report(title, [("PullImage", mine, other)], target=1.0)


if __name__ == "__main__":
    print(run())
