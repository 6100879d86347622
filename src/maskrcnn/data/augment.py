"""The training transform a config asks for: the `data.augment` preset and the switches.

In the order applied, each drawing from the sample's generator (seeded by the image and the
draw, so a sample is the same in any worker and after an exact resume):

1. the resize: `paper` and `paper+copy_paste`, the short side drawn from
   data.min_sizes_train (long side at most data.max_size_train); `lsj` and `lsj+copy_paste`,
   large-scale jitter (ScaleJitterCrop);
2. the horizontal flip (data.flip_probability);
3. the vertical flip (data.vertical_flip) and a random quarter turn (data.rotate90), for data
   without a preferred orientation;
4. Simple Copy-Paste (`paper+copy_paste`, `lsj+copy_paste`): another training image,
   through steps 1-3 with its own draws, has instances pasted on top;
5. photometric jitter (data.photometric).

A switch that is off adds no transform and draws nothing, so the `paper` preset with every
switch off is the transform earlier versions trained with, draw for draw.
"""

import torch

from maskrcnn.config import DataConfig, InputConfig
from maskrcnn.data.copy_paste import CopyPaste
from maskrcnn.data.geometry import RandomRotate90, RandomVerticalFlip, ScaleJitterCrop
from maskrcnn.data.photometric import RandomPhotometric
from maskrcnn.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestSide

# "auto" pastes instances on training sets of at most this many images (measured on 50: see
# the README's "Small data"), and trains larger ones as the paper did.
SMALL_DATA_IMAGES = 200


def resolve_preset(preset: str, images: int, masks: bool = True) -> tuple[str, str]:
    """(the preset to train with, why) for data.augment `preset` and a training set of
    `images` images: "auto" chooses by the set's size (and never pastes without masks)."""
    if preset != "auto":
        return preset, ""
    if not masks:
        return "paper", "auto: a model without masks has nothing to paste"
    if images <= SMALL_DATA_IMAGES:
        return "paper+copy_paste", f"auto: {images} training images, at most {SMALL_DATA_IMAGES}"
    return "paper", f"auto: {images} training images, more than {SMALL_DATA_IMAGES}"


class OtherImage:
    """Copy-paste's source: a training image drawn with the generator, through `transform`."""

    def __init__(self, dataset, transform: Compose):
        self.dataset, self.transform = dataset, transform

    def __call__(self, generator: torch.Generator | None):
        index = int(torch.randint(len(self.dataset), (), generator=generator))
        sample = self.dataset.load(index)
        return None if sample is None else self.transform(*sample, generator)


def lsj_size(data: DataConfig, input_config: InputConfig) -> int:
    """The side of large-scale jitter's square: data.lsj_size, or the model's test-time
    maximum size (the square a test image fits in)."""
    return data.lsj_size or input_config.max_size


def training_transform(data: DataConfig, input_config: InputConfig, dataset, keypoint_flip=None) -> Compose:
    """The training transform of `dataset` (a CocoDataset: copy-paste draws its other images
    from it). keypoint_flip: the left/right partner of each keypoint, for targets with them."""
    if data.augment.startswith("paper"):
        resize = ResizeShortestSide(
            tuple(data.min_sizes_train), data.max_size_train, input_config.resize_rounding
        )
    else:
        resize = ScaleJitterCrop(lsj_size(data, input_config), data.lsj_scale_range)
    geometric = [resize, RandomHorizontalFlip(data.flip_probability, keypoint_flip)]
    if data.vertical_flip > 0:
        geometric.append(RandomVerticalFlip(data.vertical_flip, keypoint_flip))
    if data.rotate90:
        geometric.append(RandomRotate90())
    transforms = list(geometric)
    if data.augment.endswith("+copy_paste"):
        transforms.append(CopyPaste(1.0, OtherImage(dataset, Compose(geometric))))
    if data.photometric > 0:
        transforms.append(RandomPhotometric(data.photometric))
    return Compose(transforms)


def describe(data: DataConfig, input_config: InputConfig) -> str:
    """One line saying what training sees."""
    if data.augment.startswith("paper"):
        sizes = ", ".join(str(s) for s in data.min_sizes_train)
        parts = [f"augment {data.augment}: short side {sizes} (long side <= {data.max_size_train})"]
    else:
        low, high = data.lsj_scale_range
        square = lsj_size(data, input_config)
        parts = [f"augment {data.augment}: scale {low:g}-{high:g} of a {square} px square, cropped to it"]
    parts.append(f"horizontal flip {data.flip_probability:g}")
    if data.vertical_flip > 0:
        parts.append(f"vertical flip {data.vertical_flip:g}")
    if data.rotate90:
        parts.append("quarter turns")
    if data.photometric > 0:
        parts.append(f"photometric {data.photometric:g}")
    return ", ".join(parts)
