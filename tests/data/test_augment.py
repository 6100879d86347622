"""Augmentations for small data: every one keeps boxes, masks and keypoints consistent, is the
same for the same seed whatever the worker count, and runs on 16-bit and 2-channel images."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from maskrcnn.config import DataConfig, InputConfig
from maskrcnn.data.augment import resolve_preset, training_transform
from maskrcnn.data.coco import CocoDataset, collate
from maskrcnn.data.copy_paste import paste
from maskrcnn.data.geometry import RandomRotate90, RandomVerticalFlip, ScaleJitterCrop, recompute_boxes
from maskrcnn.data.photometric import RandomPhotometric
from maskrcnn.data.samplers import TrainingBatchSampler
from maskrcnn.data.transforms import Compose, RandomHorizontalFlip

FLIP = (1, 0)  # keypoint 0 is "left", 1 is "right"


def random_sample(seed: int, channels: int = 3, height: int = 48, width: int = 64):
    """An image and G random ellipses (some overlapping, some cut by the border) with boxes that
    are their masks' boxes, labels, and two keypoints per instance on its mask."""
    generator = torch.Generator().manual_seed(seed)
    count = int(torch.randint(1, 7, (), generator=generator))
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    masks, points = [], []
    for _ in range(count):
        cy, cx = (torch.rand(2, generator=generator) * torch.tensor([height, width])).tolist()
        ry, rx = (3 + torch.rand(2, generator=generator) * 12).tolist()
        mask = ((rows + 0.5 - cy) / ry) ** 2 + ((cols + 0.5 - cx) / rx) ** 2 <= 1
        if not mask.any():
            mask[int(min(cy, height - 1)), int(min(cx, width - 1))] = True
        masks.append(mask.to(torch.uint8))
        ys, xs = mask.nonzero(as_tuple=True)
        first, last = int(xs.argmin()), int(xs.argmax())
        points.append([[xs[first] + 0.5, ys[first] + 0.5, 2.0], [xs[last] + 0.5, ys[last] + 0.5, 2.0]])
    target = {
        "masks": torch.stack(masks),
        "labels": torch.randint(1, 4, (count,), generator=generator),
        "keypoints": torch.tensor(points, dtype=torch.float32),
        "image_id": seed,
    }
    target = recompute_boxes(target)
    image = torch.rand((channels, height, width), generator=generator)
    return image, target


def assert_consistent(image: torch.Tensor, target: dict) -> None:
    """Masks have the image's size and a pixel each; every box is its mask's box; every
    visible keypoint is on its instance's mask (within two pixels: a mask resized by nearest
    neighbour loses or moves its edge pixels, a keypoint scales exactly)."""
    masks = target["masks"]
    count = len(target["labels"])
    assert masks.shape == (count, *image.shape[-2:])
    assert target["boxes"].shape == (count, 4)
    assert bool(masks.flatten(1).any(dim=1).all()), "an instance without a pixel was kept"
    assert torch.equal(target["boxes"], recompute_boxes(target)["boxes"])
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    if "keypoints" in target:
        grown = torch.nn.functional.max_pool2d(masks[:, None].float(), 5, 1, 2)[:, 0] > 0
        for instance, points in enumerate(target["keypoints"]):
            for x, y, v in points.tolist():
                if v > 0:  # labelled: inside the image
                    assert 0 <= x <= masks.shape[-1] and 0 <= y <= masks.shape[-2], (instance, x, y)
                if v == 2:
                    row, col = min(int(y), masks.shape[-2] - 1), min(int(x), masks.shape[-1] - 1)
                    assert grown[instance, row, col], (instance, x, y)


AUGMENTATIONS = {
    "vertical flip": lambda: RandomVerticalFlip(1.0, FLIP),
    "quarter turns": lambda: RandomRotate90(),
    "scale jitter and crop": lambda: ScaleJitterCrop(40, (0.1, 2.0)),
    "photometric": lambda: RandomPhotometric(0.5),
    "all together": lambda: Compose(
        [
            ScaleJitterCrop(40, (0.3, 2.0)),
            RandomHorizontalFlip(0.5, FLIP),
            RandomVerticalFlip(0.5, FLIP),
            RandomRotate90(),
            RandomPhotometric(0.3),
        ]
    ),
}


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_augmentation_keeps_boxes_masks_and_keypoints_consistent(name):
    transform = AUGMENTATIONS[name]()
    changed = 0
    for seed in range(40):
        image, target = random_sample(seed)
        out_image, out_target = transform(image, target, torch.Generator().manual_seed(seed))
        assert_consistent(out_image, out_target)
        changed += not torch.equal(out_image, image)
    assert changed >= 20  # the property is checked on images the augmentation changed


