"""What a run is made of before its first step: the model the training data asks for, its
optimizer and loss scaler, the batches, the validation split, and a resumed run's state."""

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from maskrcnn.config import AnchorConfig, TrainConfig
from maskrcnn.data.coco import CocoDataset
from maskrcnn.engine import distributed
from maskrcnn.engine.optimizer import make_optimizer, use_fused_sgd
from maskrcnn.engine.rng import seed_everything, set_rng_state
from maskrcnn.engine.run_folder import restore_training_state
from maskrcnn.engine.stop import shut_down_workers
from maskrcnn.engine.training_data import build_training_data, validation_data
from maskrcnn.evaluation.categories import check_categories, split_categories
from maskrcnn.evaluation.keypoints import keypoint_head_for_dataset, resolve_oks_sigmas
from maskrcnn.interop.init_weights import load_initial_weights
from maskrcnn.modeling.anchor_fit import (
    COVERED_IOU,
    POOR_COVERAGE,
    anchor_strides,
    box_sizes,
    coverage,
    fit_anchor_sizes,
    small_object_note,
)
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.precision import autocast_dtype


class AnchorWarning(UserWarning):
    """The configured anchor sizes cover the training boxes poorly."""


class _LossesOnly(torch.nn.Module):
    """Wraps the model so that DDP synchronises the gradients of `losses`."""

    def __init__(self, model: MaskRCNN):
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.losses(images, targets)


@dataclass
class TrainingRun:
    """A run ready for its first step (or its next one, resumed)."""

    config: TrainConfig  # with the model config the training data gave (classes, keypoints)
    context: distributed.Context
    model: MaskRCNN  # in training mode, on the context's device
    trainable: torch.nn.Module  # model.losses, wrapped by DDP under torchrun
    parameters: list[torch.nn.Parameter]  # those the optimizer updates
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler  # float16 loss scaling; disabled otherwise
    batches: Iterator  # this process's (images, targets) batches, from start_iter on
    validation: CocoDataset | None
    checkpoint: dict | None  # the resumed run's last.pt
    start_iter: int
    started: float  # time.monotonic() when the run's share of a time budget began

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)


def prepare_run(
    config: TrainConfig, context, cleanup, checkpoint: dict | None, started: float
) -> TrainingRun:
    """Seed, read the data, build the model the data asks for and what trains it; restore a
    resumed run's weights, optimizer, loss scale and generators. `cleanup` ends the loader's
    workers however the run ends."""
    start_iter = checkpoint["iteration"] if checkpoint else 0
    if context.is_main:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    dataset, loader = build_training_data(config, context, start_iter)
    validation = validation_data(config)  # read now: a broken file fails before the first step
    if validation is not None:  # scored by category id: the ids must mean the training split's classes
        check_categories(config.data.train_json, split_categories(dataset), validation)
    config = replace(
        config, model=_model_config_of_the_data(config, dataset, validation, context, checkpoint)
    )
    model = build_model(config.model)
    if config.init_weights and checkpoint is None:
        load_initial_weights(model, config.init_weights)
    model.to(context.device).train()

    parameters = [p for p in model.parameters() if p.requires_grad]
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none.
    loss_scaling = (
        autocast_dtype(config.solver.precision, context.device, "solver.precision") == torch.float16
    )
    optimizer = make_optimizer(parameters, config.solver, loss_scaling)
    scaler = torch.amp.GradScaler(context.device.type, enabled=loss_scaling)
    # Creating the loader's iterator draws a seed from the global RNG: do it before the
    # RNG state of a resumed run is restored, exactly as an uninterrupted run did.
    batches = iter(loader)
    cleanup.callback(shut_down_workers, batches)  # however the run ends
    if checkpoint is not None:  # a checkpoint of another model is refused, saying what changed
        restore_training_state(model, optimizer, checkpoint, config)
        use_fused_sgd(optimizer, loss_scaling)
        if loss_scaling and "scaler" in checkpoint:  # the loss scale and its growth counter
            scaler.load_state_dict(checkpoint["scaler"])
        states = checkpoint["rng"]
        set_rng_state(states[context.rank] if context.rank < len(states) else states[0])
    trainable = _LossesOnly(model)
    if context.distributed:
        trainable = DistributedDataParallel(
            trainable, device_ids=[context.device] if context.device.type == "cuda" else None
        )
    return TrainingRun(
        config, context, model, trainable, parameters, optimizer, scaler, batches, validation,
        checkpoint, start_iter, started,
    )  # fmt: skip


