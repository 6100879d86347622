"""Decoded training images kept in memory, so that each file is decoded once per run.

Decoding a PNG or JPEG, and the RLE masks of its annotations, costs more than the resize and
flip that follow it, and on a small machine the DataLoader worker that does it competes with
the training step for the same cores, epoch after epoch. The cache is filled in the main
process before the workers start, as tensors in shared memory: every worker reads the same
copy (under fork, spawn or forkserver alike) instead of holding one of its own.

Only what the file holds is kept (its pixels in their own type, the masks as uint8): the
intensity normalization, which is cheap and follows the model's input settings, still runs
on every read, so a cached and an uncached dataset give the same samples to the bit.
"""

import os
import time

import numpy as np
import torch

from maskrcnn.data.images import load_image


def memory_limit_bytes(limit_mb: int) -> int:
    """limit_mb, or for 0 a quarter of this machine's memory shared by the processes of one
    node (torchrun's LOCAL_WORLD_SIZE): every training process keeps its own cache."""
    if limit_mb > 0:
        return limit_mb * 2**20
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: a modest default
        memory = 8 * 2**30
    return memory // 4 // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def estimated_bytes(dataset, bytes_per_pixel: int) -> int:
    """The cache's size from the annotation file alone: each image's pixels, and one byte per
    pixel of each of its instance masks."""
    return sum(r.height * r.width * (bytes_per_pixel + len(r.instances)) for r in dataset.records)


def fill_image_cache(dataset, limit_bytes: int) -> str:
    """Decode every image of `dataset` (a CocoDataset) into its cache, unless they would take
    more than `limit_bytes`; returns the line that says what was done.

    An image that cannot be read raises ValueError naming it (before training starts), or
    with skip_bad_images is left out of the cache, to be skipped with its warning when read.
    """
    if not dataset.records:
        return "data.cache_images: no training images to cache"
    started = time.perf_counter()
    decoded = (d for d in ((i, _decode(dataset, i)) for i in range(len(dataset))) if d[1] is not None)
    first = next(decoded, None)  # the first readable image gives the bytes per pixel
    if first is None:
        return "data.cache_images: no readable training image to cache"
    pixels, record = first[1][0], dataset.records[first[0]]
    per_pixel = pixels.element_size() * pixels.numel() // (record.height * record.width)
    needed = estimated_bytes(dataset, per_pixel)
    if needed > limit_bytes:
        return (
            f"data.cache_images: the {len(dataset)} training images need about {_gb(needed)} decoded, more "
            f"than the {_gb(limit_bytes)} allowed (data.cache_images_max_mb): read from disk at each use"
        )
    cache = dict([first, *decoded])
    dataset.image_cache = cache
    size = sum(p.numel() * p.element_size() + t["masks"].numel() for p, t in cache.values())
    return (
        f"data.cache_images: {len(cache)} training images decoded into memory ({_gb(size)}) "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _decode(dataset, index: int):
    """(pixels, target) of one image, in shared memory; None for a bad image under skip_bad_images."""
    record = dataset.records[index]
    path = dataset.image_dir / record.file_name
    try:
        pixels = load_image(path, dataset.max_image_pixels)
        dataset.check_size(pixels, record, path)
    except ValueError:
        if dataset.skip_bad_images:
            return None
        raise
    pixels = torch.from_numpy(np.ascontiguousarray(pixels)).share_memory_()
    target = dataset.target(index)
    for key, value in target.items():
        if torch.is_tensor(value):
            target[key] = value.share_memory_()
    return pixels, target


def _gb(size: int) -> str:
    return f"{size / 2**30:.2f} GB"