def test_copy_paste_occludes_what_it_covers_and_keeps_the_rest_consistent():
    pasted_instances = 0
    for seed in range(30):
        image, target = random_sample(seed)
        source_image, source = random_sample(1000 + seed, height=40, width=70)  # another size
        out_image, out = paste(image, target, source_image, source, torch.Generator().manual_seed(seed))
        assert_consistent(out_image, out)
        # random float images: a pixel changed exactly where the source was pasted
        covered = (out_image != image).any(dim=0)
        rows, cols = covered.nonzero(as_tuple=True)
        assert torch.equal(out_image[:, rows, cols], source_image[:, rows, cols])
        masks = out["masks"].bool()
        inside = (masks & covered).flatten(1).sum(1)
        size = masks.flatten(1).sum(1)
        pasted = inside == size
        # an instance is pasted (all on the pasted pixels) or earlier (none on them), and the
        # pasted ones make up the pasted pixels exactly
        assert torch.all(pasted | (inside == 0))
        assert torch.equal(masks[pasted].any(dim=0), covered)
        # the earlier instances left are those with a pixel outside the pasted ones, in order
        survivors = target["masks"].bool() & ~covered
        assert int((~pasted).sum()) == int(survivors.flatten(1).any(1).sum())
        assert torch.equal(out["labels"][~pasted], target["labels"][survivors.flatten(1).any(1)])
        # a visible keypoint of an earlier instance is never shown visible on a pasted pixel
        for points in out["keypoints"][~pasted]:
            for x, y, v in points.tolist():
                if v == 2:
                    assert not covered[min(int(y), 47), min(int(x), 63)]
        pasted_instances += int(pasted.sum())
    assert pasted_instances >= 30


def test_an_instance_without_a_pixel_at_this_size_keeps_its_box_through_pasting():
    # a tiny object whose mask the resize emptied is kept by its annotated box, as without pasting
    image, target = random_sample(3)
    target["masks"] = torch.cat((target["masks"], torch.zeros_like(target["masks"][:1])))
    target["boxes"] = torch.cat((target["boxes"], torch.tensor([[60.0, 2.0, 62.0, 3.0]])))
    target["labels"] = torch.cat((target["labels"], torch.tensor([2])))
    target["keypoints"] = torch.cat((target["keypoints"], torch.zeros_like(target["keypoints"][:1])))
    source_image, source = random_sample(7)
    _, out = paste(image, target, source_image, source, torch.Generator().manual_seed(0))
    empty = ~out["masks"].flatten(1).any(dim=1).bool()
    assert int(empty.sum()) == 1
    assert out["boxes"][empty].tolist() == [[60.0, 2.0, 62.0, 3.0]] and out["labels"][empty].tolist() == [2]


def test_a_vertical_flip_is_a_horizontal_flip_after_half_a_turn():
    # the keypoints' left/right swap included: a half turn keeps them, a mirror swaps them
    for seed in range(10):
        image, target = random_sample(seed)
        flipped = RandomVerticalFlip(1.0, FLIP)(image, target, torch.Generator().manual_seed(0))
        turned = _half_turn(image, target)
        mirrored = RandomHorizontalFlip(1.0, FLIP)(*turned, torch.Generator().manual_seed(0))
        assert torch.equal(flipped[0], mirrored[0])
        for key in ("boxes", "masks", "keypoints"):
            assert torch.allclose(flipped[1][key].float(), mirrored[1][key].float()), key


def _half_turn(image, target):
    turn = RandomRotate90()
    while True:  # find a generator state that draws two quarter turns
        for seed in range(100):
            generator = torch.Generator().manual_seed(seed)
            torch.rand((), generator=generator)
            if int(torch.randint(4, (), generator=generator)) == 2:
                return turn(image, target, torch.Generator().manual_seed(seed))


def test_a_quarter_turn_moves_a_keypoint_with_its_pixel():
    image = torch.zeros((1, 4, 6))
    image[0, 1, 4] = 1.0  # the pixel at row 1, column 4
    mask = image[0].to(torch.uint8)[None]
    target = recompute_boxes({"masks": mask, "labels": torch.tensor([1])})
    target["keypoints"] = torch.tensor([[[4.5, 1.5, 2.0]]])
    for seed in range(40):
        out_image, out = RandomRotate90()(image, target, torch.Generator().manual_seed(seed))
        row, col = (out_image[0] == 1).nonzero()[0].tolist()
        x, y, _ = out["keypoints"][0, 0].tolist()
        assert (x, y) == (col + 0.5, row + 0.5)
        assert out["boxes"][0].tolist() == [col, row, col + 1, row + 1]


def test_scale_jitter_crop_keeps_at_most_the_square_and_draws_scales_over_the_range():
    image, target = random_sample(0, height=60, width=80)
    transform = ScaleJitterCrop(50, (0.1, 2.0))
    sides = []
    for seed in range(60):
        out_image, _ = transform(image, target, torch.Generator().manual_seed(seed))
        assert max(out_image.shape[-2:]) <= 50
        sides.append(max(out_image.shape[-2:]))
    # small scales give small images, large ones the full square
    assert min(sides) <= 10 and sum(side == 50 for side in sides) >= 20