def _anchors_of_the_data(config: TrainConfig, dataset: CocoDataset, context, checkpoint=None) -> AnchorConfig:
    """model.anchors with sizes "auto" fitted to the training boxes (one line says what was
    fitted and the share of boxes covered before and after; a resumed run keeps the sizes its
    checkpoint was trained with); fixed sizes that cover the boxes poorly get a warning naming
    what "auto" would cover."""
    anchors, model = config.model.anchors, config.model
    auto = anchors.sizes == "auto"
    if auto and checkpoint is not None:
        return replace(anchors, sizes=tuple(checkpoint["config"]["anchors"]["sizes"]))
    boxes = box_sizes(dataset.records, model.input.min_size, model.input.max_size)
    base = AnchorConfig().sizes if auto else tuple(anchors.sizes)
    strides = anchor_strides(model.backbone.kind, base)
    if not auto:
        covered = coverage(boxes, base, anchors.aspect_ratios, strides)
        if covered < POOR_COVERAGE and context.is_main:
            fitted, _, after = fit_anchor_sizes(boxes, base, anchors.aspect_ratios, strides)
            if after > covered + 0.05:
                warnings.warn(
                    f"model.anchors.sizes {_listed(base)} give {100 * covered:.1f} % of the "
                    f"training boxes an anchor at IoU >= {COVERED_IOU:g}; {_listed(fitted)} would "
                    f"give {100 * after:.1f} % (model.anchors.sizes=auto fits them)",
                    AnchorWarning,
                    stacklevel=2,
                )
        _say_small_objects(boxes, model.input.min_size, context)
        return anchors
    fitted, before, after = fit_anchor_sizes(boxes, base, anchors.aspect_ratios, strides)
    if context.is_main:
        tqdm.write(
            f"model.anchors.sizes auto: {_listed(fitted)} from {len(boxes)} training boxes at "
            f"model.input.min_size={model.input.min_size}; boxes with an anchor at IoU >= "
            f"{COVERED_IOU:g}: {100 * after:.1f} % ({100 * before:.1f} % with {_listed(base)})"
        )
    _say_small_objects(boxes, model.input.min_size, context)
    return replace(anchors, sizes=fitted)


def _listed(sizes) -> str:
    return ", ".join(str(s) for s in sizes)


def _say_small_objects(boxes, min_size: int, context) -> None:
    note = small_object_note(boxes, min_size)
    if note and context.is_main:
        tqdm.write(f"note: {note}")


def _model_config_of_the_data(
    config: TrainConfig, dataset: CocoDataset, validation, context, checkpoint=None
):
    """The model config with the classes (their number, names and ids) and the keypoints the
    training set has, each difference from the config said in one line."""
    if config.model.num_classes != dataset.num_classes and context.is_main:
        tqdm.write(
            f"model.num_classes: {dataset.num_classes} from {config.data.train_json} "
            f"({dataset.num_classes - 1} {'category' if dataset.num_classes == 2 else 'categories'} "
            f"and the background), not {config.model.num_classes}"
        )
    model_config = replace(
        config.model,
        num_classes=dataset.num_classes,
        class_names=tuple(dataset.class_names),
        category_ids=tuple(dataset.category_ids),
        anchors=_anchors_of_the_data(config, dataset, context, checkpoint),
    )
    if not config.model.keypoints:
        return model_config
    head = keypoint_head_for_dataset(config.model.keypoint_head, dataset, validation)
    if head.num_keypoints != config.model.keypoint_head.num_keypoints and context.is_main:
        tqdm.write(
            f"model.keypoint_head.num_keypoints: {head.num_keypoints} from {config.data.train_json} "
            f"({', '.join(head.names)}), not {config.model.keypoint_head.num_keypoints}"
        )
    if validation is not None:  # a run must not fail at its end for want of sigmas
        resolve_oks_sigmas(head.num_keypoints, configured=head.oks_sigmas)
    return replace(model_config, keypoint_head=head)
