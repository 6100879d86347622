"""Simple Copy-Paste (Ghiasi et al., CVPR 2021): instances of another training image pasted on
top of this one.

The other image is drawn from the training set with the same generator and goes through the
same geometric transforms (its own draws), so both are jittered independently, as in the
paper; its instances are pasted at the place they have in it (no shift), each kept with
probability 1/2 (at least one). Pixels the pasted instances cover are removed from the masks
of this image's instances (an instance left with none is dropped, the others get their masks'
boxes), and their labelled keypoints there become "labelled, not visible" (v = 1).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from maskrcnn.data.geometry import keep_instances, recompute_boxes
from maskrcnn.data.transforms import Target

Source = Callable[[torch.Generator | None], "tuple[Tensor, Target] | None"]


class CopyPaste:
    """With probability p, paste instances of `source(generator)` (an (image, target) pair of
    another training image, same channels; None when it could not be read) onto the sample."""

    def __init__(self, p: float, source: Source):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"copy-paste probability must be in [0, 1], got {p}")
        self.p, self.source = float(p), source

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, target
        drawn = self.source(generator)
        if drawn is None:
            return image, target
        return paste(image, target, *drawn, generator)

    def __repr__(self) -> str:
        return f"CopyPaste(p={self.p})"


def paste(image: Tensor, target: Target, source_image: Tensor, source: Target, generator=None):
    """image (C, H, W) and target with the chosen instances of (source_image, source) on top.

    The source is cut to the image's size (from the top-left corner) before its instances are
    chosen, so that an instance outside the image is never chosen.
    """
    height, width = image.shape[-2:]
    sh, sw = min(height, source_image.shape[-2]), min(width, source_image.shape[-1])
    masks = source["masks"][:, :sh, :sw]
    present = masks.flatten(1).any(dim=1).bool()
    chosen = (torch.rand(len(present), generator=generator) < 0.5) & present
    if present.any() and not chosen.any():
        candidates = present.nonzero().flatten()
        chosen[candidates[int(torch.randint(len(candidates), (), generator=generator))]] = True
    if not chosen.any():
        return image, target
    pasted = torch.zeros((int(chosen.sum()), height, width), dtype=torch.uint8)
    pasted[:, :sh, :sw] = masks[chosen]
    alpha = pasted.any(dim=0).bool()  # (H, W)

    image = image.clone()
    region = alpha[:sh, :sw]
    image[:, :sh, :sw] = torch.where(region, source_image[:, :sh, :sw].to(image.dtype), image[:, :sh, :sw])

    kept = dict(target)
    # an instance too small to keep a pixel at this size (its mask emptied by the resize) keeps
    # its annotated box, as it would without pasting; one that had pixels loses them only to
    # the pasted instances, and is dropped when none is left
    had_pixels = target["masks"].flatten(1).any(dim=1).bool()
    kept["masks"] = target["masks"] * (~alpha).to(target["masks"].dtype)
    if "keypoints" in kept:
        kept["keypoints"] = _hide_covered(kept["keypoints"], alpha)
    kept = recompute_boxes(kept)
    kept["boxes"] = torch.where(had_pixels[:, None], kept["boxes"], target["boxes"].to(kept["boxes"].dtype))
    kept = keep_instances(kept, kept["masks"].flatten(1).any(dim=1).bool() | ~had_pixels)

    added = {"masks": pasted, "labels": source["labels"][chosen]}
    if "keypoints" in kept:
        # points of the source's part that was cut off become unlabelled, as a crop makes them
        points = source["keypoints"][chosen].clone()
        outside = (points[..., 0] > sw) | (points[..., 1] > sh)
        points[outside] = 0.0
        added["keypoints"] = points
    added = recompute_boxes(added)
    for key, value in added.items():
        kept[key] = torch.cat((kept[key].to(value.dtype), value))
    return image, kept


def _hide_covered(keypoints: Tensor, covered: Tensor) -> Tensor:
    """keypoints (G, K, 3): visible ones (v = 2) on a covered pixel become v = 1."""
    height, width = covered.shape
    x = keypoints[..., 0].long().clamp(0, width - 1)
    y = keypoints[..., 1].long().clamp(0, height - 1)
    hidden = covered[y, x] & (keypoints[..., 2] == 2)
    keypoints = keypoints.clone()
    keypoints[..., 2][hidden] = 1.0
    return keypoints