def test_photometric_jitter_changes_every_channel_alike_on_a_16_bit_range():
    image = torch.linspace(0, 1, 2 * 8 * 8).reshape(2, 8, 8)
    image[1] = image[0]  # two identical channels stay identical
    out, _ = RandomPhotometric(0.4)(image, {}, torch.Generator().manual_seed(3))
    assert torch.equal(out[0], out[1]) and not torch.equal(out, image)
    unchanged, _ = RandomPhotometric(0.0)(image, {}, torch.Generator().manual_seed(3))
    assert torch.equal(unchanged, image)


def write_two_channel_16_bit_set(root: Path, nuclei_image, count: int = 5) -> Path:
    """`count` 2-channel uint16 TIFF tiles of nuclei (a nuclear and a second stain) and their
    COCO file (one category); returns the JSON's path."""
    root.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        values, nuclei, _ = nuclei_image(48, 64, seed=index, count=4)
        # channels first, as microscopes write them
        stack = np.stack([values * 200, 65535 - values * 100]).astype(np.uint16)
        tifffile.imwrite(root / f"t{index}.tif", stack, photometric="minisblack")
        images.append({"id": index + 1, "file_name": f"t{index}.tif", "height": 48, "width": 64})
        for cy, cx, r in nuclei:
            angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
            polygon = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel()
            annotations.append(
                {"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1 + len(annotations) % 2,
                 "segmentation": [polygon.round(2).tolist()], "bbox": [cx - r, cy - r, 2 * r, 2 * r],
                 "area": math.pi * r * r, "iscrowd": 0}
            )  # fmt: skip
    path = root / "cells.json"
    categories = [{"id": 1, "name": "nucleus"}, {"id": 2, "name": "dividing"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


@pytest.fixture
def two_channel_set(tmp_path, nuclei_image):
    path = write_two_channel_16_bit_set(tmp_path / "cells", nuclei_image)
    input_config = InputConfig(channels=2, pixel_mean=(0.5, 0.5), pixel_std=(0.25, 0.25))
    dataset = CocoDataset(path, path.parent, input_config=input_config)
    data = replace(
        DataConfig(), augment="lsj+copy_paste", lsj_size=48, vertical_flip=0.5, rotate90=True, photometric=0.3
    )
    dataset.transform = training_transform(data, input_config, dataset)
    return dataset


def test_every_augmentation_runs_on_16_bit_two_channel_images(two_channel_set):
    for index in range(len(two_channel_set)):
        for seed in range(8):
            image, target = two_channel_set[(index, seed)]
            assert image.shape[0] == 2 and image.dtype == torch.float32
            assert_consistent(image, {k: v for k, v in target.items() if k != "keypoints"})


def batches(dataset, workers: int, seed: int, count: int = 4):
    sampler = TrainingBatchSampler(dataset.aspect_ratios, 2, seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate
    )
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            return out


def test_the_same_seed_gives_the_same_samples_whatever_the_worker_count(two_channel_set):
    alone = batches(two_channel_set, 0, seed=5)
    with_workers = batches(two_channel_set, 2, seed=5)
    other_seed = batches(two_channel_set, 0, seed=6)
    for (images_a, targets_a), (images_b, targets_b) in zip(alone, with_workers):
        for a, b in zip(images_a, images_b):
            assert torch.equal(a, b)
        for a, b in zip(targets_a, targets_b):
            assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["boxes"], b["boxes"])
    assert any(
        not torch.equal(a, b)
        for (ia, _), (ib, _) in zip(alone, other_seed)
        for a, b in zip(ia, ib)
        if a.shape == b.shape
    ) or any(a.shape != b.shape for (ia, _), (ib, _) in zip(alone, other_seed) for a, b in zip(ia, ib))


@pytest.mark.parametrize("preset", ["paper", "paper+copy_paste", "lsj", "lsj+copy_paste"])
def test_each_preset_builds_its_resize_and_pastes_when_it_says_so(preset):
    transform = training_transform(replace(DataConfig(), augment=preset), InputConfig(), dataset=None)
    names = [type(t).__name__ for t in transform.transforms]
    assert names[0] == ("ResizeShortestSide" if preset.startswith("paper") else "ScaleJitterCrop")
    assert ("CopyPaste" in names) == preset.endswith("copy_paste")


def test_auto_pastes_on_small_training_sets_and_says_why():
    assert resolve_preset("auto", 50) == ("paper+copy_paste", "auto: 50 training images, at most 200")
    assert resolve_preset("auto", 201)[0] == "paper"
    assert resolve_preset("lsj", 50) == ("lsj", "")
    assert resolve_preset("auto", 50, masks=False)[0] == "paper"


def test_pasting_without_masks_is_refused_by_name():
    from maskrcnn.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data.augment='lsj\+copy_paste' \(from the command line\)"):
        load_config(None, ["model.masks=false", "data.augment=lsj+copy_paste"])
