"""Geometric augmentations for data without a preferred orientation, and large-scale jitter.

Called as the transforms of `data.transforms` are: `transform(image, target, generator)` with
image (C, H, W) float in [0, 1] (any C), target `boxes` (G, 4) xyxy, `masks` (G, H, W) uint8,
optional `keypoints` (G, K, 3) [x, y, v], and every random choice drawn from `generator`.

- `RandomVerticalFlip`: top-bottom mirror. A mirror changes handedness, so keypoints swap
  left and right as under the horizontal flip.
- `RandomRotate90`: a quarter turn 0-3 times (a rotation keeps handedness: no swap).
- `ScaleJitterCrop`: large-scale jitter (Ghiasi et al., CVPR 2021): the image is resized so that
  it fits a square of `size` times a factor drawn from `scale_range`, then a random `size` x
  `size` window of it is kept. Smaller results are not padded here: the batch pads its images
  to the largest one, so no pixel is computed that the batch does not need.

Where instances are cut (a crop), boxes are recomputed from the masks and instances left
without a pixel are dropped, so that every box stays its mask's box. Masks are resized by the
source pixel under each output pixel's centre (nearest, exact), only inside the kept window.
"""

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from maskrcnn.data.transforms import Target, flip_keypoints, resize_keypoints


def _draw(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


class RandomVerticalFlip:
    """Mirror image, boxes, masks and keypoints top-bottom with probability p.

    keypoint_flip: (K,) the index each keypoint becomes in the mirrored image (needed for a
    target with keypoints: a mirror turns a left eye into a right one).
    """

    def __init__(self, p: float = 0.5, keypoint_flip: Sequence[int] | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.keypoint_flip = None if keypoint_flip is None else tuple(int(i) for i in keypoint_flip)

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        # drawn even when p is 0 or 1, so that p does not shift later transforms' draws
        if _draw(generator) >= self.p:
            return image, target
        height = image.shape[-2]
        image = image.flip(-2)
        target = dict(target)
        if "masks" in target:
            target["masks"] = target["masks"].flip(-2)
        if "boxes" in target:
            boxes = target["boxes"].clone()
            boxes[:, 1], boxes[:, 3] = height - target["boxes"][:, 3], height - target["boxes"][:, 1]
            target["boxes"] = boxes
        if "keypoints" in target:
            if self.keypoint_flip is None:
                raise ValueError("the target has keypoints: RandomVerticalFlip needs keypoint_flip")
            target["keypoints"] = _swap_y(target["keypoints"], height, self.keypoint_flip)
        return image, target

    def __repr__(self) -> str:
        return f"RandomVerticalFlip(p={self.p})"


def _swap_y(keypoints: Tensor, height: int, flip: Sequence[int]) -> Tensor:
    """keypoints (G, K, 3) mirrored top-bottom: y -> height - y, then left <-> right."""
    # x <-> y, the horizontal rule with height as the width, and back
    swapped = keypoints[..., [1, 0, 2]]
    return flip_keypoints(swapped, height, flip)[..., [1, 0, 2]]


class RandomRotate90:
    """Turn image, boxes, masks and keypoints by k quarter turns counter-clockwise, k drawn
    from 0-3 (each with probability 1/4) when a draw falls under p, else 0."""

    def __init__(self, p: float = 1.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        apply = _draw(generator) < self.p
        turns = int(torch.randint(4, (), generator=generator))
        if not apply or turns == 0:
            return image, target
        target = dict(target)
        for _ in range(turns):
            width = image.shape[-1]
            image = torch.rot90(image, 1, dims=(-2, -1))
            if "masks" in target:
                target["masks"] = torch.rot90(target["masks"], 1, dims=(-2, -1))
            if "boxes" in target:
                # a pixel centre (x, y) goes to (y, width - x)
                x1, y1, x2, y2 = target["boxes"].unbind(-1)
                target["boxes"] = torch.stack((y1, width - x2, y2, width - x1), dim=-1)
            if "keypoints" in target:
                points = target["keypoints"]
                x, y, v = points.unbind(-1)
                labelled = v > 0
                turned = torch.stack((y, width - x, v), dim=-1)
                target["keypoints"] = torch.where(labelled[..., None], turned, points)
        return image, target

    def __repr__(self) -> str:
        return f"RandomRotate90(p={self.p})"


class ScaleJitterCrop:
    """Large-scale jitter: fit the image into a square of side size * s, s drawn uniformly from
    scale_range, then keep a random window of at most size x size pixels of it.

    Masks resize by nearest neighbour; after the crop boxes are the masks' boxes (box-only
    targets are clipped), instances with no pixel (or no box area) left are dropped, and
    keypoints outside the window become unlabelled (v = 0).
    """

    def __init__(self, size: int, scale_range: Sequence[float] = (0.1, 2.0)):
        low, high = (float(s) for s in scale_range)
        if size <= 0 or not 0 < low <= high:
            raise ValueError(f"ScaleJitterCrop needs size > 0 and 0 < low <= high, got {size}, {scale_range}")
        self.size, self.scale_range = int(size), (low, high)

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        low, high = self.scale_range
        factor = low + (high - low) * _draw(generator)
        height, width = image.shape[-2:]
        scale = self.size * factor / max(height, width)
        new = [max(1, round(height * scale)), max(1, round(width * scale))]
        # the window's corner: drawn even when the image fits, so later draws do not shift
        top = int(_draw(generator) * (max(new[0] - self.size, 0) + 1))
        left = int(_draw(generator) * (max(new[1] - self.size, 0) + 1))
        window = (top, left, min(new[0], self.size), min(new[1], self.size))
        image = F.resize(tv_tensors.Image(image), new, InterpolationMode.BILINEAR, antialias=False)
        image = image.as_subclass(Tensor)[..., top : top + window[2], left : left + window[3]].contiguous()
        target = dict(target)
        if "masks" in target:
            # only the window's pixels of each mask, each the source pixel under its centre
            # (nearest, exact): a resized-then-cut mask would cost G x (2 x size)^2 bytes
            rows = _nearest_sources(top, window[2], height, new[0])
            cols = _nearest_sources(left, window[3], width, new[1])
            target["masks"] = target["masks"][:, rows[:, None], cols]
        if "boxes" in target:
            target["boxes"] = target["boxes"] * torch.tensor([new[1] / width, new[0] / height] * 2)
        if "keypoints" in target:
            target["keypoints"] = resize_keypoints(target["keypoints"], (height, width), new)
        return image, crop_target(target, window, masks_cut=True)

    def __repr__(self) -> str:
        return f"ScaleJitterCrop(size={self.size}, scale_range={self.scale_range})"


def _nearest_sources(first: int, count: int, old: int, new: int) -> Tensor:
    """Source indices of output pixels first..first+count-1 when `old` pixels become `new`:
    the source pixel under each output pixel's centre."""
    centres = (torch.arange(first, first + count, dtype=torch.float64) + 0.5) * (old / new)
    return centres.floor().long().clamp(0, old - 1)


def crop(image: Tensor, target: Target, window: tuple[int, int, int, int]) -> tuple[Tensor, Target]:
    """Keep the (top, left, height, width) window of an image and its target (crop_target)."""
    top, left, height, width = window
    return image[..., top : top + height, left : left + width], crop_target(target, window)


def crop_target(target: Target, window: tuple[int, int, int, int], masks_cut: bool = False) -> Target:
    """The target of the (top, left, height, width) window: instances left without a pixel (or
    box area) are dropped, and with masks the boxes are the masks' boxes (also for a window
    that is the whole image: a resize leaves them a fraction apart). masks_cut: the masks
    already cover the window alone."""
    top, left, height, width = window
    target = dict(target)
    shift = torch.tensor([left, top, left, top], dtype=torch.float32)
    if "boxes" in target:
        boxes = target["boxes"] - shift
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target["boxes"] = boxes
    if "keypoints" in target:
        points = target["keypoints"].clone()
        points[..., 0] -= left
        points[..., 1] -= top
        x, y = points[..., 0], points[..., 1]
        outside = (x < 0) | (x > width) | (y < 0) | (y > height)
        points[outside] = 0.0
        target["keypoints"] = points
    if "masks" in target:
        if not masks_cut:
            target["masks"] = target["masks"][:, top : top + height, left : left + width]
        target = recompute_boxes(target)
    return keep_instances(target, _nonempty(target))


def recompute_boxes(target: Target) -> Target:
    """Boxes from the masks (xyxy, a pixel's box is [x, x + 1]); an empty mask gets (0,0,0,0)."""
    masks = target["masks"].bool()
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (G, H), (G, W)
    height, width = rows.shape[-1], cols.shape[-1]
    # the first and last True of each row of `rows` / `cols` (argmax finds the first one)
    y1 = rows.to(torch.uint8).argmax(dim=-1)
    y2 = height - rows.flip(-1).to(torch.uint8).argmax(dim=-1)
    x1 = cols.to(torch.uint8).argmax(dim=-1)
    x2 = width - cols.flip(-1).to(torch.uint8).argmax(dim=-1)
    boxes = torch.stack((x1, y1, x2, y2), dim=-1).to(torch.float32)
    boxes[~rows.any(dim=-1)] = 0.0
    target = dict(target)
    target["boxes"] = boxes
    return target


def _nonempty(target: Target) -> Tensor:
    """(G,) bool: instances with a pixel (with masks) or a box of positive area (without)."""
    if "masks" in target:
        return target["masks"].flatten(1).any(dim=1).bool()
    boxes = target["boxes"]
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def keep_instances(target: Target, keep: Tensor) -> Target:
    """The target with only the instances where keep (G,) is True."""
    if bool(keep.all()):
        return target
    target = dict(target)
    for key in ("boxes", "labels", "masks", "keypoints"):
        if key in target:
            target[key] = target[key][keep]
    return target
