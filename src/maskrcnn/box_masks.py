"""Instance masks of a large image, each kept as the crop of its own window.

A 12,000 x 12,000 image with 200 detections would need 29 GB as (N, H, W) bool masks; each
object covers a small part of it. `BoxMasks` keeps, per instance, a bool crop and where it sits,
and turns into what the rest of the package reads (COCO RLE, polygons, a dense mask) without
ever holding more than one full-size mask. Tiled prediction (modeling/tiling.py) returns it.
"""

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from maskrcnn.polygons import mask_to_polygons


class BoxMasks:
    """N masks of one (H, W) image: crops[i] (h_i, w_i) bool placed at offsets[i] = (y, x).

    len(masks) is N; masks[i] is mask i as a dense (H, W) bool tensor; `shape` is (N, H, W)
    as for a tensor of masks. Crops are numpy arrays; a crop may be empty (0 x 0).
    """

    def __init__(self, crops: Sequence[np.ndarray], offsets, image_size: tuple[int, int]):
        self.crops = [np.ascontiguousarray(c, dtype=bool) for c in crops]
        self.offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if len(self.offsets) != len(self.crops):
            raise ValueError(f"BoxMasks: {len(self.crops)} crops but {len(self.offsets)} offsets")
        height, width = self.image_size
        for crop, (y, x) in zip(self.crops, self.offsets):
            if crop.ndim != 2 or y < 0 or x < 0 or y + crop.shape[0] > height or x + crop.shape[1] > width:
                raise ValueError(
                    f"BoxMasks: a crop of shape {crop.shape} at (y={y}, x={x}) does not fit the image "
                    f"{height}x{width}"
                )

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.crops), *self.image_size)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Mask `index` as a dense (H, W) bool tensor."""
        dense = torch.zeros(self.image_size, dtype=torch.bool)
        crop, (y, x) = self.crops[index], self.offsets[index]
        dense[y : y + crop.shape[0], x : x + crop.shape[1]] = torch.from_numpy(crop)
        return dense

    def select(self, indices) -> "BoxMasks":
        """The masks at `indices` (a sequence of ints or a bool/int array), in that order."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        return BoxMasks([self.crops[i] for i in indices], self.offsets[indices], self.image_size)

    def cpu(self) -> "BoxMasks":
        return self  # already host memory: lets callers treat it as they treat tensors

    def dense(self) -> torch.Tensor:
        """(N, H, W) bool: every mask at full size (for images small enough to afford it)."""
        if not self.crops:
            return torch.zeros((0, *self.image_size), dtype=torch.bool)
        return torch.stack([self[i] for i in range(len(self))])

    def windows(self) -> list[tuple[slice, slice]]:
        """Each crop's rows and columns in the image."""
        return [
            (slice(y, y + crop.shape[0]), slice(x, x + crop.shape[1]))
            for crop, (y, x) in zip(self.crops, self.offsets)
        ]

    def areas(self) -> np.ndarray:
        """(N,) int64 pixel counts."""
        return np.array([int(crop.sum()) for crop in self.crops], dtype=np.int64)

    def to_rles(self) -> list[dict]:
        """N compressed COCO RLEs {"size": [H, W], "counts": str} of the full image, built from
        each crop's columns alone (a full-size mask is never made)."""
        height, width = self.image_size
        rles = []
        for crop, (y, x) in zip(self.crops, self.offsets):
            counts = _column_major_runs(crop, y, x, height, width)
            rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
            rle["counts"] = rle["counts"].decode("ascii")
            rles.append(rle)
        return rles

    def polygons(self) -> list[list[list[float]]]:
        """Per mask its polygons ([x1, y1, ...] lists in image pixels) as
        polygons.mask_to_polygons draws them."""
        shifted = []
        for crop, (y, x) in zip(self.crops, self.offsets):
            shift = np.array([float(x), float(y)])
            shifted.append(
                [(np.reshape(p, (-1, 2)) + shift).ravel().tolist() for p in mask_to_polygons(crop)]
            )
        return shifted


def _column_major_runs(crop: np.ndarray, y: int, x: int, height: int, width: int) -> list[int]:
    """COCO's uncompressed RLE counts (alternating runs of 0s and 1s, 0s first, column by
    column) of an (height, width) mask that is `crop` at (y, x) and 0 elsewhere."""
    crop_height, crop_width = crop.shape
    if crop_width == 0 or crop_height == 0 or not crop.any():
        return [height * width]
    # The crop's columns padded to the image's height: all the columns that hold ones.
    strip = np.zeros((crop_width, height), dtype=bool)
    strip[:, y : y + crop_height] = crop.T
    flat = strip.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)
    runs[0] += x * height  # the empty columns left of the crop
    after = (width - x - crop_width) * height
    if len(runs) % 2 == 1:  # ends with zeros
        runs[-1] += after
    elif after:
        runs.append(after)
    return runs
