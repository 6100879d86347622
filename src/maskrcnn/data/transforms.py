"""Training and evaluation transforms on (image, target) pairs.

Every transform is called as `transform(image, target, generator)`:

- image: (3, H, W) float32 RGB in [0, 1];
- target: a dict that may hold `boxes` (G, 4) float xyxy pixels, `masks` (G, H, W) uint8 and
  `keypoints` (G, K, 3) float [x, y, v] in the boxes' pixels; other keys (labels, image_id,
  file_name) pass through untouched;
- generator: the torch.Generator that every random choice is drawn from, so that an
  augmentation is reproducible from the generator's seed alone (exact resume, any worker).
  None falls back to torch's global generator.

The geometry is done by torchvision.transforms.v2's functional ops on tv_tensors, so that
image, boxes and masks are resized and flipped by the same rules. Keypoints follow the boxes'
rules (`resize_keypoints`, `flip_keypoints`): scaled by the same per-axis factors, and mirrored
as the boxes' coordinates are, x -> W - x. Outputs are plain tensors.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

Target = dict
Transform = Callable[[Tensor, Target, "torch.Generator | None"], tuple[Tensor, Target]]


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(
        self, image: Tensor, target: Target, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target, generator)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def resized_size(size, short_side: int, max_size: int, rounding: str = "floor") -> Tensor:
    """The size with the short side at `short_side`, shrunk so the long side is <= max_size.

    size: (height, width) as ints or a (2,) tensor (an image's shape, also a traced one).
    Returns (2,) int64 (height, width): floor(side * scale) with scale = min(short_side / short,
    max_size / long), in float64. This is the one resize rule of the project: the training
    transform, the model's preprocessing and its exported graph all size images by it. The
    floor is torchvision's (F.interpolate's recomputed scale), so that the same weights
    see the same pixels in both; rounding="round" (model.input.resize_rounding) gives
    floor(side * scale + 0.5) instead, detectron2's rule, for the weights trained with it.
    """
    if rounding not in ("floor", "round"):
        raise ValueError(f"rounding must be 'floor' or 'round', got {rounding!r}")
    size = torch.as_tensor(size).to(torch.float64)
    # A (2,) constant, not two 0-dim ones: the ONNX exporter computes 0-dim constants in float32.
    limits = torch.tensor([float(short_side), float(max_size)], dtype=torch.float64)
    scale = (limits / torch.stack((size.min(), size.max()))).min()
    scaled = size * scale + 0.5 if rounding == "round" else size * scale
    return scaled.floor().clamp(min=1).to(torch.int64)


class ResizeShortestSide:
    """Resize so the short side is one of `min_sizes` (drawn at random) and the long side <= max_size.

    Several sizes give multi-scale training; one size is the deterministic evaluation resize.
    Images are resized bilinearly without antialiasing (as the reference detectors do), masks by
    nearest neighbour, and boxes and keypoints scale by the exact per-axis factors
    new_size / old_size.
    """

    def __init__(self, min_sizes: Sequence[int] | int, max_size: int, rounding: str = "floor"):
        """rounding: of the resized sides, as `resized_size` (model.input.resize_rounding)."""
        min_sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(min_sizes)
        if not min_sizes or any(int(s) != s or s <= 0 for s in min_sizes):
            raise ValueError(f"min_sizes must be positive integers, got {min_sizes}")
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.min_sizes = tuple(int(s) for s in min_sizes)
        self.max_size = int(max_size)
        self.rounding = rounding

    def choose_short_side(self, generator: torch.Generator | None) -> int:
        # A single size draws nothing, so evaluation never advances the generator.
        if len(self.min_sizes) == 1:
            return self.min_sizes[0]
        index = int(torch.randint(len(self.min_sizes), (), generator=generator))
        return self.min_sizes[index]

    def __call__(
        self, image: Tensor, target: Target, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Target]:
        height, width = image.shape[-2:]
        short = self.choose_short_side(generator)
        size = resized_size((height, width), short, self.max_size, rounding=self.rounding).tolist()
        if size == [height, width]:
            return image, target
        image = F.resize(tv_tensors.Image(image), size, InterpolationMode.BILINEAR, antialias=False)
        target = _apply_to_target(target, (height, width), lambda t: F.resize(t, size))
        if target is not None and "keypoints" in target:
            target["keypoints"] = resize_keypoints(target["keypoints"], (height, width), size)
        return _plain(image), target

    def __repr__(self) -> str:
        return f"ResizeShortestSide(min_sizes={self.min_sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror image, boxes, masks and keypoints left-right with probability p.

    keypoint_flip: (K,) the index each keypoint becomes in the mirrored image (its left/right
    partner, `CocoDataset.keypoint_flip`); needed to flip a target that has keypoints.
    """

    def __init__(self, p: float = 0.5, keypoint_flip: Sequence[int] | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.keypoint_flip = None if keypoint_flip is None else tuple(int(i) for i in keypoint_flip)
        flip = self.keypoint_flip
        if flip is not None and sorted(flip) != list(range(len(flip))):
            raise ValueError(f"keypoint_flip must reorder the keypoints 0..K-1, got {flip}")

    def __call__(
        self, image: Tensor, target: Target, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Target]:
        # Drawn even when p is 0 or 1, so that changing p does not shift the draws of later transforms.
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, target
        height, width = image.shape[-2:]
        image = F.horizontal_flip(tv_tensors.Image(image))
        target = _apply_to_target(target, (height, width), F.horizontal_flip)
        if target is not None and "keypoints" in target:
            if self.keypoint_flip is None:
                # Mirroring without swapping would teach the model a left eye where the right one is.
                raise ValueError(
                    "the target has keypoints: RandomHorizontalFlip needs keypoint_flip, the "
                    "left/right partner of each keypoint (CocoDataset.keypoint_flip)"
                )
            target["keypoints"] = flip_keypoints(target["keypoints"], width, self.keypoint_flip)
        return _plain(image), target

    def __repr__(self) -> str:
        if self.keypoint_flip is None:
            return f"RandomHorizontalFlip(p={self.p})"
        return f"RandomHorizontalFlip(p={self.p}, keypoint_flip={self.keypoint_flip})"


def resize_keypoints(keypoints: Tensor, old_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """keypoints (G, K, 3) [x, y, v] of an image of old_size (height, width) -> those of the image
    resized to new_size: x and y times the per-axis factors new / old, as boxes are; v unchanged."""
    scale = torch.tensor([new_size[1] / old_size[1], new_size[0] / old_size[0], 1.0], dtype=keypoints.dtype)
    return keypoints * scale.to(keypoints.device)


def flip_keypoints(keypoints: Tensor, width: int, flip: Sequence[int]) -> Tensor:
    """keypoints (G, K, 3) [x, y, v] of an image `width` pixels wide -> those of its mirror image:
    x -> width - x (the boxes' rule), and keypoint k moved to place flip[k] (left <-> right).

    Points that are not labelled (v = 0) keep x = y = 0.
    """
    if keypoints.shape[-2] != len(flip):
        raise ValueError(f"keypoint_flip has {len(flip)} entries for {keypoints.shape[-2]} keypoints")
    mirrored = keypoints.clone()
    mirrored[..., 0] = torch.where(keypoints[..., 2] > 0, width - keypoints[..., 0], keypoints[..., 0])
    flipped = torch.empty_like(mirrored)
    flipped[:, torch.as_tensor(flip, dtype=torch.int64, device=keypoints.device)] = mirrored
    return flipped


def _apply_to_target(target: Target, canvas_size: tuple[int, int], op) -> Target:
    """Run one v2 functional op on the target's boxes and masks (as tv_tensors); copy the rest."""
    if target is None:
        return None
    target = dict(target)
    if "boxes" in target:
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=canvas_size)
        target["boxes"] = _plain(op(boxes))
    if "masks" in target:
        target["masks"] = _plain(op(tv_tensors.Mask(target["masks"])))
    return target


def _plain(tensor: Tensor) -> Tensor:
    return tensor.as_subclass(Tensor)
