"""The data a run trains and is scored on: the training split with its transforms, sampler and
loader, and the split AP is scored on (the validation split, or `maskrcnn eval`'s)."""

from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from maskrcnn.config import DataConfig, InputConfig, TrainConfig
from maskrcnn.data.augment import describe, resolve_preset, training_transform
from maskrcnn.data.coco import CocoDataset, collate
from maskrcnn.data.image_cache import fill_image_cache, memory_limit_bytes
from maskrcnn.data.repeat_factors import repeat_factors
from maskrcnn.data.samplers import TrainingBatchSampler
from maskrcnn.engine import distributed
from maskrcnn.engine.stop import ignore_stop_signals


def build_training_data(config: TrainConfig, context: distributed.Context, start_iter: int):
    """(the training CocoDataset, its DataLoader of this process's batches from `start_iter` on)."""
    data = config.data
    dataset = CocoDataset(
        data.train_json,
        data.train_images,
        drop_images_without_annotations=data.drop_images_without_annotations,
        skip_bad_images=data.skip_bad_images,
        input_config=config.model.input,
        max_image_pixels=data.max_image_pixels,
        keypoints=config.model.keypoints,
        masks=config.model.masks,
    )
    _check_instances(dataset, config, context)
    # The flip swaps left and right keypoints by their names, which only the file knows.
    keypoint_flip = dataset.keypoint_flip if dataset.has_keypoints else None
    preset, why = resolve_preset(data.augment, len(dataset), config.model.masks)
    data = replace(data, augment=preset)
    dataset.transform = training_transform(data, config.model.input, dataset, keypoint_flip)
    if context.is_main:
        tqdm.write(describe(data, config.model.input) + (f" ({why})" if why else ""))
    if data.cache_images:  # before the workers start: they share the decoded images
        message = fill_image_cache(dataset, memory_limit_bytes(data.cache_images_max_mb))
        if context.is_main:
            tqdm.write(message)
    sampler = TrainingBatchSampler(
        dataset.aspect_ratios,
        data.images_per_batch,
        config.seed,
        context.rank,
        context.world_size,
        data.group_by_aspect_ratio,
        start_iter,
        _repeat_factors(dataset, data.repeat_factor_threshold, context),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=data.num_workers,
        collate_fn=collate,
        persistent_workers=data.num_workers > 0,
        worker_init_fn=ignore_stop_signals,
    )
    return dataset, loader


def _repeat_factors(dataset: CocoDataset, threshold: float, context) -> list[float] | None:
    """Each image's repeat factor under data.repeat_factor_threshold (None when it is 0), said
    in one line."""
    if threshold <= 0:
        return None
    labels = [[instance.label for instance in record.instances] for record in dataset.records]
    factors = repeat_factors(labels, threshold)
    if context.is_main:
        repeated = sum(f > 1 for f in factors)
        tqdm.write(
            f"repeat-factor sampling (threshold {threshold:g}): {repeated} of {len(factors)} images "
            f"repeated, up to {max(factors):.2f}x; an epoch is {sum(factors):.0f} images, not {len(factors)}"
        )
    return factors


def _check_instances(dataset: CocoDataset, config: TrainConfig, context) -> None:
    """Refuse a training split with nothing to learn (every annotation dropped: say how many and
    why); say when a box-only model trains on annotations kept by their boxes."""
    instances = sum(len(record.instances) for record in dataset.records)
    crowd = sum(len(record.crowd) for record in dataset.records)
    # COCO's ignore regions; some tools (CVAT's mask export) mark every mask iscrowd=1
    regions = f"{crowd} crowd region{'s' if crowd > 1 else ''}"
    crowd_note = f"{regions} (iscrowd=1) left out: they are not training targets"
    if instances == 0:
        why = dataset.drop_summary or (crowd_note if crowd else "it has no annotation")
        need = "masks: polygons or RLE" if config.model.masks else "boxes"
        hint = (
            " (or model.masks=false to train boxes only)"
            if config.model.masks and "segmentation" in why
            else ""
        )
        raise ValueError(
            f"{config.data.train_json}: no usable instance to train on ({why}); the model needs {need}{hint}"
        )
    if crowd and context.is_main:
        tqdm.write(f"note: {config.data.train_json}: {crowd_note}, {instances} instances are")
    if not config.model.masks and context.is_main:
        tqdm.write(
            f"model.masks false: training boxes only, on {instances} instances of {config.data.train_json}"
        )


def scoring_split(
    annotations: str,
    images: str,
    data: DataConfig,
    input_config: InputConfig | None = None,
    keypoints: bool = False,
    masks: bool = True,
) -> CocoDataset:
    """A split AP is scored on, its annotations cleaned as training cleans them (with its
    keypoints; kept by their boxes for a model without masks), its images normalized as the
    model's `input_config` says: the validation split of a run and `maskrcnn eval`'s alike.
    Raises ValueError for a split without an image: its AP would be a meaningless 0."""
    dataset = CocoDataset(
        annotations,
        images,
        skip_bad_images=data.skip_bad_images,
        input_config=input_config,
        max_image_pixels=data.max_image_pixels,
        keypoints=keypoints,
        masks=masks,
    )
    if len(dataset) == 0:
        raise ValueError(f"{annotations}: no image to score (its 'images' list is empty)")
    return dataset


def validation_data(config: TrainConfig) -> CocoDataset | None:
    """The validation split (None without data.val_json), cleaned as the training split is.

    Raises ValueError naming the file or folder if it is missing or broken.
    """
    data = config.data
    if not data.val_json:
        return None
    if data.val_images and not Path(data.val_images).is_dir():
        raise ValueError(f"{data.val_images}: validation image folder not found (data.val_images)")
    model = config.model
    return scoring_split(data.val_json, data.val_images, data, model.input, model.keypoints, model.masks)
