"""The validation loss: the training objective on the validation images, without a gradient
and without augmentation, as a run's evaluations report it beside AP."""

import contextlib
from collections.abc import Iterable

import torch

from maskrcnn.config import TrainConfig
from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.transforms import ResizeShortestSide
from maskrcnn.engine import distributed
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.precision import autocast_context

# The proposals' and the heads' sampling draw at random: one fixed seed makes every
# evaluation's loss use the same draws, so that its changes are the model's.
SAMPLING_SEED = 0
PREFIX = "val_"


def validation_loss(
    model: MaskRCNN,
    dataset: CocoDataset,
    config: TrainConfig,
    context: distributed.Context,
) -> dict[str, float]:
    """Each loss term averaged over the validation images, and their sum, named "val_loss"
    and "val_" + the term ("val_loss_mask", ...).

    Every process scores its share (every world_size-th image, `summed_losses`); the means
    are over all images. Images the dataset skips (unreadable, with data.skip_bad_images) are
    left out.
    """
    samples = (dataset[index] for index in range(context.rank, len(dataset), context.world_size))
    sums, count = summed_losses(model, samples, config, context.device)
    return _means(sums, count, context)


@torch.no_grad()
def summed_losses(
    model: MaskRCNN, samples: Iterable, config: TrainConfig, device: torch.device
) -> tuple[dict[str, torch.Tensor], int]:
    """({term: its sum over the samples}, how many samples) for (image, target) samples as a
    CocoDataset gives them (None: skipped).

    The model runs in training mode (the loss is only defined there) with its BatchNorm layers
    held in inference mode, so that scoring does not move their statistics; each image is
    resized to the test size (`model.input.min_size`/`max_size`), one image per forward pass.
    The global random generators are left as they were: the training's draws do not change.
    """
    resize = ResizeShortestSide(
        config.model.input.min_size, config.model.input.max_size, config.model.input.resize_rounding
    )
    sums: dict[str, torch.Tensor] = {}
    count = 0
    with _loss_mode(model), _fixed_draws(device):
        for sample in samples:
            if sample is None:
                continue
            image, target = resize(*sample)
            target = {k: v.to(device) if torch.is_tensor(v) else v for k, v in target.items()}
            with autocast_context(config.solver.precision, device, "solver.precision"):
                losses = model.losses([image.to(device)], [target])
            for name, value in losses.items():
                sums[name] = sums.get(name, 0) + value.detach().to(torch.float64)
            count += 1
    return sums, count


def _means(sums: dict[str, torch.Tensor], count: int, context) -> dict[str, float]:
    """The terms' means over every process's images (a process without images adds zeros)."""
    names = sorted(sums) if sums else []
    if context.distributed:  # every rank must name the same terms: rank 0's are the model's
        names = distributed.all_gather(names, context)[0]
    values = torch.tensor(
        [float(sums[n]) if n in sums else 0.0 for n in names] + [float(count)], dtype=torch.float64
    )
    if context.distributed:
        values = values.to(context.device)
        torch.distributed.all_reduce(values)
    *totals, images = values.tolist()
    if images == 0:
        return {}
    means = {f"{PREFIX}{name}": total / images for name, total in zip(names, totals)}
    means[f"{PREFIX}loss"] = sum(means.values())
    return means


@contextlib.contextmanager
def _loss_mode(model: torch.nn.Module):
    """Training mode, BatchNorm in inference mode; the modes restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _fixed_draws(device: torch.device):
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(SAMPLING_SEED)
        yield
